"""Commands that measure: bench, scaling."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from suite.cli.common import command, folder_out, overrides_arg
from suite.errors import SuiteError

# ------------------------------------------------------------------------------ bench


@command
def _bench(sub: argparse._SubParsersAction) -> None:
    from suite.benchmarks.accelerator_parts import PARTS  # no JAX: --help stays instant

    p = sub.add_parser(
        "bench", help="throughput benchmarks: pipeline vs step, fast-step targets, the peer",
        description="By default, for each task, time the grain pipeline and the compiled "
        "train step of the task's small preset, in examples/s, and write OUT/pipeline.csv "
        "and pipeline.md. --targets measures the fast-step targets (memory, compile time, "
        "the compilation cache, bfloat16) into OUT/targets.{csv,md}; --peer times our train "
        "step against perceiver-pytorch (installed by `nox -s bench-peer`), and one latent "
        "block's attention and MLP on each side, into OUT/peer.{csv,md}.")
    p.add_argument("--tasks", default="digits,fashion_mnist,mnist1d,shapes3d",
                   help="comma-separated tasks (default: %(default)s)")
    p.add_argument("--steps", type=int, default=20, help="timed train steps per task")
    p.add_argument("--targets", nargs="?", const="memory,compile,cache,bfloat16",
                   metavar="NAMES", help="measure the fast-step targets (default: all of "
                   "memory,compile,cache,bfloat16)")
    p.add_argument("--peer", action="store_true", help="time our step against perceiver-pytorch")
    p.add_argument("--image-folder", nargs="?", const="", metavar="DIR",
                   help="time the streamed image loader (224x224 crops, RandAugment 4 x 5) per "
                   "worker count, on a class-folder tree DIR or on 2,000 generated 256x256 "
                   "JPEGs; OUT/images.*")
    p.add_argument("--video", nargs="?", const="", metavar="DIR",
                   help="time the video_folder preset's loader (clips/s per loader worker) "
                   "against its train step, on DIR or on 64 generated MP4s; OUT/video.*")
    p.add_argument("--report", type=int, nargs="?", const=1000, metavar="N",
                   help="time `report` on N generated run folders (default: 1000) into "
                   "OUT/report.{csv,md}")
    p.add_argument("--rounds", type=int, default=3, help="--peer: alternating rounds")
    p.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                   help="--peer: float32 on both sides (default), or bfloat16 (ours: "
                        "model.precision=bfloat16; theirs: torch.autocast); writes "
                        "OUT/peer.* or OUT/peer_bfloat16.*")
    p.add_argument("--accelerator", nargs="?", const=",".join(PARTS),
                   metavar="PARTS", help="the check to run on a GPU (at most 8 minutes): "
                   "devices, the digits preset end to end, the demo grid on 2 workers, the "
                   "ImageNet step in float32 and bfloat16 at batch 16 and the largest batch, "
                   "Fashion-MNIST; each part in its own process with a time limit; "
                   "OUT/accelerator.{md,csv}. On a CPU: tiny sizes (default: all of "
                   f"{','.join(PARTS)})")
    p.add_argument("--tiny", action="store_true",
                   help="--accelerator: tiny sizes on an accelerator too (the code path only)")
    p.add_argument("--part-timeout", action="append", metavar="PART=S",
                   help="--accelerator: another time limit for a part, in seconds")
    p.add_argument("--out", default="results/bench", help="output folder (default: %(default)s)")
    p.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    from suite.benchmarks.bench import dispatch_overhead, pipeline_vs_step, write
    from suite.platform.devices import machine_description

    check_bench(args)
    command = " ".join(["perceiver-suite bench", *sys.argv[2:]])
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if args.accelerator is not None:  # before anything starts JAX in this process
        from suite.benchmarks import accelerator

        text, ok = accelerator.check(
            accelerator.parse_parts(args.accelerator), Path(args.out), tiny=args.tiny,
            limits=accelerator.parse_limits(args.part_timeout), command=command, log=log)
        print(text)
        return 0 if ok else 1
    if args.image_folder is not None:
        from suite.benchmarks.bench import image_loader

        print(loader_table(image_loader(args.image_folder or None), Path(args.out), "images",
                           "Streamed image folder: training images/s by loader workers",
                           command, machine_description()))
        return 0
    if args.report:
        return bench_report(args.report, Path(args.out), command, machine_description())
    if args.video is not None:
        from suite.benchmarks.bench import video_loader

        print(loader_table(video_loader(args.video or None), Path(args.out), "video",
                           "video_folder preset: training clips/s by loader workers, against "
                           "its train step", command, machine_description()))
        return 0
    if args.peer or args.targets:
        from suite.benchmarks import peer, targets

        if args.targets:
            rows = targets.measure([t.strip() for t in args.targets.split(",")], log)
            print(targets_write(rows, Path(args.out), command, machine_description()))
        if args.peer:
            rows = peer.compare(rounds=args.rounds, steps=args.steps if args.steps != 20 else 5,
                                precision=args.precision)
            print(peer.write(rows, Path(args.out), command, machine_description(),
                             args.precision).read_text())
        return 0
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    rows = pipeline_vs_step(tasks, steps=args.steps)
    path = write(rows, Path(args.out), " ".join(["perceiver-suite bench", *sys.argv[2:]]),
                 dispatch_overhead())
    print(path.read_text())
    return 0


def check_bench(args: argparse.Namespace) -> None:
    """Counts, names and the output folder, before anything is measured or written."""
    from suite.benchmarks.targets import TARGETS
    from suite.inference.user_inputs import check_positive
    from suite.tasks import TASKS

    for flag, value in (("--steps", args.steps), ("--rounds", args.rounds),
                        ("--report", args.report)):
        if value is not None:
            check_positive(value, flag)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks or any(t not in TASKS for t in tasks):
        raise SuiteError(f"--tasks {args.tasks!r}: name tasks from {', '.join(TASKS)}")
    wanted = [t.strip() for t in (args.targets or "").split(",") if t.strip()]
    if args.targets is not None and (not wanted or any(t not in TARGETS for t in wanted)):
        raise SuiteError(f"--targets {args.targets!r}: name targets from {', '.join(TARGETS)}")
    folder_out(args.out, "--out")


def loader_table(rows: list[dict], out: Path, name: str, title: str, command: str,
                 machine: str) -> str:
    """``OUT/<name>.csv`` and ``OUT/<name>.md`` (the table, the command, the machine)."""
    import pandas as pd

    from suite.files import write_text_atomic

    frame = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / f"{name}.csv", frame.to_csv(index=False))
    text = "\n".join([f"# {title}", "", frame.to_markdown(index=False), "",
                      f"- command: `{command}`", f"- machine: {machine}", ""])
    write_text_atomic(out / f"{name}.md", text)
    return text


def bench_report(runs: int, out: Path, command: str, machine: str) -> int:
    import tempfile

    import pandas as pd

    from suite.benchmarks.report_bench import measure
    from suite.files import write_text_atomic

    with tempfile.TemporaryDirectory() as tmp:
        row = measure(Path(tmp) / "report_bench", runs)
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame([{**row, "command": command, "machine": machine}])
    write_text_atomic(out / "report.csv", frame.to_csv(index=False))
    text = "\n".join(["# report on a large results folder", "", pd.DataFrame([row]).to_markdown(
        index=False), "", f"- command: `{command}`", f"- machine: {machine}", ""])
    write_text_atomic(out / "report.md", text)
    print(text)
    return 0


def targets_write(rows, out: Path, command: str, machine: str) -> str:
    import pandas as pd

    from suite.files import write_text_atomic

    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame([{**r, "command": command, "machine": machine} for r in rows])
    if (out / "targets.csv").exists():  # re-measuring some targets keeps the others
        old = pd.read_csv(out / "targets.csv")
        frame = pd.concat([old[~old["name"].isin(frame["name"])], frame])
        frame = frame.set_index("name").reindex(
            [n for n in ("memory", "compile", "cache", "bfloat16") if n in set(frame["name"])]
        ).reset_index()
    write_text_atomic(out / "targets.csv", frame.to_csv(index=False))
    table = pd.DataFrame({
        "target": frame["target"],
        "plain": [_target_value(n, v) for n, v in zip(frame["name"], frame["plain"], strict=True)],
        "fast": [_target_value(n, v) for n, v in zip(frame["name"], frame["fast"], strict=True)],
        "ratio": [f"{r:.1%}" for r in frame["ratio"]],
        "goal": [f"{'>=' if n == 'bfloat16' else '<='} {g:.0%}"
                 for n, g in zip(frame["name"], frame["goal"], strict=True)],
        "met": ["yes" if bool(m) else "no" for m in frame["met"]]})
    text = "\n".join(["# Fast-step targets", "", table.to_markdown(index=False), ""]
                     + [f"- command: `{c}`" for c in frame["command"].unique()]
                     + [f"- machine: {m}" for m in frame["machine"].unique()] + [""])
    write_text_atomic(out / "targets.md", text)
    return text


def _target_value(name: str, value: float) -> str:
    """A target's measured value in its unit: bytes as GiB, compiles in seconds, accuracy in %."""
    if name == "memory":
        return f"{value / 2**30:.1f} GiB"
    if name == "bfloat16":
        return f"{value:.1%}"
    return f"{value:.2f} s"


