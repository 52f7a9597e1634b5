"""The Perceiver (Jaegle et al., ICML 2021, v2) in Flax NNX.

Structure, as in the paper and the official code::

    z = latents                                   # [N, D], truncated normal
    for each repeat:                              # interleaved or all cross-attends first
        z = z + Attn(LN_q(z), LN_kv(x)); z = z + MLP(LN(z))   # cross-attend, F = C
        for j in range(self_attends_per_block):
            z = z + Attn(LN(z), LN(z));  z = z + MLP(LN(z))   # latent self-attention
    logits = Linear(mean_N(z))                    # average, then project; zero init

Weight sharing reuses module instances (never copies): with ``weight_sharing`` the
first cross-attend has its own weights, cross-attends 2..n share one set, and layer j
of the latent Transformer is one module called in every repeat.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from suite import extend
from suite.config import ModelConfig
from suite.errors import ConfigError
from suite.models.encodings import InputAdapter, MultimodalAdapter
from suite.models.layers import COMPUTE_DTYPES, CrossAttend, SelfAttend, linear


def layer_schedule(m: ModelConfig) -> list[tuple[str, int]]:
    """The forward order as ``("cross", i)`` / ``("self", j)`` steps over unique modules.

    Indices point into the unique cross-attend and self-attend lists, so the schedule
    *is* the weight-sharing map: a repeated index is the same module called again.
    """
    k, b, s = m.num_cross_attends, m.num_blocks, m.self_attends_per_block
    if m.weight_sharing:
        tied_rest = 0 if m.share_first_cross_attend else 1
        cross_ids = [0] + [tied_rest] * (k - 1)
        tower_ids = [list(range(s)) for _ in range(b)]
    else:
        cross_ids = list(range(k))
        tower_ids = [list(range(i * s, (i + 1) * s)) for i in range(b)]
    steps: list[tuple[str, int]] = []
    if m.cross_attend_placement == "start":
        steps += [("cross", c) for c in cross_ids]
        for tower in tower_ids:
            steps += [("self", j) for j in tower]
    else:
        every = m.num_blocks // m.num_cross_attends
        for block, tower in enumerate(tower_ids):
            if block % every == 0:
                steps.append(("cross", cross_ids[block // every]))
            steps += [("self", j) for j in tower]
    return steps


Step = tuple[str, int]


def segments(m: ModelConfig) -> list[tuple[tuple[Step, ...], int]]:
    """The schedule as ``(unit, repeats)``: consecutive identical units run-length encoded.

    Units are periods (a cross-attend and the self-attends up to the next one); a period
    that does not repeat is split into its cross-attend and its latent towers. With
    weight sharing, repeats 2..n are the same modules called again, so each run can be
    one scanned block: on ImageNet ``[(cross 0 + tower, 1), (cross 1 + tower, 7)]``.
    """
    periods: list[tuple[Step, ...]] = []
    for step in layer_schedule(m):
        if step[0] == "cross" or not periods:
            periods.append((step,))
        else:
            periods[-1] += (step,)
    units: list[tuple[Step, ...]] = []
    for period, repeats in _run_lengths(periods):
        if repeats > 1 or len(period) == 1:
            units += [period] * repeats
            continue
        s = max(1, m.self_attends_per_block)
        head = 1 if period[0][0] == "cross" else 0
        units += [period[:head]] if head else []
        units += [period[i:i + s] for i in range(head, len(period), s)]
    return _run_lengths(units)


def _run_lengths(units: list[tuple[Step, ...]]) -> list[tuple[tuple[Step, ...], int]]:
    merged: list[tuple[tuple[Step, ...], int]] = []
    for unit in units:
        if merged and merged[-1][0] == unit:
            merged[-1] = (unit, merged[-1][1] + 1)
        else:
            merged.append((unit, 1))
    return merged


class Perceiver(nnx.Module):
    """``inputs [B, *index_dims, C]`` (+ optional positions / index) -> ``logits [B, classes]``.

    Its parts are the registered variants ``model.cross_attention``, ``model.self_attention``,
    ``model.mlp``, ``model.position_encoding`` and ``model.latent_init`` (``suite.extend``).
    """

    def __init__(self, knobs: Any, m: ModelConfig, inputs: extend.Inputs, *, rngs: nnx.Rngs):
        if inputs.multimodal:
            self.adapter = MultimodalAdapter(m, inputs.layouts, rngs=rngs)
        else:
            patch = inputs.layouts[0].patch if inputs.layouts else None
            self.adapter = InputAdapter(m, inputs.index_dims, inputs.channels, inputs.pos_dim,
                                        rngs=rngs, patch=patch)
        self.multimodal = isinstance(self.adapter, MultimodalAdapter)
        c = self.adapter.out_channels
        f = m.cross_qk_channels or c  # paper: F = C (261 on ImageNet)
        if f % m.cross_heads:
            raise ConfigError(
                f"model.cross_heads={m.cross_heads} must divide the cross-attention width {f} "
                f"(model.cross_qk_channels, default: input channels C)"
            )
        self.standard_cross = m.cross_attention == "standard"  # streams; maps by chunks
        if m.cross_attention_chunk and not self.standard_cross:
            raise ConfigError(f"model.cross_attention_chunk={m.cross_attention_chunk} streams the "
                              f"standard cross-attention, not model.cross_attention="
                              f"{m.cross_attention!r}; set it to 0")
        init, cross, tower, mlp = (part(m, name) for name in (
            "latent_init", "cross_attention", "self_attention", "mlp"))
        self.latents = nnx.Param(init(rngs.params(), (m.num_latents, m.latent_dim)))
        self.schedule = tuple(layer_schedule(m))
        self.segments = tuple(segments(m))
        self.scan = m.scan_repeats and m.dropout == 0  # scanned repeats draw no dropout masks
        self.remat = m.remat
        n_cross = 1 + max(i for kind, i in self.schedule if kind == "cross")
        n_self = 1 + max((i for kind, i in self.schedule if kind == "self"), default=-1)
        dtype = COMPUTE_DTYPES[m.precision]
        self.cross = nnx.List([
            CrossAttend(m.latent_dim, c, f, m.cross_heads, m.widening_factor, m.dropout,
                        rngs=rngs, dtype=dtype, chunk=m.cross_attention_chunk,
                        attention=cross, mlp=mlp)
            for _ in range(n_cross)
        ])
        self.self_attends = nnx.List([
            SelfAttend(m.latent_dim, m.self_heads, m.widening_factor, m.dropout, rngs=rngs,
                       dtype=dtype, attention=tower, mlp=mlp)
            for _ in range(n_self)
        ])
        if m.decoder == "query":  # Perceiver IO: a learned query reads the latents
            self.decoder = QueryDecoder(m, inputs.num_classes, rngs=rngs, dtype=dtype)
        else:  # average the latents, then a zero-initialised linear layer ([DM])
            self.head = linear(m.latent_dim, inputs.num_classes, rngs=rngs, zero=True)

    def __call__(
        self, inputs: jax.Array | dict[str, jax.Array], positions: jax.Array | None = None,
        index: jax.Array | None = None, keep: dict[str, jax.Array] | None = None,
    ) -> jax.Array:
        """``inputs [B, *index_dims, C]`` (or ``{modality: [B, *dims, C]}``); ``keep``:
        ``{modality: [B]}`` of the examples whose modality is fed (modality dropout)."""
        x, mask = self.encode_inputs(inputs, positions, index, keep)
        z = jnp.broadcast_to(self.latents[...], (x.shape[0], *self.latents.shape)).astype(x.dtype)
        segs = list(self.segments)
        if self.scan and _first_block_folds(segs):  # cross 0 + tower, then (cross 1 + tower)
            z = self._scanned_with_first(segs[0][0][0][1], segs[2][0], segs[2][1], z, x, mask)
            segs = segs[3:]
        for unit, repeats in segs:
            if self.scan and repeats > 1:
                z = self._scanned(unit, repeats, z, x, mask)
            else:
                for _ in range(repeats):
                    z = self._unit(unit, z, x, mask)
        if hasattr(self, "decoder"):
            return self.decoder(z)
        return self.head(z.mean(axis=1))  # average, then project (paper v2)

    def encode_inputs(self, inputs, positions=None, index=None, keep=None
                      ) -> tuple[jax.Array, jax.Array | None]:
        """The input array ``[B, M, C]`` with position features, and its mask (or None)."""
        if self.multimodal:
            return self.adapter(inputs, keep)
        return self.adapter(inputs, positions, index), None

    def _modules(self, unit: tuple[Step, ...]) -> tuple[nnx.Module, ...]:
        return tuple(self.cross[i] if kind == "cross" else self.self_attends[i]
                     for kind, i in unit)

    def _unit(self, unit: tuple[Step, ...], z: jax.Array, x: jax.Array,
              mask: jax.Array | None = None) -> jax.Array:
        """One unit, its modules called in order (each rematerialised if ``remat``)."""
        for (kind, _), module in zip(unit, self._modules(unit), strict=True):
            if self.remat:
                graphdef, state = nnx.split(module)
                z = _checkpointed(graphdef, kind)(state, z, x, mask)
            else:
                z = module(z, x, mask=mask) if kind == "cross" else module(z)
        return z

    def _scanned(self, unit: tuple[Step, ...], repeats: int, z: jax.Array,
                 x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """``repeats`` calls of the same modules as one ``lax.scan``: compiled once. A
        cross-attend's keys and values are the same in every repeat (same weights, same
        inputs): they are computed once, before the scan, as the unrolled program's
        common-subexpression elimination does."""
        graphdef, state = nnx.split(self._modules(unit))
        kv = _hoisted(self._modules(unit)[0], x) if unit[0][0] == "cross" else None

        def body(z, _):
            for (kind, _i), module in zip(unit, nnx.merge(graphdef, state), strict=True):
                z = module(z, x, kv, mask) if kind == "cross" else module(z)
            return z, None

        z, _ = jax.lax.scan(jax.checkpoint(body) if self.remat else body, z, None,
                            length=repeats)
        return z


    def _scanned_with_first(self, first: int, unit: tuple[Step, ...], repeats: int,
                            z: jax.Array, x: jax.Array, mask: jax.Array | None = None
                            ) -> jax.Array:
        """The first block too in the scan: its cross-attend's weights are stacked with the
        shared one's and picked by the iteration index, so the whole latent stack is one
        compiled block (the first cross-attend keeps its own weights, as the paper's)."""
        graphdef, own = nnx.split(self.cross[first])
        _, shared = nnx.split(self.cross[unit[0][1]])
        stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), own, shared)
        tower_def, tower = nnx.split(self._modules(unit[1:]))
        kv = _hoisted(self.cross[first], x)  # both cross-attends' keys and values, once
        if kv is not None:
            kv = jax.tree.map(lambda a, b: jnp.stack([a, b]),
                              kv, _hoisted(self.cross[unit[0][1]], x))

        def body(z, i):
            picked = jax.tree.map(lambda w: w[jnp.minimum(i, 1)], stacked)
            kv_i = None if kv is None else jax.tree.map(lambda t: t[jnp.minimum(i, 1)], kv)
            z = nnx.merge(graphdef, picked)(z, x, kv_i, mask)
            for module in nnx.merge(tower_def, tower):
                z = module(z)
            return z, None

        z, _ = jax.lax.scan(jax.checkpoint(body) if self.remat else body, z,
                            jnp.arange(repeats + 1))
        return z


