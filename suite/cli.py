"""The ``perceiver-suite`` command line. Thin: parses, calls the library, prints.

Each command is a pair: a function that adds its parser and one that runs it. User
mistakes (``SuiteError``) print one line and exit 2; heavy imports (JAX) happen inside
the commands so that ``--help`` is instant. Dotted ``key=value`` overrides may come
anywhere after the command, before or after its options.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from suite.errors import SuiteError

EXIT_USER_ERROR = 2
EXIT_BUSY = 3  # another process trains the run folder
OVERRIDE = re.compile(r"^(seed|[A-Za-z_]\w*\.[A-Za-z_]\w*)=")  # a dotted key=value
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []  # in --help order


def command(register: Callable[[argparse._SubParsersAction], None]):
    COMMANDS.append(register)
    return register


def _overrides_arg(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("overrides", nargs="*", metavar="key=value", help=help)


def _config_args(p: argparse.ArgumentParser) -> None:
    from suite.config import DEFAULT_PRESET, PRESETS

    p.add_argument("--preset", default=DEFAULT_PRESET, metavar="NAME",
                   help=f"starting config (default: {DEFAULT_PRESET}); one of: "
                   f"{', '.join(PRESETS)}")
    _overrides_arg(p, "dotted config overrides, e.g. model.num_latents=64 train.steps=100")


def _config_from(args: argparse.Namespace):
    from suite import config as cfg_lib

    return cfg_lib.build(args.preset, cfg_lib.parse_overrides(args.overrides))


# --------------------------------------------------------------------------- describe


@command
def _describe(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "describe", help="print a config, its parameter count and FLOPs",
        description="Resolve a config and print it with its unique parameter count, the "
        "paper's analytic forward FLOPs per example and XLA's compiled FLOPs (abstract "
        "shapes: no weights are allocated).")
    _config_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--no-xla", action="store_true", help="skip compiling for XLA's FLOPs")
    p.set_defaults(func=run_describe)


def run_describe(args: argparse.Namespace) -> int:
    from suite.analysis.describe import describe, render

    info = describe(_config_from(args), xla=not args.no_xla)
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
    _overrides_arg(p, "data.* overrides, e.g. data.index_dims=64,64")
    p.set_defaults(func=run_data)


def run_data(args: argparse.Namespace) -> int:
    from suite import config as cfg_lib
    from suite.data import load
    from suite.data.inspect import render, show, summary

    overrides = {**cfg_lib.parse_overrides(args.overrides), "data.task": args.task}
    if args.data_dir:
        overrides["data.data_dir"] = args.data_dir
    preset = args.task if args.task in cfg_lib.PRESETS else cfg_lib.DEFAULT_PRESET
    ds = load(cfg_lib.build(preset, overrides).data)
    info = summary(ds)
    print(json.dumps(info, indent=2) if args.json else render(info))
    if args.show:
        print(f"wrote {show(ds, args.show, Path(args.out or f'{args.task}_examples.png'))}")
    return 0


# ------------------------------------------------------------------------------ train


@command
def _train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train one run in a folder (resumes if it holds a checkpoint)",
        description="Train and evaluate one config. The run folder gets config.json, "
        "metrics.jsonl, TensorBoard event files, summary.json and checkpoints/; rerunning "
        "the same command resumes from the newest intact checkpoint, bit-identically. "
        "SIGTERM/SIGINT save a checkpoint and stop (exit 128+signal). The folder is locked "
        "while training: a second command on it exits with status 3. A checkpoint of "
        "another model structure stops with status 2 and is left where it is.")
    _config_args(p)
    p.add_argument("--workdir", required=True, help="the run folder")
    p.add_argument("--retry-failed", action="store_true",
                   help="train again a run whose summary says failed: after a divergence from "
                   "step 0 (the failed attempt kept as checkpoints_failed_N/ and "
                   "metrics_failed_N.jsonl, since resuming would diverge again), after a crash "
                   "from its newest checkpoint")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from suite.training.trainer import train_and_evaluate

    summary = train_and_evaluate(_config_from(args), args.workdir,
                                 retry_failed=args.retry_failed)
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in sorted(summary["metrics"].items()))
    print(f"{summary['status']}: {metrics}" + (f" ({summary['reason']})"
                                                if summary.get("reason") else ""))
    return 0 if summary["status"] == "completed" else 1


# -------------------------------------------------------------------------------- run


@command
def _run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="run an ablation grid from a TOML spec (skips finished runs, resumes)",
        description="Expand a spec (grid x zip x seeds), validate every run, then train the "
        "runs not yet completed. Rerun the same command to continue an interrupted grid. "
        "Exit status: 0 all completed, 1 some failed or interrupted, 2 some could not start, "
        "128+signal when stopped.")
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
    _overrides_arg(p, "overrides applied to every run, e.g. train.steps=50")
    p.set_defaults(func=run_run)


def run_run(args: argparse.Namespace) -> int:
    from suite import config as cfg_lib
    from suite.errors import SpecError
    from suite.files import write_json_atomic, write_text_atomic
    from suite.sweeps import spec as spec_lib

    spec = spec_lib.load(args.spec, max_runs=None if args.force else spec_lib.MAX_RUNS)
    runs = spec_lib.expand(spec, cfg_lib.parse_overrides(args.overrides))
    shard = spec_lib.parse_shard(args.shard)
    if shard:
        runs = spec_lib.shard(runs, *shard)
    out = Path(args.out or Path("results") / spec.name)
    if args.dry_run:
        from suite.sweeps.dry_run import dry_run_table

        print(dry_run_table(spec, runs, out))
        return 0
    if args.workers < 1:
        raise SpecError(f"--workers={args.workers} must be >= 1")
    from suite.sweeps.runner import run_grid

    outcome = run_grid(runs, out, spec_name=spec.name, workers=args.workers,
                       retry_failed=args.retry_failed, stop_timeout=args.stop_timeout)
    write_text_atomic(out / "spec.toml", Path(args.spec).read_text())
    write_json_atomic(out / "grid.json", {"spec": str(args.spec), "command": " ".join(
        ["perceiver-suite", *(sys.argv[1:] if argv_is_ours() else ["run", str(args.spec)])])})
    print(f"{outcome.summary()}; results in {out / 'results.csv'}")
    for run_id, reason in outcome.errors.items():
        print(f"perceiver-suite: error: {run_id}: {reason}", file=sys.stderr)
    return outcome.exit_code


def argv_is_ours() -> bool:
    """Is ``sys.argv`` this command line (not, say, pytest's)?"""
    return len(sys.argv) > 1 and sys.argv[1] in {"run", "report", "scaling", "bench"}


# ----------------------------------------------------------------------------- report


@command
def _report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="tables (Markdown, LaTeX, CSV), plots and index.html from a results folder",
        description="Read every run folder under OUT/runs into one table, aggregate seeds as "
        "mean ± std, and write OUT/report/: table.md, table.tex, table.csv, seaborn plots "
        "(PNG and SVG) and a self-contained index.html, with the TensorBoard command for "
        "the runs' curves.")
    p.add_argument("out", help="a results folder, e.g. results/demo")
    p.add_argument("--metric", help="the metric to tabulate and plot (default: the spec's "
                   "[report] metric, else eval/accuracy)")
    p.add_argument("--rows", nargs="+", metavar="KEY", help="config keys for table rows")
    p.add_argument("--cols", nargs="+", metavar="KEY", help="config keys for table columns")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from suite.analysis.report import write_report

    out = Path(args.out)
    if not out.is_dir():
        raise SuiteError(f"{out}: no such results folder")
    written = write_report(out, metric=args.metric, rows=args.rows, cols=args.cols)
    print(f"wrote {len(written)} files to {out / 'report'}: "
          + ", ".join(sorted(p.name for p in written.values())))
    if any((out / "runs").glob("*/events.out.tfevents.*")):
        print(f"training curves: tensorboard --logdir {out / 'runs'}")
    return 0


