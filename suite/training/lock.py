"""The run-folder lock: one process trains a run folder at a time, on one host or many.

A POSIX record lock (``fcntl.lockf``) on ``RUN_DIR/.lock``. The kernel (or the NFS lock
manager on a shared file system) releases it when the process dies, so a killed trainer
never leaves a stale lock. Only EAGAIN / EACCES from the lock call mean "another process
holds it"; any other error (a file system without POSIX locks, a read-only folder, a
full disk) is a :class:`LockError` naming the file and the problem, never taken for
"busy", so a grid cannot skip every run and report success.

POSIX locks belong to the process, and closing *any* descriptor of the file drops them,
so the lock is taken once per process and kept in :data:`_HELD`; asking again for a
folder this process already holds returns the same lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from suite.errors import SuiteError

LOCK_NAME = ".lock"
_HELD: dict[Path, int] = {}  # run folder -> descriptor holding its lock


class LockError(SuiteError):
    """The lock file could not be locked for a reason other than another holder."""


class RunBusy(SuiteError):
    """Another process holds the run folder's lock."""


def holder(run_dir: Path) -> str:
    """``host pid`` of the process that last took the lock (for messages)."""
    try:
        return (Path(run_dir) / LOCK_NAME).read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def training_now(run_dir: Path) -> str:
    """``host pid`` when the process that last took the run's lock is alive on this host
    and is this suite's, else "": a report then says "training now", not "interrupted".

    It reads the pid the lock file names instead of testing the lock: taking the lock,
    even for a moment, could make a runner asking at that moment skip the run.
    """
    host, _, pid = holder(run_dir).partition(" ")
    if host != os.uname().nodename or not pid.isdigit():
        return ""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""  # no such process (or no /proc to ask)
    return f"{host} {pid}" if b"suite" in cmdline or b"perceiver" in cmdline else ""


def acquire(run_dir: Path) -> int:
    """Lock ``run_dir`` for the life of this process; its descriptor.

    Raises :class:`RunBusy` if another process holds it, :class:`LockError` if the file
    system cannot lock it.
    """
    run_dir = Path(run_dir).absolute()
    if run_dir in _HELD:
        return _HELD[run_dir]
    path = run_dir / LOCK_NAME
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    except OSError as e:
        raise LockError(f"{path}: cannot open the lock file: {e.strerror or e}") from None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES):
            raise RunBusy(f"{run_dir} is busy: another process trains it "
                          f"(lock held by {holder(run_dir)})") from None
        name = errno.errorcode.get(e.errno or 0, "?")
        raise LockError(f"{path}: cannot lock it ({name}: {e.strerror}); the file system may "
                        "not support POSIX locks (fcntl): put the results folder on one "
                        "that does") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.uname().nodename} {os.getpid()}\n".encode())
    _HELD[run_dir] = fd
    return fd


def release(run_dir: Path) -> None:
    """Drop this process's lock on ``run_dir`` (the lock file stays)."""
    fd = _HELD.pop(Path(run_dir).absolute(), None)
    if fd is not None:
        os.close(fd)


@contextlib.contextmanager
def holding(run_dir: Path) -> Iterator[None]:
    """Hold the lock for a block (a no-op if this process holds it already).

    A folder that was made only to hold the lock is removed again afterwards, so a run
    that stops on a user mistake before writing anything leaves nothing behind.
    """
    run_dir = Path(run_dir).absolute()
    if run_dir in _HELD:
        yield
        return
    existed = run_dir.exists()
    acquire(run_dir)
    try:
        yield
    finally:
        release(run_dir)
        with contextlib.suppress(OSError):
            if not existed and [p.name for p in run_dir.iterdir()] == [LOCK_NAME]:
                (run_dir / LOCK_NAME).unlink()
                run_dir.rmdir()