class QueryDecoder(nnx.Module):
    """Perceiver IO's classification decoder ([DM] ``ClassificationDecoder`` ->
    ``BasicDecoder``): a trainable query array ``[O, E]`` cross-attends to the latents
    ``z [B, N, D]`` (LayerNorms on both, q/k/v width D, ``decoder_heads`` heads, output
    width E, the query residual optional, then LayerNorm + MLP + residual), and a linear
    layer maps the first query's output to the logits ``[B, classes]``."""

    def __init__(self, m: ModelConfig, num_classes: int, *, rngs: nnx.Rngs, dtype=None):
        e = m.decoder_query_dim or m.latent_dim
        init = nnx.initializers.truncated_normal(stddev=m.decoder_init_scale, lower=-2.0,
                                                 upper=2.0)
        self.query = nnx.Param(init(rngs.params(), (m.decoder_queries, e)))
        if m.latent_dim % m.decoder_heads:
            raise ConfigError(f"model.decoder_heads={m.decoder_heads} must divide the "
                              f"decoder's q/k/v width, model.latent_dim={m.latent_dim}")
        self.attend = CrossAttend(e, m.latent_dim, m.latent_dim, m.decoder_heads, 1, 0.0,
                                  rngs=rngs, dtype=dtype,
                                  query_residual=m.decoder_query_residual,
                                  gelu_approximate=m.gelu_approximate)
        self.output = linear(e, num_classes, rngs=rngs)  # [DM] BasicDecoder: default init

    def __call__(self, z: jax.Array) -> jax.Array:
        q = jnp.broadcast_to(self.query[...], (z.shape[0], *self.query.shape)).astype(z.dtype)
        return self.output(self.attend(q, z)[:, 0])  # 'bod' -> the first query 'bd'


