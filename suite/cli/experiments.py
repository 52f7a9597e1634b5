"""Commands that train: train, run, sweep."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from suite.cli.common import (
    EXIT_BUSY,
    EXIT_USER_ERROR,
    command,
    config_args,
    config_from,
    overrides_arg,
)
from suite.errors import SuiteError

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
        "another model structure stops with status 2 and is left where it is. In a folder "
        "from import-official, `train --workdir DIR` fine-tunes the imported weights. A "
        "completed run with train.schedule=constant goes on for more steps with `train "
        "--workdir DIR train.steps=N` (recorded as `extended` in its summary.json); any other "
        "change of a run folder's config is refused.")
    config_args(p, folder=True)
    p.add_argument("--workdir", required=True, help="the run folder")
    p.add_argument("--coordinator", metavar="HOST:PORT",
                   help="multi-host training: the address of process 0 (with --num-processes "
                   "and --process-id; on SLURM and Cloud TPU JAX finds them itself)")
    p.add_argument("--num-processes", type=int, help="multi-host: how many processes")
    p.add_argument("--process-id", type=int, help="multi-host: this process's index")
    p.add_argument("--retry-failed", action="store_true",
                   help="train again a run whose summary says failed: after a divergence from "
                   "step 0 (the failed attempt kept as checkpoints_failed_N/ and "
                   "metrics_failed_N.jsonl, since resuming would diverge again), after a crash "
                   "from its newest checkpoint")
    p.add_argument("--init-from", metavar="RUN_DIR",
                   help="warm start: begin from the model weights of RUN_DIR's newest checkpoint "
                   "(the same model shapes), with this run's own seed, data stream and "
                   "schedule; recorded as train.init_from, so part of the run's config and id. "
                   "Rerunning resumes from this run's own checkpoints")
    p.add_argument("--init-optimizer", choices=["fresh", "carry"],
                   help="with --init-from: a new optimizer (fresh, the default), or carry "
                   "RUN_DIR's optimizer state (moments and step count; the same optimizer "
                   "config only); recorded as train.init_optimizer")
    p.set_defaults(func=run_train)


def train_config(args: argparse.Namespace):
    """The config to train: the command line's, with the warm-start flags as its keys
    (the source folder made absolute, so the record names it wherever the run goes)."""
    from suite import config as cfg_lib

    config = config_from(args, args.workdir)
    warm = {}
    if args.init_from is not None:
        warm["train.init_from"] = str(Path(args.init_from).expanduser().absolute())
    if args.init_optimizer is not None:
        warm["train.init_optimizer"] = args.init_optimizer
    return cfg_lib.apply_overrides(config, warm) if warm else config


def run_train(args: argparse.Namespace) -> int:
    from suite import api
    from suite.platform import hosts

    several = hosts.initialize(args.coordinator, args.num_processes, args.process_id)
    try:
        summary = api.train(train_config(args), workdir=args.workdir,
                            retry_failed=args.retry_failed).summary
    except BaseException as e:  # one host's failure ends every host, with its reason
        if not several:
            raise
        hosts.fail(*_reason(e))
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
        "runs not yet completed, write the report (OUT/report/) and print its table. Rerun "
        "the same command to continue an interrupted grid. Exit status: 0 all completed, 1 "
        "some failed or interrupted, 2 some could not start, 128+signal when stopped.")
    p.add_argument("spec", help="a TOML spec, e.g. ablations/demo.toml")
    p.add_argument("--out", help="output folder (default: results/<spec name>)")
    grid_options(p)
    p.add_argument("--force", action="store_true", help="allow grids over the size limit")
    overrides_arg(p, "overrides applied to every run, e.g. train.steps=50 (they make another "
                  "experiment, in results/<name>+<key>=<value> unless --out; seeds come from "
                  "the spec's seeds list, so seed=N is refused)")
    p.set_defaults(func=run_run)


def grid_options(p: argparse.ArgumentParser) -> None:
    """The options of training a grid, shared by ``run`` and ``sweep``."""
    p.add_argument("--dry-run", action="store_true",
                   help="list the runs with params, train FLOPs, predicted memory (compiled "
                   "on abstract shapes) and whether they fit here, and the grid's totals; "
                   "write nothing")
    p.add_argument("--measure", action="store_true",
                   help="with --dry-run: time a few real steps of each config to estimate "
                   "the grid's wall time")
    p.add_argument("--workers", type=int,
                   help="runs trained at once (default: one per GPU/TPU, each seeing its own "
                   "device; one on a CPU host). On CPUs the cores are split between workers; "
                   "more workers than GPUs share them, each with an equal memory fraction")
    p.add_argument("--shard", metavar="I/N",
                   help="take shard I of N (0-based), for job arrays; 'auto' reads it from "
                   "SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT")
    p.add_argument("--launcher", choices=["local", "slurm", "submitit-local"], default="local",
                   help="local: train here (default); slurm: submit the runs as a SLURM job "
                   "array through submitit; submitit-local: the same jobs on this machine")
    p.add_argument("--partition", help="slurm: the partition")
    p.add_argument("--time-min", type=int, default=24 * 60, help="slurm: minutes per run")
    p.add_argument("--gpus-per-run", type=int, default=0, help="slurm: GPUs per run")
    p.add_argument("--array-parallelism", type=int, default=64,
                   help="slurm: runs at once (default: %(default)s)")
    p.add_argument("--no-wait", action="store_true",
                   help="slurm: submit and return (rerun the command later to collect results)")
    p.add_argument("--retry-failed", action="store_true",
                   help="train failed runs again: one that diverged starts over from step 0 "
                   "(its attempt kept as checkpoints_failed_N/, metrics_failed_N.jsonl), since "
                   "resuming its checkpoint on the same data diverges again; one that crashed "
                   "resumes from its newest checkpoint")
    p.add_argument("--stop-timeout", type=float, default=120.0, metavar="S",
                   help="on Ctrl-C/SIGTERM, seconds to let runs checkpoint before killing them "
                   "(default: %(default)s; a second Ctrl-C kills at once)")
    p.add_argument("--no-report", action="store_true",
                   help="skip writing the report (OUT/report/) and printing its table at the "
                   "end; `perceiver-suite report OUT` writes it later")


def check_grid_options(args: argparse.Namespace) -> None:
    """The numbers of :func:`grid_options`, checked before anything is written."""
    from suite.errors import SpecError

    for flag, value, least in (("--workers", args.workers, 1), ("--time-min", args.time_min, 1),
                               ("--gpus-per-run", args.gpus_per_run, 0),
                               ("--array-parallelism", args.array_parallelism, 1)):
        if value is not None and value < least:
            raise SpecError(f"{flag}={value} must be >= {least}")
    if not args.stop_timeout >= 0:  # NaN too
        raise SpecError(f"--stop-timeout={args.stop_timeout} must be >= 0 (seconds)")


def _reason(e: BaseException) -> tuple[str, int]:
    """What a failed process of a multi-process run says, and its exit status."""
    from suite.training import stop
    from suite.training.lock import RunBusy

    if isinstance(e, RunBusy):
        return str(e), EXIT_BUSY
    if isinstance(e, SuiteError):
        return f"error: {e}", EXIT_USER_ERROR
    if isinstance(e, stop.Stopped):
        return str(e), e.exit_code
    first = (str(e).strip().splitlines() or [""])[0]
    first = first if len(first) <= 200 else first[:200] + "..."
    if type(e).__name__ == "JaxRuntimeError":  # a collective failed: a peer has gone
        return f"lost another process (its own log says why): {first}", 1
    return f"{type(e).__name__}: {first}", 1


def run_run(args: argparse.Namespace) -> int:
    from suite.sweeps import plan
    from suite.sweeps import spec as spec_lib

    grid = plan.plan(args.spec, out=args.out or None, overrides=args.overrides,
                     force=args.force)  # the spec's runs, as suite.api.run plans them
    for note in grid.notes:
        print(f"note: {note}", file=sys.stderr)
    shard = parse_shard(args.shard)
    runs, out = grid.runs, grid.out
    if args.dry_run:
        return dry_run(args, grid.spec, spec_lib.shard(runs, *shard) if shard else runs, out)
    check_grid_options(args)
    claim(args, grid)
    if shard:
        runs = spec_lib.shard(runs, *shard)
    outcome = train_grid(args, runs, out, grid.spec.name)
    print(f"{outcome.summary()}; results in {out / 'results.csv'}")
    for run_id, reason in outcome.errors.items():
        print(f"perceiver-suite: error: {run_id}: {reason}", file=sys.stderr)
    if args.no_report or shard or args.no_wait or outcome.stopped_by:
        if shard:
            print(f"report once every shard has finished: perceiver-suite report {out}")
        return outcome.exit_code
    from suite.cli.reports import report_after

    report_after(out)
    return outcome.exit_code


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``--shard``: I/N, or 'auto' from the SLURM array's environment."""
    from suite.sweeps import spec as spec_lib

    if text == "auto":
        from suite.sweeps.launchers import shard_from_environment

        return shard_from_environment()
    return spec_lib.parse_shard(text)


