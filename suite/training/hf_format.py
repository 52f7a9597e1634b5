"""Hugging Face's port of the Perceiver IO ImageNet classifier (a
``PerceiverForImageClassificationFourier`` folder: ``config.json`` + ``model.safetensors``,
the ``deepmind/vision-perceiver-fourier`` layout) -> the official arrays and the config
overrides its ``config.json`` implies, read with safetensors (no pickle, no code).

Torch's ``Linear`` weights are ``[out, in]``: transposed to the official ``[in, out]``.
The port's Fourier preprocessor fixes 64 bands and a maximum resolution of 224; its MLPs
use ``config.hidden_act`` ("gelu" is the exact GELU, where DeepMind's code uses the tanh
approximation): the import sets ``model.gelu_approximate`` to match.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

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
    if module == "perceiver.decoder.decoder.final_layer":
        return f"{DEC}output", {"weight": "w", "bias": "b"}[leaf]
    for prefix, target, norms in (
            ("perceiver.encoder.cross_attention.", f"{ENC}cross_attention/", CROSS_NORMS),
            ("perceiver.decoder.decoder.decoding_cross_attention.", f"{DEC}cross_attention/",
             CROSS_NORMS)):
        if module.startswith(prefix):
            return _inside(module.removeprefix(prefix), leaf, target, norms, name)
    if m := re.fullmatch(r"perceiver\.encoder\.self_attends\.(\d+)\.(.+)", module):
        j = int(m.group(1))
        return _inside(m.group(2), leaf, f"{ENC}self_attention{'' if j == 0 else f'_{j}'}/",
                       SELF_NORMS, name)
    raise HFFormatError(f"tensor {name} has no place in the Perceiver IO classifier")


def _inside(part: str, leaf: str, target: str, norms: dict[str, str], name: str
            ) -> tuple[str, str]:
    if part in LAYER:
        return target + LAYER[part], {"weight": "w", "bias": "b"}[leaf]
    if part in norms:
        return target + norms[part], {"weight": "scale", "bias": "offset"}[leaf]
    raise HFFormatError(f"tensor {name} has no place in the Perceiver IO classifier")


def read_folder(folder: Path) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """The official arrays of a port's folder, and the overrides its config.json implies."""
    from safetensors.numpy import load_file

    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
        tensors = load_file(str(folder / "model.safetensors"))
    except (OSError, ValueError) as e:
        raise HFFormatError(f"{folder}: not a readable Hugging Face model folder ({e})") from None
    params: dict[str, dict[str, np.ndarray]] = {}
    for name, array in tensors.items():
        module, leaf = official_name(name)
        value = np.asarray(array, np.float32)
        params.setdefault(module, {})[leaf] = value.T if leaf == "w" else value
    return params, overrides(config, folder)


def overrides(config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """What the port's config says that the arrays do not."""
    where = f"{folder / 'config.json'}"
    act = config.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise HFFormatError(f"{where}: hidden_act={act!r}: the Perceiver's MLPs take a GELU")
    widen = {config.get("cross_attention_widening_factor", 1),
             config.get("self_attention_widening_factor", 1)}
    if len(widen) > 1:
        raise HFFormatError(f"{where}: the cross- and self-attention widening factors differ "
                            f"({sorted(widen)}); the suite's Perceiver shares one")
    if not config.get("use_query_residual", True):
        raise HFFormatError(f"{where}: use_query_residual=false: the encoder's cross-attend "
                            "keeps its query residual here")
    size = int(config.get("image_size", 224))
    return {"model.num_blocks": config.get("num_blocks", 8),
            "model.self_heads": config.get("num_self_attention_heads", 8),
            "model.cross_heads": config.get("num_cross_attention_heads", 1),
            "model.gelu_approximate": ACTIVATIONS[act],
            "model.max_resolution": 224,  # the port's Fourier preprocessor fixes it
            "data.index_dims": f"{size},{size}", "data.channels": 3}
