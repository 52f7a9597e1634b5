"""One grid run in its own process: lock the run folder, train, record the outcome.

Started by the runner as ``python -m suite.sweeps.worker RUN_DIR [--retry-failed]``, with its
output going to ``RUN_DIR/train.log``. A separate process per run keeps a crash (or the
OOM killer) from taking the grid down. The exit status tells the runner what happened:

- 0 completed; 1 failed (``summary.json`` says why: divergence, a data error, a crash);
- 2 an error that leaves the run folder untouched (a checkpoint of another structure,
  a lock the file system cannot take): the last line of ``train.log`` says what;
- 3 another process trains this run;
- 4 a resource error (out of memory, a failed autotuning): nothing recorded, resumable;
- 5 the run does not fit this machine (``summary.json`` says ``does_not_fit`` and why);
- 128 + N stopped by signal N (checkpointed; resumable).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import traceback
from pathlib import Path

from suite.training import lock, stop

EXIT_COMPLETED, EXIT_FAILED, EXIT_ERROR, EXIT_LOCKED, EXIT_RESOURCE = 0, 1, 2, 3, 4
EXIT_DOES_NOT_FIT = 5
RESOURCE_ERRORS = re.compile(  # what XLA, CUDA and the allocator say when memory runs out
    r"RESOURCE_EXHAUSTED|out of memory|Failed to get configs|autotun|Failed to allocate|"
    r"CUDA_ERROR_OUT_OF_MEMORY|(?-i:\bOOM\b)", re.IGNORECASE)


def is_resource_error(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or bool(RESOURCE_ERRORS.search(f"{type(e).__name__} {e}"))


def die_with_parent(parent: int) -> None:
    """Linux: get SIGTERM when the runner dies (even by SIGKILL), to checkpoint and exit."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the runner died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    stop.install()  # from process start: a stop while JAX imports is a clean exit too
    parser = argparse.ArgumentParser(prog="python -m suite.sweeps.worker")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--retry-failed", action="store_true")
    parser.add_argument("--cpus", help="CPU ids to run on, e.g. 0,1 (before JAX starts)")
    parser.add_argument("--parent", type=int, help="the runner's pid (stop when it dies)")
    args = parser.parse_args(argv)
    try:
        return _train(args)
    except stop.Stopped as e:
        print(f"perceiver-suite: {e}", flush=True)
        return e.exit_code


def _train(args: argparse.Namespace) -> int:
    if args.cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})  # sizes XLA's pool
    if args.parent:
        die_with_parent(args.parent)
    run_dir = args.run_dir.absolute()
    try:
        lock.acquire(run_dir)  # before importing JAX: a busy run is skipped in milliseconds
    except lock.RunBusy:
        return EXIT_LOCKED
    except lock.LockError as e:
        print(f"error: {e}", flush=True)
        return EXIT_ERROR

    from suite import config as cfg_lib
    from suite.errors import CheckpointError, SuiteError
    from suite.files import read_json, write_json_atomic
    from suite.training.preflight import DoesNotFit
    from suite.training.trainer import train_and_evaluate

    try:
        config = cfg_lib.from_dict(read_json(run_dir / "run.json")["config"])
        summary = train_and_evaluate(config, run_dir, retry_failed=args.retry_failed,
                                     progress=False)
        return EXIT_COMPLETED if summary["status"] == "completed" else EXIT_FAILED
    except CheckpointError as e:  # the folder's files are left exactly as they were
        print(f"error: {e}", flush=True)
        return EXIT_ERROR
    except DoesNotFit as e:  # checked before the first step; the summary says why
        print(f"error: {e}", flush=True)
        return EXIT_DOES_NOT_FIT
    except Exception as e:  # record the failure; the grid goes on
        traceback.print_exc()
        if is_resource_error(e):  # the runner retries it; no summary, so it stays resumable
            print(f"error: out of resources: {type(e).__name__}: {_first(e)}", flush=True)
            return EXIT_RESOURCE
        kind = "error" if isinstance(e, SuiteError) else f"crash ({type(e).__name__})"
        first = _first(e)
        write_json_atomic(run_dir / "summary.json", {
            "status": "failed", "failure": "error" if isinstance(e, SuiteError) else "crash",
            "reason": f"{kind}: {first} (see train.log)", "metrics": {},
        })
        return EXIT_FAILED


def _first(e: BaseException) -> str:
    return str(e).strip().splitlines()[0][:300] if str(e).strip() else ""


if __name__ == "__main__":
    sys.exit(main())
