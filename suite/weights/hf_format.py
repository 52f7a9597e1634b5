"""Hugging Face's port of the Perceiver IO ImageNet classifier (a
``PerceiverForImageClassificationFourier`` folder: ``config.json`` + ``model.safetensors``,
the ``deepmind/vision-perceiver-fourier`` layout) -> the official arrays and the config
overrides its ``config.json`` implies, read with safetensors (no pickle, no code).

Torch's ``Linear`` weights are ``[out, in]``: transposed to the official ``[in, out]``.
The port's Fourier preprocessor fixes 64 bands and a maximum resolution of 224; its MLPs
use ``config.hidden_act`` ("gelu" is the exact GELU, where DeepMind's code uses the tanh
approximation): the import sets ``model.gelu_approximate`` to match.

Everything from the folder is checked before it is used: ``config.json`` must be a JSON
object whose settings have the types the port writes (positive ints, a bool, a GELU's
name), the safetensors header must be a sane size and declare float tensors whose byte
ranges lie inside the file without overlapping, and every tensor name must have one
place in the model, all before any tensor is read. Each mistake is one line naming the
file, the key and the value.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from suite.config.limits import LIMITS, MAX_ELEMENTS
from suite.errors import SuiteError

ENC, DEC = "perceiver_encoder/~/", "classification_decoder/~/basic_decoder/"
LAYER = {  # inside a PerceiverLayer -> inside the official module
    "attention.self.query": "attention/linear", "attention.self.key": "attention/linear_1",
    "attention.self.value": "attention/linear_2", "attention.output.dense": "attention/linear_3",
    "mlp.dense1": "mlp/linear", "mlp.dense2": "mlp/linear_1",
}
CROSS_NORMS = {"attention.self.layernorm1": "layer_norm", "attention.self.layernorm2":
               "layer_norm_1", "layernorm": "layer_norm_2"}
SELF_NORMS = {"attention.self.layernorm1": "layer_norm", "layernorm": "layer_norm_1"}
ACTIVATIONS = {"gelu": False, "gelu_new": True, "gelu_pytorch_tanh": True, "gelu_fast": True}
INTS = {"num_blocks": 8, "num_self_attention_heads": 8, "num_cross_attention_heads": 1,
        "cross_attention_widening_factor": 1, "self_attention_widening_factor": 1,
        "image_size": 224}  # config.json keys read as positive ints, with the port's defaults
SIZES = {"num_blocks": LIMITS["model.num_blocks"], "num_self_attention_heads":
         LIMITS["model.self_heads"], "num_cross_attention_heads": LIMITS["model.cross_heads"],
         "cross_attention_widening_factor": LIMITS["model.widening_factor"],
         "self_attention_widening_factor": LIMITS["model.widening_factor"],
         "image_size": math.isqrt(MAX_ELEMENTS)}  # the suite's limits on what each sets
FLOATS = {"F16": 2, "F32": 4, "F64": 8}  # safetensors dtypes read, and their item sizes
MAX_CONFIG_BYTES = 1 << 20  # a port's config.json is a few KB
MAX_HEADER_BYTES = 16 << 20  # a port's safetensors header is a few KB (the format caps 100 MB)


class HFFormatError(SuiteError):
    """A folder that is not Hugging Face's Perceiver IO Fourier classifier."""


def is_hf_folder(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "model.safetensors").is_file()


