"""One grid run in its own process: lock the run folder, train, record the outcome.

Started by the runner as ``python -m suite.worker RUN_DIR [--retry-failed]``, with its
output going to ``RUN_DIR/train.log``. A
separate process per run keeps a crash (or the OOM killer) from taking the grid down.
The lock is a POSIX record lock (``fcntl.lockf``) on ``RUN_DIR/.lock``: the kernel (or
the NFS lock manager on a shared file system) releases it when the process dies, so a
killed runner never leaves a stale lock, and two runners never train the same run.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import sys
import traceback
from pathlib import Path

EXIT_COMPLETED, EXIT_FAILED, EXIT_LOCKED = 0, 1, 3


def lock(run_dir: Path):
    """Hold the run's lock for the life of this process, or return None if taken."""
    fd = os.open(run_dir / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.uname().nodename} {os.getpid()}\n".encode())
    return fd


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
    parser = argparse.ArgumentParser(prog="python -m suite.worker")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--retry-failed", action="store_true")
    parser.add_argument("--cpus", help="CPU ids to run on, e.g. 0,1 (before JAX starts)")
    parser.add_argument("--parent", type=int, help="the runner's pid (stop when it dies)")
    args = parser.parse_args(argv)
    if args.cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})  # sizes XLA's pool
    if args.parent:
        die_with_parent(args.parent)
    run_dir = args.run_dir.absolute()
    fd = lock(run_dir)
    if fd is None:
        return EXIT_LOCKED

    from suite import config as cfg_lib
    from suite.errors import SuiteError
    from suite.files import read_json, write_json_atomic
    from suite.train import Preempted, train_and_evaluate

    try:
        config = cfg_lib.from_dict(read_json(run_dir / "run.json")["config"])
        summary = train_and_evaluate(config, run_dir, retry_failed=args.retry_failed,
                                     progress=False)
        return EXIT_COMPLETED if summary["status"] == "completed" else EXIT_FAILED
    except Preempted as e:
        print(e)
        return 128 + e.signum
    except (SuiteError, Exception) as e:  # record the failure; the grid goes on
        traceback.print_exc()
        kind = "error" if isinstance(e, SuiteError) else f"crash ({type(e).__name__})"
        write_json_atomic(run_dir / "summary.json", {
            "status": "failed", "reason": f"{kind}: {str(e).splitlines()[0] if str(e) else ''}"
                                          f" (see train.log)", "metrics": {},
        })
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
