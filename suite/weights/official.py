"""DeepMind's released Perceiver IO weights (and Hugging Face's port of them) -> a run folder.

The released ``imagenet_fourier_position_encoding.pystate`` is a pickle of
``{"params": {module path: {name: array}}, "state": {...}}`` (Haiku). A pickle can run
code when loaded, and numpy's own pickle functions can build object arrays from raw
bytes or allocate far more than the file holds, so it is read by ``safe_pickle``: numpy's
names are answered by checking stand-ins that build only bool, integer and float arrays
from buffers of the declared length, in dicts with str keys, declaring no more bytes in
all than the file has; anything else is refused in one line before it is allocated.
Every official array maps to one parameter of the suite's Perceiver IO (``MAPPING``)
with an exact shape check; arrays left over on either side are an error naming them.
The config comes from the arrays' shapes (latents, widths, self-attends per block,
bands, classes) over the ``imagenet_io`` preset for what shapes cannot tell (heads,
blocks, the input grid); the folder gets ``config.json``, an Orbax checkpoint at step 0
(a fresh optimizer) and ``imported.json`` saying where the weights came from, so
``train`` there fine-tunes them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from suite import config as cfg_lib
from suite.config import Config
from suite.errors import SuiteError
from suite.weights import hf_format, safe_pickle

ENCODER = "perceiver_encoder/~/"
DECODER = "classification_decoder/~/basic_decoder/"
LINEARS = {"attn/q": "attention/linear", "attn/k": "attention/linear_1",
           "attn/v": "attention/linear_2", "attn/out": "attention/linear_3",
           "mlp/fc1": "mlp/linear", "mlp/fc2": "mlp/linear_1"}
CROSS = {**LINEARS, "ln_q": "layer_norm", "ln_kv": "layer_norm_1", "ln_mlp": "layer_norm_2"}
SELF = {**LINEARS, "ln": "layer_norm", "ln_mlp": "layer_norm_1"}  # our path -> the official
LEAF = {"kernel": "w", "bias": "b", "scale": "scale"}  # a LayerNorm's bias is its offset


class OfficialFormatError(SuiteError):
    """A checkpoint that is not (or not safely) in the released format."""


def read_pickle(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """``params`` of a released ``.pystate`` file, read without running any code and
    without allocating more than the file holds (``safe_pickle``)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise OfficialFormatError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        tree = safe_pickle.load_arrays(data)
    except safe_pickle.PickleRefused as e:
        raise OfficialFormatError(f"{path}: {e}") from None
    params = tree.get("params") if isinstance(tree, dict) else None
    if not isinstance(params, dict):
        found = ("one array" if not isinstance(tree, dict) else
                 "params as one array" if "params" in tree else
                 f"the keys {', '.join(safe_pickle.clean(k, 40) for k in sorted(tree)[:4])}"
                 if tree else "an empty dict")
        raise OfficialFormatError(f"{path}: expected {{'params': {{module: {{name: array}}}}, "
                                  f"'state': ...}}, found {found}")
    for module, leaves in params.items():
        inner = leaves.values() if isinstance(leaves, dict) else [leaves]
        if not isinstance(leaves, dict) or any(isinstance(v, dict) for v in inner):
            raise OfficialFormatError(f"{path}: params/{safe_pickle.clean(module)} is not "
                                      "{name: array}: the released format is "
                                      "{'params': {module: {name: array}}}")
    return params


def official_key(path: str) -> tuple[str, str]:
    """Our parameter path (``cross/0/attn/q/kernel``) -> (official module, array name)."""
    parts = path.split("/")
    if path == "latents":
        return f"{ENCODER}trainable_position_encoding", "pos_embs"
    if path == "decoder/query":
        return f"{DECODER}~/trainable_position_encoding", "pos_embs"
    if parts[:2] == ["decoder", "output"]:
        return f"{DECODER}output", LEAF[parts[-1]]
    if parts[0] == "cross" and parts[1] == "0":
        prefix, inner, names = f"{ENCODER}cross_attention/", parts[2:], CROSS
    elif parts[0] == "self_attends":
        j = int(parts[1])
        prefix, inner = f"{ENCODER}self_attention{'' if j == 0 else f'_{j}'}/", parts[2:]
        names = SELF
    elif parts[:2] == ["decoder", "attend"]:
        prefix, inner, names = f"{DECODER}cross_attention/", parts[2:], CROSS
    else:
        raise OfficialFormatError(f"the official model has no parameter for {path}")
    module = "/".join(inner[:-1])
    if module not in names:
        raise OfficialFormatError(f"the official model has no parameter for {path}")
    leaf = "offset" if module.startswith("ln") and inner[-1] == "bias" else LEAF[inner[-1]]
    return prefix + names[module], leaf


