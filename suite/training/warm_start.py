"""Warm starts: a new run begins from another run folder's newest intact checkpoint.

``train.init_from`` names the source folder. Its model weights (every model variable
but RNG state) replace the new run's initialisation; the optimizer starts fresh, or
with ``train.init_optimizer=carry`` takes the source's state as saved (moments and
step count, so the learning-rate schedule goes on from the source's step), which only
makes sense for the same optimizer config. Everything else is the new run's own: its
seed's RNG streams and a data stream from the start.

Shapes and dtypes must match exactly: a fine-tune to another head is a model change,
not a warm start. The source is only read (a corrupt checkpoint is skipped, with a
note, never moved). What was loaded is recorded (``Source.record``): the folder, its
run id (the folder's name), the step and a SHA-256 of the arrays, so the summary says
which weights the run grew from; a resumed run keeps this record in its checkpoints
and never reads the source again.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from suite.config import Config, TrainConfig
from suite.errors import CheckpointError, ConfigError, SuiteError
from suite.training.checkpoint import TOP_NAMES, Checkpointer
from suite.training.run_folder import read_config

CHECKPOINTS, CONFIG = "checkpoints", "config.json"
# What ``optim.optimizer`` builds the update from: carried state means the same update.
OPTIMIZER_KEYS = ("optimizer", "learning_rate", "schedule", "warmup_steps", "weight_decay",
                  "grad_clip", "steps")


@dataclasses.dataclass(frozen=True)
class Source:
    """The checkpoint a run started from."""

    path: Path
    step: int
    weights_sha256: str
    optimizer: str  # "fresh" or "carry"

    def record(self) -> dict[str, Any]:
        return {"path": str(self.path), "run": self.path.name, "step": self.step,
                "weights_sha256": self.weights_sha256, "optimizer": self.optimizer}


def source_folder(config: Config) -> Path:
    """``train.init_from`` as an absolute path (a relative one is from the working
    directory); a folder that is missing or holds no checkpoint is one line."""
    value = config.train.init_from
    path = Path(value).expanduser().absolute()
    if not path.is_dir():
        raise CheckpointError(f"train.init_from={value!r}: no such run folder")
    ckpts = path / CHECKPOINTS
    if not ckpts.is_dir() or not any(p.name.isdigit() for p in ckpts.iterdir()):
        raise CheckpointError(f"train.init_from={value!r}: {path} has no checkpoints to start "
                              "from (train it first)")
    return path


def check_carry(config: Config, source: Path) -> None:
    """``carry`` needs the source's optimizer config: the state means nothing otherwise."""
    if config.train.init_optimizer != "carry":
        return
    try:
        theirs = read_config(source / CONFIG).train
    except SuiteError as e:
        raise ConfigError(f"train.init_optimizer='carry': {source / CONFIG} is unreadable "
                          f"({e}), so its optimizer cannot be compared; use "
                          "train.init_optimizer=fresh") from None
    ours = config.train
    for key in optimizer_keys(theirs, ours):
        if getattr(theirs, key) != getattr(ours, key):
            raise ConfigError(
                f"train.init_optimizer='carry': the optimizer config differs from "
                f"{source}'s (train.{key}={getattr(theirs, key)!r} there, "
                f"{getattr(ours, key)!r} here); carry needs the same optimizer, or use "
                "train.init_optimizer=fresh")


def optimizer_keys(a: TrainConfig, b: TrainConfig) -> tuple[str, ...]:
    """A constant schedule does not depend on ``train.steps``; the others do."""
    both_constant = a.schedule == b.schedule == "constant"
    return tuple(k for k in OPTIMIZER_KEYS if not (k == "steps" and both_constant))


def check_source(config: Config) -> Path:
    """The source folder, checked: it exists, holds checkpoints, and for ``carry`` was
    trained with this optimizer config. Cheap: run before anything is compiled."""
    source = source_folder(config)
    check_carry(config, source)
    return source