def dry_run(args: argparse.Namespace, spec, runs, out: Path) -> int:
    from suite.sweeps.dry_run import dry_run_table

    print(dry_run_table(spec, runs, out, measure=args.measure,
                        log=lambda msg: print(msg, file=sys.stderr, flush=True)))
    return 0


def claim(args: argparse.Namespace, grid) -> None:
    """Record the experiment in its folder before anything trains (every shard's runs);
    say where it is apart."""
    from suite.sweeps import plan

    command = " ".join(["perceiver-suite", *(sys.argv[1:] if argv_is_ours() else
                                             ["run", str(args.spec), *args.overrides])])
    note = plan.claim(grid, command)
    if note:
        print(note, file=sys.stderr)


def train_grid(args: argparse.Namespace, runs, out: Path, name: str):
    """Train the runs here or through a launcher; the grid's outcome."""
    if args.launcher == "local":
        from suite.sweeps.runner import run_grid

        return run_grid(runs, out, spec_name=name, workers=args.workers,
                        retry_failed=args.retry_failed, stop_timeout=args.stop_timeout)
    from suite.sweeps.launchers import submit

    return submit(runs, out, spec_name=name, kind=args.launcher,
                  retry_failed=args.retry_failed, wait=not args.no_wait,
                  options={"partition": args.partition, "time_min": args.time_min,
                           "gpus": args.gpus_per_run, "parallelism": args.array_parallelism},
                  log=lambda msg: print(msg, file=sys.stderr, flush=True))