def infer_config(params: dict[str, dict[str, np.ndarray]], base: Config,
                 overrides: dict[str, Any]) -> Config:
    """The suite's config of these arrays: shapes decide what they can (latents, widths,
    self-attends per block, MLP widening, bands, queries, classes); ``base`` and
    ``overrides`` the rest (heads, blocks, the input grid, the query residual)."""
    def shape(module: str, name: str) -> tuple[int, ...]:
        try:
            found = tuple(np.shape(params[module][name]))
        except KeyError:
            raise OfficialFormatError(f"no array {module}/{name}: not an official Perceiver IO "
                                      "classifier (Fourier features)") from None
        if len(found) != 2 or 0 in found:
            raise OfficialFormatError(f"{module}/{name} is {list(found)}: the official array "
                                      "is a matrix (two sizes, neither 0)")
        return found

    n, d = shape(f"{ENCODER}trainable_position_encoding", "pos_embs")
    c, f = shape(f"{ENCODER}cross_attention/attention/linear_1", "w")
    _, wd = shape(f"{ENCODER}cross_attention/mlp/linear", "w")
    o, e = shape(f"{DECODER}~/trainable_position_encoding", "pos_embs")
    _, classes = shape(f"{DECODER}output", "w")
    selfs = {m for m in params if re.fullmatch(rf"{re.escape(ENCODER)}self_attention(_\d+)?/"
                                               r"attention/linear", m)}
    given = cfg_lib.apply_overrides(base, overrides)  # the input grid the overrides set
    channels, pos_dim = given.data.channels, len(given.data.index_dims)
    bands, rest = divmod(c - channels - pos_dim, 2 * pos_dim)  # C = ch + d (2K + 1)
    if rest or bands < 1:
        raise OfficialFormatError(f"inputs of {c} channels are not {channels} pixel channels "
                                  f"and {pos_dim}-d Fourier features with their positions")
    inferred = {"model.num_latents": n, "model.latent_dim": d, "model.num_cross_attends": 1,
                "model.cross_qk_channels": None if f == c else f,
                "model.widening_factor": wd // d, "model.self_attends_per_block": len(selfs),
                "model.fourier_bands": bands, "model.decoder": "query",
                "model.decoder_queries": o, "model.decoder_query_dim": None if e == d else e,
                "data.num_classes": classes}
    clash = [k for k in inferred if k in overrides and str(overrides[k]) != str(inferred[k])]
    if clash:
        raise OfficialFormatError(f"{clash[0]}={overrides[clash[0]]} contradicts the "
                                  f"checkpoint's arrays ({clash[0]}={inferred[clash[0]]})")
    return cfg_lib.apply_overrides(base, {**inferred, **overrides})


