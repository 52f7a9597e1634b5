"""Compute cost: the paper's analytic FLOPs and XLA's cost analysis on abstract shapes.

Convention (paper, App. B): multiplies and adds counted separately, so FLOPs = 2 x MACs.
Softmax, LayerNorm and GELU are ignored, as in the paper's figures.
"""

from __future__ import annotations

import time
from typing import Any

import jax
from flax import nnx

from suite.config import Config
from suite.config.layout import Layout, layouts
from suite.config.tables import table_get
from suite.models import xla_cost
from suite.models.baselines import convnet_flops, transformer_flops
from suite.models.encodings import fourier_width
from suite.models.perceiver import layer_schedule
from suite.models.registry import abstract_model, example_inputs


def input_channels(config: Config) -> int:
    """C: input channels after position features are attached (261 on ImageNet); with
    several modalities, the common width they are padded to."""
    widths = [layout_channels(config, lay) for lay in layouts(config)]
    if config.data.modalities:
        return max(widths) + config.model.modality_padding
    return widths[0]


def layout_channels(config: Config, lay: Layout) -> int:
    """One input's channels with its position features (patches: on the patch grid)."""
    m, d = config.model, config.data
    c = lay.item_channels
    if m.position_encoding == "none" or m.position_combine == "add":
        return c
    if m.position_encoding == "learned":
        return c + m.learned_pos_dim
    p = d.pos_dim or len(lay.grid)
    bands = table_get(m.fourier_bands, lay.name, 64) if d.modalities else m.fourier_bands
    return c + fourier_width(p, bands, concat_pos=m.concat_pos, sine_only=m.sine_only)


def input_items(config: Config) -> int:
    """M: the items the cross-attends read (patches count once; modalities add up)."""
    return sum(lay.items for lay in layouts(config))


def analytic_flops(config: Config) -> dict[str, float]:
    """Forward FLOPs per example by module, from the formulas in the spec (section 5).

    cross-attend MACs = N D F + 2 M C F + 2 N M F + N F D + 2 w N D^2
    self-attend MACs  = 4 N D^2 + 2 N^2 D + 2 w N D^2
    query decoder     = the cross-attend with O queries of E over N latents of D, F = D,
                        w = 1 (Perceiver IO), then E x classes from the first query
    """
    m, d = config.model, config.data
    big_m = input_items(config)
    c = input_channels(config)
    if m.kind != "perceiver":
        return _baseline_flops(config, big_m, c)
    n, dim, w = m.num_latents, m.latent_dim, m.widening_factor
    f = m.cross_qk_channels or c
    cross_macs = (
        n * dim * f + 2 * big_m * c * f + 2 * n * big_m * f + n * f * dim + 2 * w * n * dim**2
    )
    self_macs = 4 * n * dim**2 + 2 * n**2 * dim + 2 * w * n * dim**2
    schedule = layer_schedule(m)
    n_cross = sum(1 for kind, _ in schedule if kind == "cross")
    n_self = len(schedule) - n_cross
    pos_macs = 0
    if m.position_encoding == "fourier" and m.position_combine == "add" and not d.modalities:
        p = d.pos_dim or len(layouts(config)[0].grid)
        pos_width = p * ((1 if m.sine_only else 2) * m.fourier_bands + int(m.concat_pos))
        pos_macs = big_m * pos_width * layouts(config)[0].item_channels
    head_macs = dim * d.num_classes
    decoder_macs = 0
    if m.decoder == "query":  # the same cross-attend: O queries of E over N latents of D
        o, e = m.decoder_queries, m.decoder_query_dim or dim
        decoder_macs = o * e * dim + 2 * n * dim * dim + 2 * o * n * dim + o * dim * e \
            + 2 * o * e**2
        head_macs = e * d.num_classes  # from the first query
    out = {
        "cross_attend": 2.0 * cross_macs * n_cross,
        "self_attend": 2.0 * self_macs * n_self,
        "decoder": 2.0 * decoder_macs,
        "head": 2.0 * head_macs,
        "position": 2.0 * pos_macs,
    }
    out["total"] = sum(out.values())
    return out


def _baseline_flops(config: Config, items: int, channels: int) -> dict[str, float]:
    m, d = config.model, config.data
    if m.kind == "transformer":
        body = transformer_flops(m, items, channels, d.num_classes)
    elif m.kind == "vit":
        patch = m.patch_size**2
        body = transformer_flops(m, items // patch, channels * patch, d.num_classes)
    else:
        body = convnet_flops(m, d.index_dims, channels, d.num_classes)
    pos = 0.0
    if m.position_encoding == "fourier" and m.position_combine == "add":
        p = d.pos_dim or len(d.index_dims)
        pos_width = p * ((1 if m.sine_only else 2) * m.fourier_bands + int(m.concat_pos))
        pos = 2.0 * items * pos_width * d.channels
    return {m.kind: body, "position": pos, "total": body + pos}


def compiled_forward(config: Config, batch: int = 1):
    """Compile the model's forward pass on abstract shapes (no weights allocated)."""
    model = abstract_model(config)
    graphdef, state = nnx.split(model)
    inputs = example_inputs(config, batch)

    def forward(state, kwargs):
        return nnx.merge(graphdef, state)(**kwargs)

    start = time.perf_counter()
    compiled = jax.jit(forward).lower(state, inputs).compile()
    return compiled, time.perf_counter() - start


def cost_of(compiled: Any) -> dict[str, float]:
    """FLOPs and bytes of one execution from XLA's cost analysis: every loop body (the
    scanned repeats, the chunked cross-attention) at its trip count, and every device a
    partitioned program runs on (``suite.models.xla_cost``).

    On GPUs the analysis does not see into cuBLAS/cuDNN custom calls, so there it
    undercounts (about 3x for a Perceiver train step); :func:`train_flops` is the
    figure to trust.
    """
    c = xla_cost.cost(compiled)
    return {"flops": c.flops, "bytes_accessed": c.bytes_accessed,
            "flops_loops_once": c.flops_loops_once, "loops": c.loops,
            "loops_unknown_trips": c.unknown_trips, "partitions": c.partitions}


def train_flops(config: Config, batch: int) -> float:
    """Analytic FLOPs of one train step: 3 x the forward pass (forward, and a backward
    of twice its cost), the convention of the scaling-law papers, times the batch."""
    return 3.0 * analytic_flops(config)["total"] * batch


def xla_forward_flops(config: Config) -> dict[str, float]:
    """XLA's forward FLOPs per example (batch 1) and the compile time."""
    compiled, seconds = compiled_forward(config, batch=1)
    return {**cost_of(compiled), "compile_seconds": seconds}


def shared_kv_savings(config: Config) -> float:
    """FLOPs a compiled program may skip: the k/v projections of tied cross-attends.

    With weight sharing, cross-attends 2..n apply the same k/v projections to the same
    input array: the scanned model computes them once before its loop, and XLA's
    common-subexpression elimination leaves one copy in the unrolled one. A streamed
    cross-attention (``model.cross_attention_chunk``) recomputes them chunk by chunk.
    """
    m = config.model
    if m.kind != "perceiver":
        return 0.0
    big_m = input_items(config)
    if m.cross_attention_chunk and big_m > m.cross_attention_chunk:
        return 0.0
    schedule = layer_schedule(m)
    cross_ids = [i for kind, i in schedule if kind == "cross"]
    repeats = len(cross_ids) - len(set(cross_ids))
    c = input_channels(config)
    f = m.cross_qk_channels or c
    return 2.0 * repeats * 2 * big_m * c * f  # k and v: 2 x (M x C x F) MACs, 2 FLOPs each
