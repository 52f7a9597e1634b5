"""Data parallelism (and FSDP) over a device mesh, on one host or many.

``train.mesh`` names the mesh axes and their sizes, e.g. ``data=-1`` (every device on
the data axis) or ``data=-1,fsdp=2``. The batch is split over all axes; parameters and
optimizer state are replicated, or with an ``fsdp`` axis each array is split along its
largest dimension that the axis size divides (the rest replicated). ``train.batch_size``
is the global batch; each process feeds its own share (``pipeline``), and the steps are
jitted with these shardings, so XLA inserts the collectives.

Several hosts: see ``hosts`` (``jax.distributed`` and how the processes agree).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from suite.config.validation import parse_mesh
from suite.errors import ConfigError


def make_mesh(text: str, devices: list | None = None) -> Mesh | None:
    """The mesh ``train.mesh`` asks for over all (global) devices; None if it is empty."""
    axes = parse_mesh(text)
    if not axes:
        return None
    devices = devices if devices is not None else jax.devices()
    known = math.prod(v for v in axes.values() if v != -1)
    sizes = {k: (len(devices) // known if v == -1 else v) for k, v in axes.items()}
    if math.prod(sizes.values()) != len(devices):
        raise ConfigError(f"train.mesh={text!r} needs {math.prod(sizes.values())} devices "
                          f"(or a multiple for -1), this run has {len(devices)}")
    grid = np.asarray(devices).reshape(*sizes.values())
    return Mesh(grid, tuple(sizes))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The batch split along its first dimension over every mesh axis."""
    return NamedSharding(mesh, P(mesh.axis_names))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def _leaf_spec(shape: tuple[int, ...], fsdp: int) -> P:
    """FSDP: split the largest dimension ``fsdp`` divides; replicate small arrays."""
    if fsdp <= 1 or math.prod(shape) < 2**14:
        return P()
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if shape[dim] % fsdp == 0:
            return P(*([None] * dim + ["fsdp"]))
    return P()


def state_shardings(mesh: Mesh, state: Any) -> Any:
    """A sharding for every leaf of the (model, optimizer) state."""
    fsdp = mesh.shape.get("fsdp", 1)
    return jax.tree.map(lambda x: NamedSharding(mesh, _leaf_spec(tuple(x.shape), fsdp)), state)


def check_batch(batch_size: int, mesh: Mesh) -> int:
    """The per-device batch; a ConfigError unless the devices divide the global batch."""
    devices = mesh.devices.size
    if batch_size % devices or batch_size % jax.process_count():
        raise ConfigError(f"train.batch_size={batch_size} must be a multiple of the "
                          f"{devices} devices of train.mesh (and of the "
                          f"{jax.process_count()} processes)")
    return batch_size // devices


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's share of a batch -> one global array per key, split over the mesh."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


class Placement:
    """Where a run's arrays go: one device (everything as is) or the mesh (state by its
    shardings, batches split over the data axes, each process giving its share)."""

    def __init__(self, mesh: Mesh | None, state_sharding: Any = None):
        self.mesh, self.state_sharding = mesh, state_sharding
        self.process, self.processes = jax.process_index(), jax.process_count()

    @property
    def primary(self) -> bool:
        """Writes the run folder's files (process 0 of a multi-host run)."""
        return self.process == 0

    @property
    def devices(self) -> int:
        return 1 if self.mesh is None else self.mesh.devices.size

    def state(self, state: Any) -> Any:
        return state if self.mesh is None else jax.device_put(state, self.state_sharding)

    def train_batch(self, local: dict[str, np.ndarray]) -> dict[str, Any]:
        """This process's share of a training batch -> the global batch."""
        if self.mesh is None:
            return local
        if self.processes == 1:
            return jax.device_put(local, batch_sharding(self.mesh))
        return global_batch(local, self.mesh)

    def eval_batch(self, full: dict[str, np.ndarray] | np.ndarray):
        """A whole eval batch (every process reads all of it) -> the global batch."""
        if self.mesh is None:
            return full
        if self.processes == 1:
            return jax.device_put(full, batch_sharding(self.mesh))
        share = jax.tree.map(lambda x: x[self.process::self.processes], full)
        sharding = batch_sharding(self.mesh)
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), share)

    def describe(self) -> dict[str, Any]:
        return {"devices": self.devices, "processes": self.processes,
                "mesh": dict(self.mesh.shape) if self.mesh is not None else None}