# ---------------------------------------------------------------------------- scaling


@command
def _scaling(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "scaling", help="FLOPs, step time and memory against input size M",
        description="For each model and input size, compile the train step on abstract "
        "shapes (XLA FLOPs, bytes, predicted memory), then run it where it fits the machine "
        "and the time budget (step time, peak RSS). Writes scaling.csv, scaling.md and "
        "log-log plots with fitted slopes and the crossover.")
    p.add_argument("--models", default="perceiver,transformer",
                   help="comma-separated, from perceiver, perceiver_io (one cross-attend, the "
                   "query decoder) and transformer (default: %(default)s)")
    p.add_argument("--sizes", help="input sizes M, comma-separated (default: 16^2 .. 224^2)")
    p.add_argument("--latents", metavar="N,N,...",
                   help="vary the Perceiver's latent count: one line per value")
    p.add_argument("--grid", choices=["2d", "1d"], default="2d",
                   help="square 2-D grids (default) or 1-D sequences")
    p.add_argument("--batch", type=int, default=2, help="batch size (default: %(default)s)")
    p.add_argument("--measure", action=argparse.BooleanOptionalAction, default=True,
                   help="run the step where it fits (default: yes)")
    p.add_argument("--budget-s", type=float, default=120.0,
                   help="seconds of timed steps allowed per point; process start and "
                   "compilation are reported apart (default: %(default)s)")
    p.add_argument("--max-memory-gb", type=float,
                   help="memory a point may use (default: 90%% of a device's on accelerators, "
                   "70%% of the available host memory on CPUs)")
    p.add_argument("--out", default="results/scaling", help="default: %(default)s")
    p.add_argument("--replot", action="store_true",
                   help="rebuild scaling.md and the plots from OUT/scaling.csv; measure nothing")
    overrides_arg(p, "overrides for every model, e.g. model.num_latents=256")
    p.set_defaults(func=run_scaling)


