"""Where each worker of a grid runs: its CPUs, or its accelerator and its share of it.

The runner never initialises an accelerator itself (JAX would preallocate most of its
memory for a process that trains nothing): a short-lived probe process lists the local
devices. Then, on a CPU host the CPUs are split between workers (each pinned to its
own); on a GPU or TPU host each worker sees one device (``CUDA_VISIBLE_DEVICES``,
``TPU_VISIBLE_CHIPS``) and, where there are more workers than GPUs, workers share a
GPU with preallocation off and an equal memory fraction each.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

from suite.errors import SuiteError

PROBE = ("import json, jax; ds = jax.local_devices(); s = ds[0].memory_stats() or {}; "
         "print(json.dumps({'backend': jax.default_backend(), 'ids': [d.id for d in ds], "
         "'kind': ds[0].device_kind, 'memory': s.get('bytes_limit')}))")
MEMORY_SHARE = 0.9  # of a shared GPU's memory, split evenly between its workers


@dataclasses.dataclass(frozen=True)
class Devices:
    backend: str  # "cpu", "gpu" or "tpu"
    ids: tuple[int, ...] = ()  # local accelerator ids (empty on CPU)
    kind: str = "cpu"
    memory_bytes: int | None = None


@dataclasses.dataclass(frozen=True)
class Slot:
    """One worker's place: CPUs to pin to (CPU backend only) and environment to add."""

    cpus: tuple[int, ...] | None
    env: dict[str, str]
    label: str


def probe() -> Devices:
    """The local devices as JAX sees them, asked of a child process."""
    if os.environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu":
        return Devices("cpu")
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false", "TF_CPP_MIN_LOG_LEVEL": "3"}
    hint = "check JAX_PLATFORMS and `perceiver-suite devices`"
    try:
        done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                              text=True, timeout=300)
    except subprocess.TimeoutExpired:
        raise SuiteError(f"listing the devices JAX sees timed out after 300 s; {hint}") from None
    try:
        info = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SuiteError(f"cannot list the devices JAX sees ({last[:200]}); {hint}") from None
    if info["backend"] == "cpu":
        return Devices("cpu")
    return Devices(info["backend"], tuple(info["ids"]), info["kind"], info["memory"])


def default_workers(devices: Devices) -> int:
    """One worker per accelerator; one (using every CPU) on a CPU host."""
    return len(devices.ids) if devices.backend != "cpu" and devices.ids else 1


def physical(ids: tuple[int, ...], variable: str,
             environ: dict[str, str] | None = None) -> list[str]:
    """JAX's local device ids as the names the parent process was given: JAX numbers the
    devices it sees 0..n-1, so under ``CUDA_VISIBLE_DEVICES=2,3`` (a SLURM node without
    cgroups) id 0 is GPU 2. Ids past the mask, or no mask, stay as they are."""
    mask = (environ if environ is not None else os.environ).get(variable, "").strip()
    names = [m.strip() for m in mask.split(",") if m.strip()] if mask else []
    return [names[i] if i < len(names) else str(i) for i in ids]


def plan(devices: Devices, workers: int, cpus: list[int] | None = None,
         environ: dict[str, str] | None = None) -> list[Slot]:
    """``workers`` slots for these devices (fewer on CPU if there are fewer CPUs);
    ``environ``: the parent's environment (default: this process's)."""
    if devices.backend == "cpu" or not devices.ids:
        cpus = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
        n = max(1, min(workers, len(cpus)))
        shares = [tuple(cpus[i::n]) for i in range(n)]
        return [Slot(s, {}, "cpus " + ",".join(map(str, s))) for s in shares]
    if devices.backend == "tpu":  # a chip cannot be shared between processes
        chips = physical(devices.ids, "TPU_VISIBLE_CHIPS", environ)
        return [_tpu_slot(chips[i], i) for i in range(min(workers, len(chips)))]
    gpus = physical(devices.ids, "CUDA_VISIBLE_DEVICES", environ)
    owners = [gpus[i % len(gpus)] for i in range(workers)]
    slots = []
    for device in owners:
        env = {"CUDA_VISIBLE_DEVICES": device}
        label = f"{devices.backend} {device}"
        sharing = owners.count(device)
        if sharing > 1:
            fraction = MEMORY_SHARE / sharing
            env.update(XLA_PYTHON_CLIENT_PREALLOCATE="false",
                       XLA_PYTHON_CLIENT_MEM_FRACTION=f"{fraction:.3f}")
            label += f" (shared by {sharing}, {fraction:.0%} of its memory each)"
        slots.append(Slot(None, env, label))
    return slots


def _tpu_slot(chip: str, i: int) -> Slot:
    return Slot(None, {"TPU_VISIBLE_CHIPS": chip, "TPU_CHIPS_PER_PROCESS_BOUNDS": "1,1,1",
                       "TPU_PROCESS_BOUNDS": "1,1,1", "TPU_PROCESS_PORT": str(8476 + i)},
                f"tpu {chip}")