def initial_state(config: Config, template: nnx.State,
                  log: Callable[[str], None]) -> tuple[nnx.State, Source]:
    """``template`` (the new run's placed (model, optimizer) state) with the source's
    weights, and optimizer state where carried, put on the template's devices."""
    source = check_source(config)
    wanted = _wanted(template, carry=config.train.init_optimizer == "carry")
    ckpt = Checkpointer(source / CHECKPOINTS, keep=1, read_only=True)
    try:
        step = _newest_intact(ckpt, log)
        saved = _saved_shapes(ckpt, step)
        _check_shapes(config.train.init_from, saved, wanted)
        arrays = _read(ckpt.directory / str(step) / "state", saved, wanted)
    finally:
        ckpt.close()
    digest = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"{name} {a.dtype} {list(a.shape)}\n".encode())
        digest.update(a.tobytes())
    pure = nnx.to_pure_dict(template)
    for name, (path, leaf) in wanted.items():
        host = arrays[name]
        node = pure
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = jax.make_array_from_callback(host.shape, leaf.sharding,
                                                      lambda idx, h=host: h[idx])
    state = jax.tree.map(lambda x: x, template)  # a copy of the structure
    nnx.replace_by_pure_dict(state, pure)
    return state, Source(source, step, digest.hexdigest(), config.train.init_optimizer)


def _wanted(template: nnx.State, carry: bool) -> dict[str, tuple[tuple, jax.Array]]:
    """Checkpoint name -> (path in the state, leaf) of what a warm start replaces: the
    model's variables but its RNG state, and the optimizer's state when carried."""
    out = {}
    for path, var in nnx.to_flat_state(template):
        if path[0] == 0 and isinstance(var, nnx.RngState):
            continue
        if path[0] == 1 and not carry:
            continue
        out["/".join(str(k) for k in path)] = (path, var.get_value())
    return out


def _newest_intact(ckpt: Checkpointer, log: Callable[[str], None]) -> int:
    for step in reversed(ckpt.steps()):
        problem = ckpt.verify(step)
        if problem is None:
            return step
        log(f"note: {ckpt.run_dir}: its checkpoint at step {step} is corrupt ({problem}); "
            "trying the previous one")
    raise CheckpointError(f"train.init_from={str(ckpt.run_dir)!r}: no intact checkpoint there")


def _saved_shapes(ckpt: Checkpointer, step: int) -> dict[str, tuple[list[int], str]]:
    """Saved name (``0/cross/0/attn/q/kernel``) -> (shape, dtype), from Orbax metadata."""
    try:
        meta = ckpt.manager.item_metadata(step).state
    except Exception as e:  # any failure here is the source's
        raise CheckpointError(f"{ckpt.run_dir}: the checkpoint at step {step} cannot be read "
                              f"({type(e).__name__})") from None
    tree = getattr(meta, "tree", meta)
    return {"/".join(str(getattr(k, "key", k)) for k in path): (list(m.shape),
                                                               str(np.dtype(m.dtype)))
            for path, m in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _shown(name: str) -> str:
    """``0/cross/q/kernel`` -> ``model/cross/q/kernel``, as checkpoint errors name it."""
    top, _, rest = name.partition("/")
    return f"{TOP_NAMES.get(top, top)}/{rest}"


def _check_shapes(value: str | None, saved: dict[str, tuple[list[int], str]],
                  wanted: dict[str, tuple[tuple, jax.Array]]) -> None:
    """One line for the first difference: a weight on one side only, or another shape
    or dtype. Extra integer arrays in the source (RNG keys and counts) do not count."""
    problems = []
    for name in sorted(set(saved) | set(wanted)):
        if name not in saved:
            problems.append(f"{_shown(name)} is in this model, not in its checkpoint")
        elif name not in wanted:
            shape, dtype = saved[name]
            if name.startswith("0/") and np.issubdtype(np.dtype(dtype), np.floating):
                problems.append(f"{_shown(name)} {shape} is in its checkpoint, not in this model")
        else:
            leaf = wanted[name][1]
            here = (list(leaf.shape), str(np.dtype(leaf.dtype)))
            if saved[name] != here:
                problems.append(f"{_shown(name)} is {saved[name][0]} {saved[name][1]} there, "
                                f"{here[0]} {here[1]} here")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CheckpointError(f"train.init_from={value!r}: {problems[0]}{more}; a warm start "
                              "needs the same model shapes")


def _read(state_dir: Path, saved: dict, wanted: dict) -> dict[str, np.ndarray]:
    """Only the wanted arrays, onto the host (the rest of the checkpoint is not read)."""
    item: dict = {}
    for name in wanted:
        shape, dtype = saved[name]
        node = item
        *parents, last = name.split("/")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype))
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
    try:
        with ocp.PyTreeCheckpointer() as reader:
            tree = reader.restore(state_dir, args=ocp.args.PyTreeRestore(
                item=item, restore_args=restore_args, partial_restore=True))
    except Exception as e:  # an I/O error or a library change: one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise CheckpointError(f"{state_dir.parent.parent.parent}: cannot read the checkpoint "
                              f"at {state_dir.parent.name}: {first}") from None
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(leaf)
            for path, leaf in flat}