def official_name(name: str) -> tuple[str, str]:
    """A port's tensor name -> (official module, array name)."""
    fixed = {"perceiver.embeddings.latents": (f"{ENC}trainable_position_encoding", "pos_embs"),
             "perceiver.decoder.decoder.output_position_encodings.position_embeddings":
                 (f"{DEC}~/trainable_position_encoding", "pos_embs")}
    if name in fixed:
        return fixed[name]
    module, _, leaf = name.rpartition(".")
    if module == "perceiver.decoder.decoder.final_layer" and leaf in ("weight", "bias"):
        return f"{DEC}output", {"weight": "w", "bias": "b"}[leaf]
    for prefix, target, norms in (
            ("perceiver.encoder.cross_attention.", f"{ENC}cross_attention/", CROSS_NORMS),
            ("perceiver.decoder.decoder.decoding_cross_attention.", f"{DEC}cross_attention/",
             CROSS_NORMS)):
        if module.startswith(prefix):
            return _inside(module.removeprefix(prefix), leaf, target, norms, name)
    if m := re.fullmatch(r"perceiver\.encoder\.self_attends\.(0|[1-9]\d{0,3})\.(.+)", module):
        j = int(m.group(1))
        return _inside(m.group(2), leaf, f"{ENC}self_attention{'' if j == 0 else f'_{j}'}/",
                       SELF_NORMS, name)
    raise HFFormatError(f"tensor {named(name)} has no place in the Perceiver IO classifier")


def _inside(part: str, leaf: str, target: str, norms: dict[str, str], name: str
            ) -> tuple[str, str]:
    if part in LAYER and leaf in ("weight", "bias"):
        return target + LAYER[part], {"weight": "w", "bias": "b"}[leaf]
    if part in norms and leaf in ("weight", "bias"):
        return target + norms[part], {"weight": "scale", "bias": "offset"}[leaf]
    raise HFFormatError(f"tensor {named(name)} has no place in the Perceiver IO classifier")


def shown(value: Any, room: int = 80) -> str:
    """A value from the folder as one short line (JSON, so newlines stay escaped)."""
    text = json.dumps(value, default=lambda v: type(v).__name__)
    return text[:room] + ("..." if len(text) > room else "")


def named(name: str) -> str:
    """A tensor's name as is, or as JSON where it would not print on one short line."""
    return name if name.isprintable() and len(name) <= 120 else shown(name, 120)


def read_config(folder: Path) -> dict[str, Any]:
    """``config.json``: a JSON object of at most ``MAX_CONFIG_BYTES``."""
    path = Path(folder) / "config.json"
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise HFFormatError(f"{path}: {size:,} bytes; a model's config.json is a few KB")
        config = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0][:120]
        raise HFFormatError(f"{path}: not a readable JSON config ({reason})") from None
    if not isinstance(config, dict):
        raise HFFormatError(f"{path}: expected a JSON object of the model's settings, found "
                            f"{shown(config, 40)}")
    return config


def read_header(path: Path) -> dict[str, dict[str, Any]]:
    """The tensors a safetensors file declares, checked before any is read: a header of
    sane size that is a JSON object; float dtypes; shapes of sizes; byte ranges inside
    the file that match their shape and dtype and do not overlap."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if size < 8 or not 2 <= n <= min(MAX_HEADER_BYTES, size - 8):
                raise HFFormatError(f"{path}: a header of {n:,} bytes in a file of {size:,}: "
                                    "not a safetensors file")
            header = json.loads(f.read(n))
    except (OSError, ValueError, RecursionError) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0][:120]
        raise HFFormatError(f"{path}: not a readable safetensors file ({reason})") from None
    if not isinstance(header, dict):
        raise HFFormatError(f"{path}: the header is {shown(header, 40)}, not a JSON object")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    spans = sorted((_span(path, name, entry, size - 8 - n), name)
                   for name, entry in tensors.items())
    for ((_, end), before), ((start, _), after) in zip(spans, spans[1:], strict=False):
        if start < end:
            raise HFFormatError(f"{path}: tensors {named(before)} and {named(after)} share "
                                "bytes")
    return tensors


def _span(path: Path, name: str, entry: Any, room: int) -> tuple[int, int]:
    """A tensor's byte range, after checking its entry against its shape and dtype."""
    fields = entry if isinstance(entry, dict) else {}
    dtype, shape, offsets = (fields.get(k) for k in ("dtype", "shape", "data_offsets"))
    if not isinstance(dtype, str) or dtype not in FLOATS:
        raise HFFormatError(f"{path}: tensor {named(name)} has dtype {shown(dtype, 20)}; only "
                            f"{', '.join(FLOATS)} are read (save the port in float32)")
    sizes = shape if isinstance(shape, list) and len(shape) <= 8 else [None]
    span = offsets if isinstance(offsets, list) and len(offsets) == 2 else [None, None]
    if not all(type(v) is int and v >= 0 for v in [*sizes, *span]) or not \
            span[0] <= span[1] <= room or span[1] - span[0] != math.prod(sizes) * FLOATS[dtype]:
        raise HFFormatError(f"{path}: tensor {named(name)}: shape {shown(shape, 40)} and "
                            f"data_offsets {shown(offsets, 40)} do not fit its {dtype} data "
                            f"in the file's {room:,} bytes")
    return span[0], span[1]