# ------------------------------------------------------------------------------ bench


@command
def _bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="input pipeline vs train step throughput (CSV + Markdown)",
        description="For each task, time the grain pipeline and the compiled train step of "
        "the task's small preset, in examples/s, and write OUT/pipeline.csv and pipeline.md.")
    p.add_argument("--tasks", default="digits,fashion_mnist,mnist1d,shapes3d",
                   help="comma-separated tasks (default: %(default)s)")
    p.add_argument("--steps", type=int, default=20, help="timed train steps per task")
    p.add_argument("--out", default="results/bench", help="output folder (default: %(default)s)")
    p.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    from suite.analysis.bench import dispatch_overhead, pipeline_vs_step, write

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    rows = pipeline_vs_step(tasks, steps=args.steps)
    path = write(rows, Path(args.out), " ".join(["perceiver-suite bench", *sys.argv[2:]]),
                 dispatch_overhead())
    print(path.read_text())
    return 0


# ---------------------------------------------------------------------------- scaling


@command
def _scaling(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "scaling", help="FLOPs, step time and memory against input size M",
        description="For each model and input size, compile the train step on abstract "
        "shapes (XLA FLOPs, bytes, predicted memory), then run it where it fits the machine "
        "and the time budget (step time, peak RSS). Writes scaling.csv, scaling.md and "
        "log-log plots with fitted slopes and the crossover.")
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
    _overrides_arg(p, "overrides for every model, e.g. model.num_latents=256")
    p.set_defaults(func=run_scaling)


