"""Stop requests (SIGTERM, SIGINT) honoured from process start to the last step.

Before the training loop (imports, data loading, compilation, restoring) a signal
raises :class:`Stopped` at once: nothing has been trained, nothing half-written is
left, and a rerun starts normally. Inside the loop the first signal is only noted: the
loop finishes its step, saves a checkpoint and then raises ``Stopped``; a second signal
stops at once. ``Stopped`` derives from ``BaseException`` so that no ``except
Exception`` on the way swallows it. The process exits with ``128 + signal``.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_state: dict[str, Any] = {"signum": None, "defer": False}


class Stopped(BaseException):
    """A stop signal arrived. ``step``: the last step trained in this process, if any."""

    def __init__(self, signum: int, step: int | None = None, saved: bool = False):
        self.signum, self.step, self.saved = signum, step, saved
        name = signal.Signals(signum).name
        if step is None:
            text = f"stopped by {name} before the first step; rerun to start"
        elif saved:
            text = f"stopped by {name} after step {step}; checkpoint saved, rerun to resume"
        else:
            text = f"stopped by {name} at once after step {step}; rerun to resume from the " \
                   "last checkpoint"
        super().__init__(text)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _handle(signum: int, frame: Any) -> None:
    first = _state["signum"] is None
    if first:
        _state["signum"] = signum
    if _state["defer"] and first:
        return  # the loop checkpoints at the next step boundary
    raise Stopped(signum)


def install() -> None:
    """Honour SIGTERM/SIGINT from now on (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            signal.signal(sig, _handle)


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """Install the handlers for a block, restoring the previous ones after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.getsignal(sig) for sig in SIGNALS}
    install()
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Inside the loop: a first signal is only noted (see :func:`requested`)."""
    _state["defer"] = True
    try:
        yield
    finally:
        _state["defer"] = False


def requested() -> int | None:
    """The signal received so far, if any."""
    return _state["signum"]


def reset() -> None:
    _state["signum"] = None
