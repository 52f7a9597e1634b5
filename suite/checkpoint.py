"""Orbax checkpoints of everything a bit-exact resume needs, with corrupt-step fallback.

One checkpoint holds: the model and optimizer state (which carries any RNG state),
the grain iterator state, and loop metadata (step, partial metric sums, wall time).
Saves are synchronous and atomic (Orbax writes a temporary folder and renames it).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def to_savable(state: nnx.State) -> dict:
    """A pure dict of arrays; PRNG keys become their raw key data."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x,
                        nnx.to_pure_dict(state))


def from_savable(template: nnx.State, restored: dict) -> nnx.State:
    """Put restored arrays back into a copy of ``template`` (re-wrapping PRNG keys)."""
    pure = nnx.to_pure_dict(template)
    fixed = jax.tree.map(
        lambda t, r: jax.random.wrap_key_data(r, impl=jax.random.key_impl(t)) if _is_key(t)
        else r,
        pure, restored,
    )
    state = jax.tree.map(lambda x: x, template)  # shallow copy of the structure
    nnx.replace_by_pure_dict(state, fixed)
    return state


class Checkpointer:
    """Save and restore training state under ``directory`` (keeps the last ``keep``)."""

    def __init__(self, directory: Path, keep: int):
        self.directory = Path(directory).absolute()  # Orbax wants absolute paths
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=False
            ),
            item_names=("state", "data", "meta"),
        )

    def save(self, step: int, state: nnx.State, data_state: dict, meta: dict) -> None:
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(to_savable(state)),
                data=ocp.args.JsonSave(data_state),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )
        self.manager.wait_until_finished()

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore_latest(self, template: nnx.State) -> tuple[int, nnx.State, dict, dict] | None:
        """The newest readable checkpoint; unreadable ones are moved aside with a warning."""
        for step in reversed(self.steps()):
            try:
                abstract = jax.tree.map(
                    lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), to_savable(template)
                )
                restored = self.manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract),
                        data=ocp.args.JsonRestore(),
                        meta=ocp.args.JsonRestore(),
                    ),
                )
                if restored.meta is None or restored.data is None:
                    raise ValueError("missing data or meta item")
                if restored.meta.get("step") != step:
                    raise ValueError(f"meta says step {restored.meta.get('step')}")
                state = from_savable(template, restored.state)
                return step, state, restored.data, restored.meta
            except Exception as e:  # any failure to read means this step is unusable
                aside = self.directory.parent / "checkpoints_corrupt" / str(step)
                aside.parent.mkdir(parents=True, exist_ok=True)
                if aside.exists():
                    shutil.rmtree(aside)
                shutil.move(str(self.directory / str(step)), aside)
                self.manager.reload()
                reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
                print(f"warning: checkpoint at step {step} is unreadable ({reason}); "
                      f"moved to {aside}, trying the previous one", file=sys.stderr)
        return None

    def close(self) -> None:
        self.manager.close()