def run_scaling(args: argparse.Namespace) -> int:
    from suite import config as cfg_lib
    from suite.analysis.scaling import int_list, sides_for, sweep
    from suite.analysis.scaling_report import replot, write
    from suite.training.devices import machine_description

    out = Path(args.out)
    if args.replot:
        replot(out)
        print((out / "scaling.md").read_text())
        return 0
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    sides = sides_for(int_list("--sizes", args.sizes), two_d=args.grid == "2d")
    rows = sweep(models, sides, batch=args.batch, do_measure=args.measure,
                 budget_s=args.budget_s,
                 max_memory_bytes=int(args.max_memory_gb * 2**30) if args.max_memory_gb else None,
                 overrides=cfg_lib.parse_overrides(args.overrides), two_d=args.grid == "2d",
                 latents=int_list("--latents", args.latents))
    result = write(rows, out, "perceiver-suite scaling " + " ".join(sys.argv[2:]),
                   machine_description())
    print((out / "scaling.md").read_text())
    return 0 if result else 1


# ---------------------------------------------------------------------------- presets


@command
def _presets(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("presets", help="list the named presets").set_defaults(func=run_presets)


def run_presets(args: argparse.Namespace) -> int:
    from suite.config import PRESETS, preset

    for name in PRESETS:
        c = preset(name)
        m, d = c.model, c.data
        print(f"{name:<14} task={d.task:<13} latents={m.num_latents}x{m.latent_dim:<5} "
              f"blocks={m.num_blocks}x{m.self_attends_per_block} cross={m.num_cross_attends} "
              f"sharing={str(m.weight_sharing).lower()}")
    return 0


# ------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perceiver-suite",
        description="Build, train, ablate and benchmark Perceivers (Jaegle et al., 2021).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for register in COMMANDS:
        register(sub)
    return parser


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse, collecting ``key=value`` overrides from anywhere after the command."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if not OVERRIDE.match(a)]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        if not hasattr(args, "overrides"):
            parser.error(f"{args.command} takes no key=value overrides: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from suite.training import stop
    from suite.training.lock import RunBusy

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with stop.guard():  # SIGTERM/SIGINT from process start: a clean exit, 128 + signal
            args = parse(argv)
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
