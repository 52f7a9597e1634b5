"""The ``perceiver-suite`` command line. Thin: parses, calls the library, prints.

User mistakes (``SuiteError``) print one line and exit 2; heavy imports (JAX) happen
inside the commands so that ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence

from suite.errors import SuiteError

EXIT_USER_ERROR = 2
EXIT_BUSY = 3  # another process trains the run folder


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
    from suite.train import train_and_evaluate

    config = _config_from(args)
    summary = train_and_evaluate(config, args.workdir, retry_failed=args.retry_failed)
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in sorted(summary["metrics"].items()))
    print(f"{summary['status']}: {metrics}" + (f" ({summary['reason']})"
                                                if summary.get("reason") else ""))
    return 0 if summary["status"] == "completed" else 1


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    from suite.errors import SpecError

    if not text:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise SpecError(f"--shard={text!r} must be I/N with integers, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise SpecError(f"--shard={text!r}: need 0 <= I < N (shards are numbered from 0)")
    return i, n


def cmd_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from suite import config as cfg_lib
    from suite import spec as spec_lib

    spec = spec_lib.load(args.spec, max_runs=None if args.force else spec_lib.MAX_RUNS)
    overrides = cfg_lib.parse_overrides(args.overrides)
    runs = spec_lib.expand(spec, overrides)
    shard = _parse_shard(args.shard)
    if shard:
        runs = spec_lib.shard(runs, *shard)
    out = Path(args.out or Path("results") / spec.name)
    if args.dry_run:
        print(dry_run_table(spec, runs, out))
        return 0
    if args.workers < 1:
        from suite.errors import SpecError

        raise SpecError(f"--workers={args.workers} must be >= 1")
    from suite.runner import run_grid

    outcome = run_grid(runs, out, spec_name=spec.name, workers=args.workers,
                       retry_failed=args.retry_failed, stop_timeout=args.stop_timeout)
    from suite.files import write_text_atomic

    write_text_atomic(out / "spec.toml", Path(args.spec).read_text())
    parts = [f"{len(outcome.completed)} completed", f"{len(outcome.failed)} failed"]
    if outcome.interrupted:
        parts.append(f"{len(outcome.interrupted)} interrupted (rerun to resume)")
    if outcome.elsewhere:
        parts.append(f"{len(outcome.elsewhere)} running in another runner")
    if outcome.errors:
        parts.append(f"{len(outcome.errors)} could not start")
    print(", ".join(parts) + f"; results in {out / 'results.csv'}")
    for run_id, reason in outcome.errors.items():
        print(f"perceiver-suite: error: {run_id}: {reason}", file=sys.stderr)
    return outcome.exit_code


def dry_run_table(spec, runs, out) -> str:
    from suite.describe import describe

    cache: dict[str, dict] = {}
    lines = [f"{spec.path}: {spec.description}".rstrip(": "),
             f"{'run id':<60} {'params':>10} {'MFLOPs/ex':>10}"]
    for run in runs:
        key = repr((run.config.model, run.config.data))
        if key not in cache:
            cache[key] = describe(run.config, xla=False)
        info = cache[key]
        lines.append(f"{run.id:<60} {info['params']:>10,} {info['flops_analytic'] / 1e6:>10.2f}")
    lines.append(f"{len(runs)} runs ({len(spec.seeds)} seeds) -> {out}/runs/<id>/; "
                 "nothing written (dry run)")
    return "\n".join(lines)


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from suite.report import write_report

    out = Path(args.out)
    if not out.is_dir():
        from suite.errors import SuiteError

        raise SuiteError(f"{out}: no such results folder")
    written = write_report(out, metric=args.metric, rows=args.rows, cols=args.cols)
    print(f"wrote {len(written)} files to {out / 'report'}: "
          + ", ".join(sorted(p.name for p in written.values())))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from suite.bench import dispatch_overhead, pipeline_vs_step, write

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    rows = pipeline_vs_step(tasks, steps=args.steps)
    overhead = dispatch_overhead()
    path = write(rows, Path(args.out), " ".join(["perceiver-suite bench", *sys.argv[2:]]),
                 overhead)
    print(path.read_text())
    return 0


def _int_list(flag: str, text: str | None) -> list[int] | None:
    from suite.errors import ConfigError

    if not text:
        return None
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"{flag}={text!r} must be comma-separated integers") from None
    if any(v <= 0 for v in values):
        raise ConfigError(f"{flag}={text!r} must be positive")
    return values


def cmd_scaling(args: argparse.Namespace) -> int:
    from pathlib import Path

    from suite import config as cfg_lib
    from suite.errors import ConfigError
    from suite.scaling import DEFAULT_SIDES, sweep
    from suite.scaling_report import write
    from suite.train import machine_description

    if args.replot:
        from suite.scaling_report import replot

        replot(Path(args.out))
        print((Path(args.out) / "scaling.md").read_text())
        return 0
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    try:
        sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    except ValueError:
        raise ConfigError(f"--sizes={args.sizes!r} must be comma-separated integers") from None
    if sizes:
        sides = [math.isqrt(s) for s in sizes] if args.grid == "2d" else [None] * len(sizes)
        if args.grid == "2d" and any(s * s != m for s, m in zip(sides, sizes, strict=True)):
            raise ConfigError(f"--sizes={args.sizes!r}: 2-D grids need square sizes "
                              "(e.g. 1024, 50176); use --grid 1d for others")
    else:
        sides = list(DEFAULT_SIDES)
    if args.grid == "1d" and sizes:
        sides = sizes  # 1-D: M items, passed as the 'side' of a 1-D grid below
    rows = sweep(models, sides, batch=args.batch, do_measure=args.measure,
                 budget_s=args.budget_s,
                 max_memory_bytes=int(args.max_memory_gb * 2**30) if args.max_memory_gb else None,
                 overrides=cfg_lib.parse_overrides(args.overrides), two_d=args.grid == "2d",
                 latents=_int_list("--latents", args.latents))
    result = write(rows, Path(args.out), "perceiver-suite scaling " + " ".join(sys.argv[2:]),
                   machine_description())
    print((Path(args.out) / "scaling.md").read_text())
    return 0 if result else 1


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
        "from the newest intact checkpoint, bit-identically. SIGTERM/SIGINT save a checkpoint "
        "and stop (exit 128+signal). The folder is locked while training: a second command "
        "on it exits with status 3. A checkpoint of another model structure stops with "
        "status 2 and is left where it is.",
    )
    _add_config_args(p)
    p.add_argument("--workdir", required=True, help="the run folder")
    p.add_argument("--retry-failed", action="store_true",
                   help="train again a run whose summary says failed: after a divergence from "
                   "step 0 (the failed attempt kept as checkpoints_failed_N/ and "
                   "metrics_failed_N.jsonl, since resuming would diverge again), after a crash "
                   "from its newest checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "run", help="run an ablation grid from a TOML spec (skips finished runs, resumes)",
        description="Expand a spec (grid x zip x seeds), validate every run, then train the "
        "runs not yet completed. Rerun the same command to continue an interrupted grid.",
    )
    p.add_argument("spec", help="a TOML spec, e.g. ablations/demo.toml")
    p.add_argument("--out", help="output folder (default: results/<spec name>)")
    p.add_argument("--dry-run", action="store_true",
                   help="list the runs with params and FLOPs; write nothing")
    p.add_argument("--workers", type=int, default=1,
                   help="runs trained at once, CPUs split between them (default 1)")
    p.add_argument("--shard", metavar="I/N", help="take shard I of N (0-based), for job arrays")
    p.add_argument("--retry-failed", action="store_true",
                   help="train failed runs again: one that diverged starts over from step 0 "
                   "(its attempt kept as checkpoints_failed_N/, metrics_failed_N.jsonl), since "
                   "resuming its checkpoint on the same data diverges again; one that crashed "
                   "resumes from its newest checkpoint")
    p.add_argument("--stop-timeout", type=float, default=120.0, metavar="S",
                   help="on Ctrl-C/SIGTERM, seconds to let runs checkpoint before killing them "
                   "(default: %(default)s; a second Ctrl-C kills at once)")
    p.add_argument("--force", action="store_true", help="allow grids over the size limit")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="overrides applied to every run, e.g. train.steps=50")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "report", help="tables (Markdown, LaTeX, CSV), plots and index.html from a results folder",
        description="Read every run folder under OUT/runs into one table, aggregate seeds as "
        "mean ± std, and write OUT/report/: table.md, table.tex, table.csv, seaborn plots "
        "(PNG and SVG) and a self-contained index.html.",
    )
    p.add_argument("out", help="a results folder, e.g. results/demo")
    p.add_argument("--metric", help="the metric to tabulate and plot (default: the spec's "
                   "[report] metric, else eval/accuracy)")
    p.add_argument("--rows", nargs="+", metavar="KEY", help="config keys for table rows")
    p.add_argument("--cols", nargs="+", metavar="KEY", help="config keys for table columns")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "bench", help="input pipeline vs train step throughput (CSV + Markdown)",
        description="For each task, time the grain pipeline and the compiled train step of "
        "the task's small preset, in examples/s, and write OUT/pipeline.csv and pipeline.md.",
    )
    p.add_argument("--tasks", default="digits,fashion_mnist,mnist1d,shapes3d",
                   help="comma-separated tasks (default: %(default)s)")
    p.add_argument("--steps", type=int, default=20, help="timed train steps per task")
    p.add_argument("--out", default="results/bench", help="output folder (default: %(default)s)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "scaling", help="FLOPs, step time and memory against input size M",
        description="For each model and input size, compile the train step on abstract "
        "shapes (XLA FLOPs, bytes, predicted memory), then run it where it fits the machine "
        "and the time budget (step time, peak RSS). Writes scaling.csv, scaling.md and "
        "log-log plots with fitted slopes and the crossover.",
    )
    p.add_argument("--models", default="perceiver,transformer", help="default: %(default)s")
    p.add_argument("--sizes", help="input sizes M, comma-separated (default: 16^2 .. 224^2)")
    p.add_argument("--latents", metavar="N,N,...",
                   help="vary the Perceiver's latent count: one line per value")
    p.add_argument("--grid", choices=["2d", "1d"], default="2d",
                   help="square 2-D grids (default) or 1-D sequences")
    p.add_argument("--batch", type=int, default=2, help="batch size (default: %(default)s)")
    p.add_argument("--measure", action=argparse.BooleanOptionalAction, default=True,
                   help="run the step where it fits (default: yes)")
    p.add_argument("--budget-s", type=float, default=120.0,
                   help="seconds allowed per measured point (default: %(default)s)")
    p.add_argument("--max-memory-gb", type=float,
                   help="memory a point may use (default: 70%% of available memory)")
    p.add_argument("--out", default="results/scaling", help="default: %(default)s")
    p.add_argument("--replot", action="store_true",
                   help="rebuild scaling.md and the plots from OUT/scaling.csv; measure nothing")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="overrides for every model, e.g. model.num_latents=256")
    p.set_defaults(func=cmd_scaling)

    p = sub.add_parser("presets", help="list the named presets")
    p.set_defaults(func=cmd_presets)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


# Commands defined in other modules register here (keeps this file thin).
_EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    from suite import stop
    from suite.lock import RunBusy

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with stop.guard():  # SIGTERM/SIGINT from process start: a clean exit, 128 + signal
            parser = build_parser()
            args = parser.parse_args(argv)
            return int(args.func(args) or 0)
    except RunBusy as e:
        print(f"perceiver-suite: {e}", file=sys.stderr)
        return EXIT_BUSY
    except SuiteError as e:
        print(f"perceiver-suite: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except stop.Stopped as e:
        print(f"perceiver-suite: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