def check_scaling(args: argparse.Namespace) -> None:
    """Counts, budgets and model names, before anything is compiled or written."""
    from suite import extend
    from suite.benchmarks.scaling import MODELS
    from suite.inference.user_inputs import check_positive

    check_positive(args.batch, "--batch")
    for flag, value in (("--budget-s", args.budget_s), ("--max-memory-gb", args.max_memory_gb)):
        if value is not None and not value > 0:  # NaN too
            raise SuiteError(f"{flag} {value}: must be more than 0")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    known = [*MODELS, *(k for k in extend.names("model") if k not in MODELS)]
    if not models or any(m not in known for m in models):
        raise SuiteError(f"--models {args.models!r}: name models from {', '.join(known)} "
                         "(a plugin's model.kind with --plugin)")


def run_scaling(args: argparse.Namespace) -> int:
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # children need the GPU
    from suite import config as cfg_lib
    from suite.benchmarks.scaling import int_list, sides_for, sweep
    from suite.benchmarks.scaling_report import replot, write
    from suite.platform.devices import machine_description

    out = folder_out(args.out, "--out")
    check_scaling(args)
    if not args.replot:
        rows = sweep([m.strip() for m in args.models.split(",") if m.strip()],
                     sides_for(int_list("--sizes", args.sizes), two_d=args.grid == "2d"),
                     batch=args.batch, do_measure=args.measure, budget_s=args.budget_s,
                     max_memory_bytes=int(args.max_memory_gb * 2**30) if args.max_memory_gb
                     else None, overrides=cfg_lib.parse_overrides(args.overrides),
                     two_d=args.grid == "2d", latents=int_list("--latents", args.latents))
        write(rows, out, "perceiver-suite scaling " + " ".join(sys.argv[2:]),
              machine_description())
    else:
        replot(out)
    print((out / "scaling.md").read_text())
    return 0

