"""Compute cost: the paper's analytic FLOPs and XLA's cost analysis on abstract shapes.

Convention (paper, App. B): multiplies and adds counted separately, so FLOPs = 2 x MACs.
Softmax, LayerNorm and GELU are ignored, as in the paper's figures.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import jax
from flax import nnx

from suite import extend
from suite.config import Config, ModelConfig
from suite.config.layout import Layout, layouts
from suite.models import xla_cost
from suite.models.baselines import convnet_flops, transformer_flops
from suite.models.encodings import InputAdapter
from suite.models.perceiver import layer_schedule
from suite.models.registry import abstract_model, example_inputs


class NoAnalyticCount(Exception):
    """A model or part chosen gives no analytic count; the message says which."""


def input_channels(config: Config) -> int:
    """C: input channels after position features are attached (261 on ImageNet); with
    several modalities, the common width they are padded to."""
    widths = [layout_channels(config, lay) for lay in layouts(config)]
    if config.data.modalities:
        return max(widths) + config.model.modality_padding
    return widths[0]


@functools.lru_cache(maxsize=256)
def layout_channels(config: Config, lay: Layout) -> int:
    """One input's channels with its position features (patches: on the patch grid), as
    the model's input adapter makes them (built on abstract shapes: no weights)."""
    d = config.data
    modality = lay.name if d.modalities else None
    pos_dim = None if modality else d.pos_dim
    adapter = nnx.eval_shape(lambda: InputAdapter(
        config.model, lay.dims, lay.channels, pos_dim, rngs=nnx.Rngs(0), patch=lay.patch,
        modality=modality))
    return adapter.out_channels


def input_items(config: Config) -> int:
    """M: the items the cross-attends read (patches count once; modalities add up)."""
    return sum(lay.items for lay in layouts(config))


def part_flops(m: ModelConfig, part: str, **shape: Any) -> float:
    """The forward FLOPs per example of the variant ``m`` chooses for ``part``, from its
    own count (``suite.extend``'s contracts); NoAnalyticCount where it gives none."""
    entry = extend.get(part, getattr(m, part))
    count = entry.flops
    if count is None:
        raise NoAnalyticCount(f"model.{part}={entry.name!r} ({entry.where}) gives no "
                              "analytic FLOP count")
    return float(count(extend.knobs_of(m, part), m, **shape))


def position_flops(config: Config) -> float:
    """The position encoding's FLOPs over every input (the Fourier projection under
    ``model.position_combine='add'``)."""
    d = config.data
    return sum(part_flops(config.model, "position_encoding", grid=lay.grid,
                          channels=lay.item_channels,
                          pos_dim=None if d.modalities else d.pos_dim,
                          modality=lay.name if d.modalities else None)
               for lay in layouts(config))


def analytic_flops(config: Config) -> dict[str, float]:
    """Forward FLOPs per example by module: the chosen model's own count
    (``perceiver_flops``, ``baseline_flops``, or a registered model's ``flops``).

    Where the model, or a part it uses, gives none, XLA's count of the compiled forward
    pass stands in (``{"xla": f, "total": f}``); :func:`flops_source` says which.
    """
    counted, _ = _counted(config)
    if counted is None:
        total = _xla_total(config)
        return {"xla": total, "total": total}
    return counted


def flops_source(config: Config) -> str | None:
    """None where :func:`analytic_flops` is analytic, else why XLA's count stands in."""
    return _counted(config)[1]


def _counted(config: Config) -> tuple[dict[str, float] | None, str | None]:
    m = config.model
    entry = extend.get("model", m.kind)
    if entry.flops is None:
        return None, f"model.kind={m.kind!r} ({entry.where}) gives no analytic FLOP count"
    try:
        out = entry.flops(extend.knobs_of(m, "model"), config)
    except NoAnalyticCount as e:
        return None, str(e)
    out = dict(out) if isinstance(out, dict) else {m.kind: float(out)}
    out.setdefault("total", sum(out.values()))
    return out, None


@functools.lru_cache(maxsize=64)
def _xla_total(config: Config) -> float:
    return float(xla_forward_flops(config)["flops"])


def perceiver_flops(knobs: Any, config: Config) -> dict[str, float]:
    """The Perceiver's forward FLOPs per example, from the formulas in the spec (section 5)
    as its parts count them (``suite.models.parts``):

    cross-attend MACs = N D F + 2 M C F + 2 N M F + N F D + 2 w N D^2
    self-attend MACs  = 4 N D^2 + 2 N^2 D + 2 w N D^2
    query decoder     = the cross-attend with O queries of E over N latents of D, F = D,
                        w = 1 (Perceiver IO), then E x classes from the first query
    """
    m, d = config.model, config.data
    big_m, c = input_items(config), input_channels(config)
    n, dim, w = m.num_latents, m.latent_dim, m.widening_factor
    mlp = part_flops(m, "mlp", tokens=n, dim=dim, widening_factor=w)
    cross = mlp + part_flops(m, "cross_attention", queries=n, inputs=big_m, q_dim=dim,
                             kv_dim=c, qk_channels=m.cross_qk_channels or c, out_dim=dim,
                             num_heads=m.cross_heads)
    tower = mlp + part_flops(m, "self_attention", tokens=n, dim=dim, num_heads=m.self_heads)
    schedule = layer_schedule(m)
    n_cross = sum(1 for kind, _ in schedule if kind == "cross")
    n_self = len(schedule) - n_cross
    head_macs = dim * d.num_classes
    decoder_macs = 0
    if m.decoder == "query":  # the same cross-attend: O queries of E over N latents of D
        o, e = m.decoder_queries, m.decoder_query_dim or dim
        decoder_macs = o * e * dim + 2 * n * dim * dim + 2 * o * n * dim + o * dim * e \
            + 2 * o * e**2
        head_macs = e * d.num_classes  # from the first query
    out = {
        "cross_attend": cross * n_cross,
        "self_attend": tower * n_self,
        "decoder": 2.0 * decoder_macs,
        "head": 2.0 * head_macs,
        "position": position_flops(config),
    }
    out["total"] = sum(out.values())
    return out


def baseline_flops(knobs: Any, config: Config) -> dict[str, float]:
    """The Transformer's, ViT's or ConvNet's forward FLOPs per example."""
    m, d = config.model, config.data
    items, channels = input_items(config), input_channels(config)
    if m.kind == "transformer":
        body = transformer_flops(m, items, channels, d.num_classes)
    elif m.kind == "vit":
        patch = m.patch_size**2
        body = transformer_flops(m, items // patch, channels * patch, d.num_classes)
    else:
        body = convnet_flops(m, d.index_dims, channels, d.num_classes)
    pos = position_flops(config)
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
    of twice its cost), the convention of the scaling-law papers, times the batch (XLA's
    forward count where no analytic one exists: :func:`flops_source`)."""
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
    if m.kind != "perceiver" or m.cross_attention != "standard":
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