# ------------------------------------------------------------------------------ sweep


@command
def _sweep(sub: argparse._SubParsersAction) -> None:
    from suite.config import DEFAULT_PRESET, PRESETS

    p = sub.add_parser(
        "sweep", help="a grid typed on the command line: writes OUT/spec.toml, then runs it",
        description="Write the spec a quick sweep stands for into OUT/spec.toml (KEY=VALUE to "
        "[fixed], KEY=V1,V2,... to [grid], --zip lists to [zip], values typed as train's "
        "overrides type them), then run it exactly as `run OUT/spec.toml --out OUT` does: "
        "finished runs skipped, partial ones resumed, the report written and its table "
        "printed. A value that holds commas itself (data.index_dims=8,8) takes ';' between "
        "values: 'data.index_dims=8,8;16,16'. An OUT/spec.toml of another sweep is refused "
        "(naming the first key that differs) unless --force. Exit status as for run.")
    p.add_argument("--preset", default=DEFAULT_PRESET, metavar="NAME",
                   help=f"the spec's preset (default: %(default)s); one of: {', '.join(PRESETS)}")
    p.add_argument("--seeds", metavar="S,S,...", help="the seeds axis (default: 0)")
    p.add_argument("--zip", nargs="+", action="extend", default=[], metavar="KEY=A,B",
                   help="keys varied together, equal-length lists (give it after the other "
                   "KEY=VALUE arguments, or once per key)")
    p.add_argument("--name", help="the spec's name (default: OUT's folder name)")
    p.add_argument("--out", required=True, help="the results folder; OUT/spec.toml is the spec")
    grid_options(p)
    p.add_argument("--force", action="store_true",
                   help="replace an OUT/spec.toml of another sweep; allow grids over the size "
                   "limit")
    overrides_arg(p, "KEY=VALUE for every run, KEY=V1,V2,... for a grid axis, e.g. "
                  "model.num_latents=8,16 train.steps=30")
    p.set_defaults(func=run_sweep)


def run_sweep(args: argparse.Namespace) -> int:
    from suite.sweeps import spec as spec_lib
    from suite.sweeps import sweep as sweep_lib

    out = Path(args.out)
    table = sweep_lib.table(args.preset, args.overrides, args.zip,
                            sweep_lib.parse_seeds(args.seeds),
                            args.name or sweep_lib.default_name(out),
                            plugins=getattr(args, "plugin", None) or ())
    said = shlex.join(["perceiver-suite", *(sys.argv[1:] if argv_is_ours() else ["sweep"])])
    text = sweep_lib.to_toml(table, command=said)
    spec, runs = sweep_lib.check(text, max_runs=None if args.force else spec_lib.MAX_RUNS,
                                 at=out / sweep_lib.SPEC_FILE)  # a mistake writes nothing
    if args.dry_run:  # writes nothing, the spec included
        print(f"{spec.path} (not written):\n{text}")
        shard = parse_shard(args.shard)
        return dry_run(args, spec, spec_lib.shard(runs, *shard) if shard else runs, out)
    check_grid_options(args)
    parse_shard(args.shard)
    path = sweep_lib.write(out, text, force=args.force)
    print(f"spec: {path} (the same grid: perceiver-suite run {path} --out {out})",
          file=sys.stderr)
    return run_run(argparse.Namespace(**{**vars(args), "spec": str(path), "overrides": []}))


def argv_is_ours() -> bool:
    """Is ``sys.argv`` this command line (not, say, pytest's)?"""
    return len(sys.argv) > 1 and sys.argv[1] in {"run", "sweep", "report", "compare", "scaling",
                                                "bench"}