def part(m: ModelConfig, name: str) -> Any:
    """The registered variant ``m`` chooses for part ``name`` (``suite.extend``), with its
    knobs and ``m`` bound: what is left are the contract's keyword arguments."""
    return functools.partial(extend.get(name, getattr(m, name)).obj,
                             extend.knobs_of(m, name), m)


def _hoisted(cross: CrossAttend, x: jax.Array) -> Any:
    """A cross-attend's keys and values of ``x``, or None where it streams the inputs a
    chunk at a time (``model.cross_attention_chunk``: holding them whole is what that
    avoids, so each repeat recomputes them chunk by chunk) or its attention variant has
    no ``keys_values``."""
    if cross.streams(x) or not hasattr(cross.attn, "keys_values"):
        return None
    return cross.keys_values(x)


def _first_block_folds(segs: list[tuple[tuple[Step, ...], int]]) -> bool:
    """``[(cross a), (tower), (cross b + the same tower) x n, ...]``: foldable into one scan."""
    if len(segs) < 3 or segs[0][1] != 1 or segs[1][1] != 1 or len(segs[0][0]) != 1:
        return False
    (first,), tower = segs[0][0], segs[1][0]
    unit = segs[2][0]
    return first[0] == "cross" and unit[0][0] == "cross" and unit[1:] == tower and len(tower) > 0


def _checkpointed(graphdef: nnx.GraphDef, kind: str):
    """A block as a pure function of its state, recomputed in the backward pass."""
    def run(state, z, x, mask):
        module = nnx.merge(graphdef, state)
        return module(z, x, mask=mask) if kind == "cross" else module(z)

    return jax.checkpoint(run)

