"""Commands that look before training: describe, data, devices, presets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from suite.cli.common import command, config_args, config_from, overrides_arg
from suite.errors import SuiteError

# --------------------------------------------------------------------------- describe


@command
def _describe(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "describe", help="print a config, its parameter count and FLOPs",
        description="Resolve a config and print it with its unique parameter count, the "
        "paper's analytic forward FLOPs per example and XLA's compiled FLOPs (abstract "
        "shapes: no weights are allocated).")
    config_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--no-xla", action="store_true", help="skip compiling for XLA's FLOPs")
    p.add_argument("--train", action="store_true",
                   help="also compile the train step at train.batch_size on abstract shapes: "
                   "compile seconds and XLA's memory (arguments, outputs, temporaries)")
    p.set_defaults(func=run_describe)


def run_describe(args: argparse.Namespace) -> int:
    from suite import api
    from suite.analysis.describe import render

    info = api.describe(config_from(args), xla=not args.no_xla, memory=args.train)
    print(json.dumps(info, indent=2) if args.json else render(info))
    return 0


# ------------------------------------------------------------------------------- data


@command
def _data(sub: argparse._SubParsersAction) -> None:
    from suite.tasks import TASKS

    p = sub.add_parser(
        "data", help="inspect a data task: sizes, shapes, classes, throughput",
        description="Load a task's files (or generate it) and print split sizes, shapes, "
        "classes and the grain pipeline's throughput. Tasks: "
        + "; ".join(f"{k}: {v.description}" for k, v in TASKS.items()))
    p.add_argument("task", choices=list(TASKS), metavar="TASK", help="one of: " + ", ".join(TASKS))
    p.add_argument("--data-dir", help="folder with the task's files (else $PERCEIVER_SUITE_DATA)")
    p.add_argument("--show", type=int, default=0, metavar="N",
                   help="write a PNG grid of N examples")
    p.add_argument("--out", help="path of the --show PNG (default: TASK_examples.png)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--verify", action="store_true",
                   help="decode every file of both splits with the loader's workers "
                   "(data.num_workers) and list the unreadable ones; exit 1 if there are any "
                   "(a run skips them, data.bad_examples=skip, and says so)")
    overrides_arg(p, "data.* overrides (and seed, which draws data.train_limit's subset), "
                  "e.g. data.index_dims=64,64")
    p.set_defaults(func=run_data)


def run_data(args: argparse.Namespace) -> int:
    from suite import config as cfg_lib
    from suite.data.inspect import load_task, render, show, summary

    overrides = cfg_lib.parse_overrides(args.overrides)
    for key, value in overrides.items():  # the model and the optimiser play no part here
        if not (key.startswith("data.") or key == "seed"):
            raise SuiteError(f"data {args.task}: {key}={value} is not a data.* key; `data` "
                             "loads the task only (model.* and train.* keys go to train, "
                             "run or describe)")
    if args.show < 0:
        raise SuiteError(f"--show {args.show}: must be 0 (no picture) or more")
    if args.show and args.out and Path(args.out).is_dir():
        raise SuiteError(f"--out {args.out}: a folder; --show writes one PNG file, e.g. "
                         f"--out {Path(args.out) / f'{args.task}_examples.png'}")
    ds = load_task(args.task, args.data_dir, overrides)
    if args.verify:
        from suite.data.inspect import render_verify, verify

        bad, checked = verify(ds)
        print(render_verify(bad, checked, ds.config.num_workers))
        return 1 if bad else 0
    info = summary(ds)
    print(json.dumps(info, indent=2) if args.json else render(info))
    if args.show:
        print(f"wrote {show(ds, args.show, Path(args.out or f'{args.task}_examples.png'))}")
    return 0


# ---------------------------------------------------------------------------- devices


@command
def _devices(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "devices", help="what JAX sees: backend, devices, memory, versions, one test step",
        description="Print the JAX backend, every local device and its memory, jax/jaxlib/"
        "plugin versions, the compilation cache, the peak FLOP/s MFU is measured against, "
        "and one train step of a tiny Perceiver on the default device. Exits 2 if "
        "JAX_PLATFORMS asks for an accelerator that is not there, 1 if the step fails.")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run_devices)


def run_devices(args: argparse.Namespace) -> int:
    from suite.platform.doctor import doctor, render
    from suite.training.steps import smoke_test

    info = doctor(smoke_test)
    print(json.dumps(info, indent=2) if args.json else render(info))
    return 0 if info["smoke_test"]["ok"] else 1


# ---------------------------------------------------------------------------- presets


@command
def _presets(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("presets", help="list the named presets").set_defaults(func=run_presets)


def run_presets(args: argparse.Namespace) -> int:
    from suite.config.presets import table

    print(table())
    return 0

