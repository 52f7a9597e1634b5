"""The trainer's periodic parts: when an action is due, and the window of step metrics
summed on the device between two log lines, with its own clock."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp


class Every:
    """Due every ``n`` steps (never, if 0) and at the last step."""

    def __init__(self, n: int, last: int):
        self.n, self.last = n, last

    def __call__(self, step: int) -> bool:
        return step == self.last or (self.n > 0 and step % self.n == 0)


class Window:
    """Step metrics summed on the device between two log lines, and their timing.

    ``count`` includes steps restored from a checkpoint (so logged means are exact);
    ``timed`` counts only steps run in this process, and the clock pauses while
    periodic actions (evaluation, checkpoints) run, so step time is step time.
    """

    def __init__(self, sums: dict | None = None, count: int = 0):
        self.sums, self.count, self.last = sums, count, None
        self.timed, self.elapsed, self.mark = 0, 0.0, time.perf_counter()

    def add(self, metrics: dict) -> None:
        self.sums = metrics if self.sums is None else jax.tree.map(jnp.add, self.sums, metrics)
        self.count, self.timed, self.last = self.count + 1, self.timed + 1, metrics

    def pause(self) -> None:
        self.elapsed += time.perf_counter() - self.mark

    def resume(self) -> None:
        self.mark = time.perf_counter()

    def seconds_per_step(self) -> float | None:
        return self.elapsed / self.timed if self.timed else None

    def host_sums(self) -> dict[str, float] | None:
        return None if self.sums is None else \
            {k: float(v) for k, v in jax.device_get(self.sums).items()}
