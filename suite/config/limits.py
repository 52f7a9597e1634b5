"""Upper limits on the structural sizes of a config, checked before anything is built.

A typo such as ``model.num_blocks=1000000000000`` (or a hostile ``config.json``) would
otherwise build a Python list that long, or ask XLA for an array of 10**16 elements, and
end in a MemoryError traceback or a killed process. Each limit is far above what real
research uses (paper ImageNet: 512 latents x 1024 channels, 8 blocks x 6 self-attends,
224x224 inputs, 64 bands; Perceiver IO: 2048 latents, ~180k flow queries; video
16x224x224), yet finite. A value over its limit is one line naming the key, the value
and the limit.
"""

from __future__ import annotations

import math
from typing import Any

from suite.config.schema import Config
from suite.config.tables import is_table_value
from suite.errors import ConfigError

MAX_DEPTH = 4096  # blocks, self-attends per block, cross-attends, baseline layers
MAX_LAYERS = 65536  # blocks x self-attends per block: the forward schedule's length
MAX_WIDTH = 65536  # channels of latents, queries, hidden layers, learned positions
MAX_HEADS = 1024  # attention heads
MAX_ELEMENTS = 2**31  # items of an input grid (its product), queries, chunk sizes
LIMITS: dict[str, int] = {
    "model.num_blocks": MAX_DEPTH,
    "model.self_attends_per_block": MAX_DEPTH,
    "model.num_cross_attends": MAX_DEPTH,
    "model.num_layers": MAX_DEPTH,
    "model.num_latents": 2**20,
    "model.latent_dim": MAX_WIDTH,
    "model.cross_qk_channels": MAX_WIDTH,
    "model.decoder_query_dim": MAX_WIDTH,
    "model.hidden_dim": MAX_WIDTH,
    "model.learned_pos_dim": MAX_WIDTH,
    "model.modality_padding": MAX_WIDTH,
    "model.cross_heads": MAX_HEADS,
    "model.self_heads": MAX_HEADS,
    "model.decoder_heads": MAX_HEADS,
    "model.widening_factor": 64,
    "model.fourier_bands": 1024,
    "model.patch_size": 4096,
    "model.decoder_queries": 2**24,
    "model.cross_attention_chunk": MAX_ELEMENTS,
    "data.channels": MAX_WIDTH,
    "data.num_classes": 2**24,
    "data.pos_dim": 64,
    "data.frames": 2**16,
    "train.batch_size": 2**20,
    "train.eval_batch_size": 2**20,
}
MAX_RANK = 8  # dimensions of an input grid (video: 3)


def check_size(key: str, value: Any, where: str = "") -> None:
    """``value`` (an int, or a per-modality table of them) is at most ``LIMITS[key]``;
    ``where`` (a file) prefixes the message when the value came from one."""
    values = [v for _, v in value] if is_table_value(value) else [value]
    limit = LIMITS[key]
    for v in values:
        if isinstance(v, int) and not isinstance(v, bool) and v > limit:
            shown = f"{key}={v}" if len(str(v)) <= 40 else f"{key}={str(v)[:40]}..."
            raise ConfigError(f"{where}{shown} is over the limit of {limit:,} (sizes are "
                              "bounded so that a typo fails before anything is built)")


def check_grid(key: str, dims: Any, where: str = "") -> None:
    """An input grid has at most ``MAX_RANK`` dimensions and ``MAX_ELEMENTS`` items."""
    if not isinstance(dims, tuple | list) or not all(isinstance(n, int) for n in dims):
        return  # its type is checked where it is read
    shown = "x".join(map(str, dims))
    shown = shown if len(shown) <= 60 else shown[:60] + "..."
    if len(dims) > MAX_RANK:
        raise ConfigError(f"{where}{key}={shown} has {len(dims)} dimensions; at most "
                          f"{MAX_RANK}")
    if all(n > 0 for n in dims) and math.prod(dims) > MAX_ELEMENTS:
        raise ConfigError(f"{where}{key}={shown} has {math.prod(dims):.3g} items, over the "
                          f"limit of {MAX_ELEMENTS:,} (2**31) an input may have")


def check_sizes(config: Config) -> None:
    """Every structural size of ``config`` within its limit (before any is used)."""
    for key in LIMITS:
        section, name = key.split(".")
        check_size(key, getattr(getattr(config, section), name))
    m, d = config.model, config.data
    layers = m.num_blocks * m.self_attends_per_block
    if layers > MAX_LAYERS:
        raise ConfigError(f"model.num_blocks={m.num_blocks} x model.self_attends_per_block="
                          f"{m.self_attends_per_block} = {layers:,} self-attends, over the "
                          f"limit of {MAX_LAYERS:,}")
    if d.index_dims is not None:
        check_grid("data.index_dims", d.index_dims)
    for name, dims in d.modality_dims:
        check_grid(f"data.modality_dims.{name}", dims)
