"""The ``perceiver-suite`` command line. Thin: parses, calls the library, prints.

User mistakes (``SuiteError``) print one line and exit 2; heavy imports (JAX) happen
inside the commands so that ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

from suite.errors import SuiteError

EXIT_USER_ERROR = 2


def _add_config_args(p: argparse.ArgumentParser) -> None:
    from suite.config import DEFAULT_PRESET, PRESETS

    p.add_argument(
        "--preset", default=DEFAULT_PRESET, metavar="NAME",
        help=f"starting config (default: {DEFAULT_PRESET}); one of: {', '.join(PRESETS)}",
    )
    p.add_argument(
        "overrides", nargs="*", metavar="key=value",
        help="dotted config overrides, e.g. model.num_latents=64 train.steps=100",
    )


def _config_from(args: argparse.Namespace):
    from suite import config as cfg_lib

    return cfg_lib.build(args.preset, cfg_lib.parse_overrides(args.overrides))


def cmd_describe(args: argparse.Namespace) -> int:
    from suite.describe import describe, render

    config = _config_from(args)
    info = describe(config, xla=not args.no_xla)
    print(json.dumps(info, indent=2) if args.json else render(info))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from pathlib import Path

    from suite import config as cfg_lib
    from suite.data import load
    from suite.data.inspect import render, show, summary

    overrides = cfg_lib.parse_overrides(args.overrides)
    overrides["data.task"] = args.task
    if args.data_dir:
        overrides["data.data_dir"] = args.data_dir
    preset = args.task if args.task in cfg_lib.PRESETS else cfg_lib.DEFAULT_PRESET
    config = cfg_lib.build(preset, overrides)
    ds = load(config.data)
    info = summary(ds)
    print(json.dumps(info, indent=2) if args.json else render(info))
    if args.show:
        path = show(ds, args.show, Path(args.out or f"{args.task}_examples.png"))
        print(f"wrote {path}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from suite.train import Preempted, train_and_evaluate

    config = _config_from(args)
    try:
        summary = train_and_evaluate(config, args.workdir, retry_failed=args.retry_failed)
    except Preempted as e:
        print(f"perceiver-suite: {e}; rerun the same command to resume", file=sys.stderr)
        return 128 + e.signum
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in sorted(summary["metrics"].items()))
    print(f"{summary['status']}: {metrics}" + (f" ({summary['reason']})"
                                                if summary.get("reason") else ""))
    return 0 if summary["status"] == "completed" else 1


def cmd_presets(args: argparse.Namespace) -> int:
    from suite.config import PRESETS, preset

    for name in PRESETS:
        c = preset(name)
        m, d = c.model, c.data
        print(f"{name:<14} task={d.task:<13} latents={m.num_latents}x{m.latent_dim:<5} "
              f"blocks={m.num_blocks}x{m.self_attends_per_block} cross={m.num_cross_attends} "
              f"sharing={str(m.weight_sharing).lower()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perceiver-suite",
        description="Build, train, ablate and benchmark Perceivers (Jaegle et al., 2021).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "describe", help="print a config, its parameter count and FLOPs",
        description="Resolve a config and print it with its unique parameter count, the "
        "paper's analytic forward FLOPs per example and XLA's compiled FLOPs (abstract "
        "shapes: no weights are allocated).",
    )
    _add_config_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--no-xla", action="store_true", help="skip compiling for XLA's FLOPs")
    p.set_defaults(func=cmd_describe)

    from suite.tasks import TASKS

    p = sub.add_parser(
        "data", help="inspect a data task: sizes, shapes, classes, throughput",
        description="Load a task's files (or generate it) and print split sizes, shapes, "
        "classes and the grain pipeline's throughput. Tasks: "
        + "; ".join(f"{k}: {v.description}" for k, v in TASKS.items()),
    )
    p.add_argument("task", choices=list(TASKS), metavar="TASK", help="one of: " + ", ".join(TASKS))
    p.add_argument("--data-dir", help="folder with the task's files (else $PERCEIVER_SUITE_DATA)")
    p.add_argument("--show", type=int, default=0, metavar="N",
                   help="write a PNG grid of N examples")
    p.add_argument("--out", help="path of the --show PNG (default: TASK_examples.png)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="data.* overrides")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser(
        "train", help="train one run in a folder (resumes if it holds a checkpoint)",
        description="Train and evaluate one config. The run folder gets config.json, "
        "metrics.jsonl, summary.json and checkpoints/; rerunning the same command resumes "
        "from the newest good checkpoint, bit-identically. SIGTERM/SIGINT save a checkpoint "
        "and stop.",
    )
    _add_config_args(p)
    p.add_argument("--workdir", required=True, help="the run folder")
    p.add_argument("--retry-failed", action="store_true",
                   help="train again a run whose summary says failed")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("presets", help="list the named presets")
    p.set_defaults(func=cmd_presets)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


# Commands defined in other modules register here (keeps this file thin).
_EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SuiteError as e:
        print(f"perceiver-suite: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("perceiver-suite: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