def load_into(model: Any, params: dict[str, dict[str, np.ndarray]], where: str) -> int:
    """Copy every official array into ``model``'s parameter of the same place; the number
    copied. Shapes must match exactly; leftovers on either side are an error."""
    import jax
    from flax import nnx

    state = nnx.state(model, nnx.Param)
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    used: set[tuple[str, str]] = set()
    copied, missing = {}, []
    for keys, leaf in flat:
        path = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in keys)
        path = path.removesuffix("/.value").removesuffix("/value")
        module, name = official_key(path)
        array = params.get(module, {}).get(name)
        if array is None:
            missing.append(f"{module}/{name} (for {path})")
            continue
        if np.asarray(array).dtype.kind != "f":
            raise OfficialFormatError(f"{where}: {module}/{name} has dtype "
                                      f"{np.asarray(array).dtype}: weights are floating point")
        if tuple(array.shape) != tuple(leaf.shape):
            raise OfficialFormatError(f"{where}: {module}/{name} is {list(array.shape)}, the "
                                      f"model's {path} is {list(leaf.shape)}")
        used.add((module, name))
        copied[path] = np.asarray(array, dtype=np.float32)
    left = sorted(f"{m}/{k}" for m, leaves in params.items() for k in leaves
                  if (m, k) not in used)
    if missing or left:
        what = (f"the checkpoint lacks {missing[0]}" if missing else
                f"the model has no place for {left[0]}")
        more = len(missing) + len(left) - 1
        raise OfficialFormatError(f"{where}: {what}" + (f" (and {more} more)" if more else ""))

    def put(keys, leaf):
        path = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in keys)
        return jax.numpy.asarray(copied[path.removesuffix("/.value").removesuffix("/value")])

    nnx.update(model, jax.tree_util.tree_map_with_path(put, state))
    return len(copied)


@dataclasses.dataclass(frozen=True)
class Imported:
    config: Config
    arrays: int
    sha256: str


def import_official(path: Path, workdir: Path, base: Config,
                    overrides: dict[str, Any], params: dict | None = None) -> Imported:
    """Write a run folder at ``workdir`` holding ``path``'s weights at step 0."""
    from flax import nnx

    from suite.files import write_json_atomic
    from suite.models.registry import build_model
    from suite.training.checkpoint import FRESH_DATA, Checkpointer
    from suite.training.optim import optimizer
    from suite.training.run_folder import CHECKPOINTS, write_config

    workdir = Path(workdir).absolute()
    if (workdir / CHECKPOINTS).exists() or (workdir / "config.json").exists():
        raise OfficialFormatError(f"{workdir} already holds a run; import into a new folder")
    source, fmt = Path(path), "DeepMind Perceiver IO pickle (Haiku params)"
    if hf_format.is_hf_folder(source):  # Hugging Face's port: its config says the rest
        found, implied = hf_format.read_folder(source)
        params = found if params is None else params
        overrides = {**implied, **overrides}
        source, fmt = source / "model.safetensors", "Hugging Face PerceiverForImageClassific" \
            "ationFourier (safetensors)"
    params = read_pickle(source) if params is None else params
    config = infer_config(params, base, overrides)
    model = build_model(config, rngs=nnx.Rngs(params=config.seed, dropout=config.seed + 1))
    arrays = load_into(model, params, str(path))
    state = nnx.state((model, nnx.Optimizer(model, optimizer(config.train), wrt=nnx.Param)))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    # Written in a scratch sibling and moved in whole: an import stopped half way (Ctrl-C,
    # a full disk) leaves no run folder whose config.json has no checkpoint to train from.
    scratch = workdir.with_name(f"{workdir.name}.partial-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)  # this process's own leftover, if any
    try:
        scratch.mkdir(parents=True)
        write_config(scratch, config)
        ckpt = Checkpointer(scratch / CHECKPOINTS, config.train.keep_checkpoints)
        try:
            ckpt.save(0, state, FRESH_DATA, {"step": 0, "window": 0, "acc": None,
                                             "wall_seconds": 0.0, "imported": str(path)})
        finally:
            ckpt.close()
        write_json_atomic(scratch / "imported.json", {
            "source": str(Path(path).absolute()), "sha256": digest, "arrays": arrays,
            "format": fmt,
            "note": "step 0 holds the imported weights and a fresh optimizer; train here to "
                    "fine-tune them"})
        move_in(scratch, workdir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return Imported(config, arrays, digest)


def move_in(scratch: Path, workdir: Path) -> None:
    """``scratch``'s files become ``workdir``'s: one rename where ``workdir`` is absent or
    empty; else entry by entry with ``config.json`` last, so that a folder with a config
    always has the checkpoint it names."""
    try:
        os.rename(scratch, workdir)  # atomic; replaces an empty folder on POSIX
        return
    except OSError:
        if not workdir.is_dir():
            raise
    for entry in sorted(scratch.iterdir(), key=lambda p: p.name == "config.json"):
        os.replace(entry, workdir / entry.name)