def read_folder(folder: Path) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """The official arrays of a port's folder, and the overrides its config.json implies;
    the config, the header and every tensor's place are checked before a tensor is read."""
    from safetensors.numpy import load_file

    folder = Path(folder)
    implied = overrides(read_config(folder), folder)
    weights = folder / "model.safetensors"
    places: dict[tuple[str, str], str] = {}
    for name in read_header(weights):
        try:
            place = official_name(name)
        except HFFormatError as e:
            raise HFFormatError(f"{weights}: {e}") from None
        if place in places:
            raise HFFormatError(f"{weights}: tensors {named(places[place])} and {named(name)} "
                                f"both map to {place[0]}/{place[1]}")
        places[place] = name
    try:
        tensors = load_file(str(weights))
    except Exception as e:  # the library's own checks, e.g. ranges that leave gaps
        reason = (str(e).splitlines() or [type(e).__name__])[0][:120]
        raise HFFormatError(f"{weights}: not a readable safetensors file ({reason})") from None
    params: dict[str, dict[str, np.ndarray]] = {}
    for (module, leaf), name in places.items():
        value = np.asarray(tensors[name], np.float32)
        params.setdefault(module, {})[leaf] = np.ascontiguousarray(value.T if leaf == "w"
                                                                   else value)
    return params, implied


def overrides(config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """What the port's config says that the arrays do not, each value's type checked."""
    where = f"{folder / 'config.json'}"
    ints = {key: config.get(key, default) for key, default in INTS.items()}
    for key, value in ints.items():
        if type(value) is not int or value < 1:
            raise HFFormatError(f"{where}: {key}={shown(value, 40)}: expected a positive "
                                "integer")
        if value > SIZES[key]:  # before a layer list or an input grid that size is made
            raise HFFormatError(f"{where}: {key}={shown(value, 40)} is over the suite's limit "
                                f"of {SIZES[key]:,}")
    act = config.get("hidden_act", "gelu")
    if not isinstance(act, str) or act not in ACTIVATIONS:
        raise HFFormatError(f"{where}: hidden_act={shown(act, 40)}: the Perceiver's MLPs take "
                            f"a GELU ({', '.join(ACTIVATIONS)})")
    residual = config.get("use_query_residual", True)
    if type(residual) is not bool:
        raise HFFormatError(f"{where}: use_query_residual={shown(residual, 40)}: expected "
                            "true or false")
    if ints["cross_attention_widening_factor"] != ints["self_attention_widening_factor"]:
        raise HFFormatError(f"{where}: the cross- and self-attention widening factors differ "
                            f"({ints['cross_attention_widening_factor']} and "
                            f"{ints['self_attention_widening_factor']}); the suite's "
                            "Perceiver shares one")
    if not residual:
        raise HFFormatError(f"{where}: use_query_residual=false: the encoder's cross-attend "
                            "keeps its query residual here")
    size = ints["image_size"]
    return {"model.num_blocks": ints["num_blocks"],
            "model.self_heads": ints["num_self_attention_heads"],
            "model.cross_heads": ints["num_cross_attention_heads"],
            "model.gelu_approximate": ACTIVATIONS[act],
            "model.max_resolution": 224,  # the port's Fourier preprocessor fixes it
            "data.index_dims": f"{size},{size}", "data.channels": 3}
