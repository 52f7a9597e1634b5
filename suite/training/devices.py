"""What the run executes on: the machine, the JAX backend and its devices."""

from __future__ import annotations

import os
import platform

import jax


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else the platform's processor string."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                        cpu)
    except OSError:
        return cpu


def machine_description() -> str:
    """CPU model, core count and JAX backend, for the record in every summary."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu_model()}, {cores} cores, jax {jax.__version__} on {jax.default_backend()}"
