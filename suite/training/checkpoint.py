"""Orbax checkpoints of everything a bit-exact resume needs; corruption told from mismatch.

One checkpoint holds: the model and optimizer state (which carries any RNG state),
the grain iterator state, and loop metadata (step, partial metric sums, wall time).
Saves are synchronous and atomic (Orbax writes a temporary folder, renames it and
leaves ``commit_success.txt``); then a manifest of every file's size and CRC-32 is
written beside Orbax's files, so a restore can prove a checkpoint intact.

A restore that fails is never guessed at. Only a checkpoint that fails the integrity
check (Orbax's commit marker absent, a file missing, truncated or with other bytes than
were written) is moved to ``checkpoints_corrupt/`` and the previous one tried. A
checkpoint of another structure (a model changed by a code or Flax upgrade, a missing
RNG stream), an I/O error or running out of memory stops with a ``CheckpointError``
that names the folder, the step and what differs, and nothing is moved. A read-only
checkpointer (``evaluate``, ``predict``, ``attention``) moves nothing ever: it notes a
corrupt checkpoint, leaves it where it is and tries the previous one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import sys
import zlib
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from suite.errors import CheckpointError
from suite.files import write_json_atomic

ITEMS = ("state", "data", "meta")
MANIFEST = "suite_manifest.json"  # our integrity record, written after Orbax commits
COMMIT_MARKER = "commit_success.txt"  # Orbax's: the step was finalised
TOP_NAMES = {"0": "model", "1": "optimizer"}  # the state is the pair (model, optimizer)
FRESH_DATA = {"stream": "from the start"}  # a checkpoint whose data stream starts afresh
# (imported weights at step 0)


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


def _path_name(path: tuple) -> str:
    """``(0, 'cross', 0, 'attn', 'q', 'kernel')`` -> ``model/cross/0/attn/q/kernel``."""
    parts = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
    if parts and parts[0] in TOP_NAMES:
        parts[0] = TOP_NAMES[parts[0]]
    return "/".join(parts)


def _shapes(tree: Any) -> dict[str, tuple[list[int], str]]:
    """Leaf name -> (shape, dtype) of arrays or Orbax array metadata."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        out[_path_name(path)] = (list(leaf.shape), str(np.dtype(leaf.dtype)))
    return out


def structure_diff(saved: Any, model: Any) -> list[str]:
    """What differs between a checkpoint's arrays and the model's, one line per leaf."""
    a, b = _shapes(saved), _shapes(model)
    lines = [f"{k}: in the checkpoint, not in the model" for k in sorted(set(a) - set(b))]
    lines += [f"{k}: in the model, not in the checkpoint" for k in sorted(set(b) - set(a))]
    for k in sorted(set(a) & set(b)):
        if a[k] != b[k]:
            (sa, da), (sb, db) = a[k], b[k]
            lines.append(f"{k}: checkpoint {sa} {da} vs model {sb} {db}")
    return lines


@dataclasses.dataclass
class Restored:
    step: int
    state: nnx.State
    data: dict  # the grain iterator state
    meta: dict  # loop metadata


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            crc = zlib.crc32(chunk, crc)
    return crc


def _files(step_dir: Path) -> list[Path]:
    return sorted(p for p in step_dir.rglob("*") if p.is_file() and p.name != MANIFEST)


class Checkpointer:
    """Save and restore training state under ``directory`` (keeps the last ``keep``).

    ``read_only``: restores only; nothing under ``directory`` is created, moved or deleted.
    """

    def __init__(self, directory: Path, keep: int, read_only: bool = False):
        self.directory = Path(directory).absolute()  # Orbax wants absolute paths
        self.run_dir = self.directory.parent
        self.read_only = read_only
        if read_only and not self.directory.is_dir():
            raise CheckpointError(f"{self.run_dir}: no {self.directory.name}/ folder "
                                  "(not trained, or not imported, yet)")
        absl_log, level = logging.getLogger("absl"), logging.getLogger("absl").level
        if read_only:  # else Orbax warns that a read-only manager will not save
            absl_log.setLevel(logging.ERROR)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=not read_only, read_only=read_only,
                enable_async_checkpointing=False
            ),
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "data": ocp.JsonCheckpointHandler(),
                           "meta": ocp.JsonCheckpointHandler()},
        )
        absl_log.setLevel(level)
        self.moved_aside: list[int] = []  # corrupt steps moved away by the last restore

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
        if jax.process_count() > 1:  # every host has written its shards: process 0 records
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"checkpoint {step}")
            if jax.process_index() != 0:
                return
        step_dir = self.directory / str(step)
        write_json_atomic(step_dir / MANIFEST, {
            "step": step,
            "files": {str(p.relative_to(step_dir)): [p.stat().st_size, _crc32(p)]
                      for p in _files(step_dir)},
        })

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def verify(self, step: int) -> str | None:
        """Why the checkpoint at ``step`` is corrupt, or None if it is intact.

        Corrupt means: Orbax's commit marker or an item folder missing, or a file of
        the manifest missing, of another size or with other bytes (CRC-32). A
        checkpoint written before manifests existed is checked for the marker, items
        and readable JSON only.
        """
        step_dir = self.directory / str(step)
        if not step_dir.is_dir():
            return f"{step_dir} is missing"
        if not (step_dir / COMMIT_MARKER).is_file():
            return f"Orbax's commit marker {COMMIT_MARKER} is missing (an unfinished save)"
        for item in ITEMS:
            if not (step_dir / item).is_dir():
                return f"item folder {item}/ is missing"
        manifest_path = step_dir / MANIFEST
        if not manifest_path.exists():
            for item in ("data", "meta"):
                try:
                    json.loads((step_dir / item / "metadata").read_text())
                except (OSError, ValueError) as e:
                    return f"{item}/metadata is unreadable ({type(e).__name__})"
            return None
        try:
            manifest = json.loads(manifest_path.read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            return f"{MANIFEST} is unreadable ({type(e).__name__})"
        for name, (size, crc) in manifest.items():
            path = step_dir / name
            try:
                if not path.is_file():
                    return f"{name} is missing"
                if path.stat().st_size != size:
                    return f"{name} has {path.stat().st_size} bytes, {size} were written"
                if _crc32(path) != crc:
                    return f"{name} has other bytes than were written (CRC-32 differs)"
            except OSError as e:
                return f"{name} is unreadable ({e.strerror or type(e).__name__})"
        return None

    def _move_aside(self, step: int, why: str) -> None:
        if self.read_only:  # a reader never moves a run's files: it notes and goes on
            print(f"note: {self.run_dir.name}: checkpoint at step {step} is corrupt ({why}); "
                  "left in place (read-only), trying the previous one",
                  file=sys.stderr, flush=True)
            return
        if jax.process_count() > 1:  # hosts cannot agree on a move without more machinery
            raise self._refuse(step, f"it is corrupt ({why}); with several processes, move "
                               f"{self.directory / str(step)} aside by hand")
        aside = self.run_dir / "checkpoints_corrupt" / str(step)
        aside.parent.mkdir(parents=True, exist_ok=True)
        if aside.exists():
            shutil.rmtree(aside)
        shutil.move(str(self.directory / str(step)), aside)
        self.manager.reload()
        self.moved_aside.append(step)
        print(f"warning: {self.run_dir.name}: checkpoint at step {step} is corrupt ({why}); "
              f"moved to {aside}, trying the previous one", file=sys.stderr, flush=True)

    def _refuse(self, step: int, what: str) -> CheckpointError:
        return CheckpointError(
            f"{self.run_dir}: cannot restore the checkpoint at step {step}: {what}; nothing "
            f"was moved or deleted (to start over, move {self.directory} away)")

    def restore_latest(self, template: nnx.State) -> Restored | None:
        """The newest intact checkpoint restored into ``template``'s structure, or None."""
        self.moved_aside = []
        savable = to_savable(template)
        for step in reversed(self.steps()):
            problem = self.verify(step)
            if problem:
                self._move_aside(step, problem)
                continue
            try:
                saved = self.manager.item_metadata(step).state
                saved_tree = getattr(saved, "tree", saved)
            except Exception as e:  # metadata unreadable although the files are intact
                raise self._refuse(step, f"its metadata cannot be read ({_first_line(e)})") \
                    from None
            diff = structure_diff(saved_tree, savable)
            if diff:
                more = f" (and {len(diff) - 1} more)" if len(diff) > 1 else ""
                raise self._refuse(step, f"it holds another model structure: {diff[0]}{more}")
            abstract = jax.tree.map(  # onto the template's devices: a new mesh reshards
                lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype,
                                               sharding=getattr(x, "sharding", None)), savable)
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract),
                    data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))
            except Exception as e:  # I/O error, out of memory, a library change ...
                problem = self.verify(step)  # ... unless the files went bad meanwhile
                if problem:
                    self._move_aside(step, problem)
                    continue
                raise self._refuse(step, f"{type(e).__name__}: {_first_line(e)}") from None
            meta, data = restored.meta, restored.data
            if not isinstance(meta, dict) or meta.get("step") != step or data is None:
                raise self._refuse(step, f"its loop metadata says {meta!r}")
            return Restored(step, from_savable(template, restored.state), data, meta)
        return None

    def close(self) -> None:
        self.manager.close()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0][:300] if text else type(e).__name__)
