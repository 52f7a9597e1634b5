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

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from suite import encodings
from suite.config import Config, ModelConfig
from suite.errors import ConfigError

LN_EPS = 1e-5  # Haiku's LayerNorm default, as in the official code


def _linear(din: int, dout: int, *, rngs: nnx.Rngs, zero: bool = False) -> nnx.Linear:
    # Official code: VarianceScaling(1.0), fan-in, truncated normal; biases zero.
    init = nnx.initializers.zeros_init() if zero else nnx.initializers.variance_scaling(
        1.0, "fan_in", "truncated_normal"
    )
    return nnx.Linear(din, dout, kernel_init=init, rngs=rngs)


class Attention(nnx.Module):
    """Multi-head QKV attention with input and output projections (all with biases).

    ``q_in [B, N, Dq]``, ``kv_in [B, M, Dkv]`` -> ``[B, N, out_channels]``; q/k/v are
    ``channels`` wide, split over ``num_heads``.
    """

    def __init__(
        self, q_dim: int, kv_dim: int, channels: int, out_channels: int, num_heads: int,
        *, rngs: nnx.Rngs,
    ):
        if channels % num_heads:
            raise ConfigError(f"attention width {channels} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q = _linear(q_dim, channels, rngs=rngs)
        self.k = _linear(kv_dim, channels, rngs=rngs)
        self.v = _linear(kv_dim, channels, rngs=rngs)
        self.out = _linear(channels, out_channels, rngs=rngs)

    def __call__(self, q_in: jax.Array, kv_in: jax.Array) -> jax.Array:
        def heads(x: jax.Array) -> jax.Array:  # [B, T, H*c] -> [B, T, H, c]
            return x.reshape(*x.shape[:-1], self.num_heads, -1)

        q, k, v = heads(self.q(q_in)), heads(self.k(kv_in)), heads(self.v(kv_in))
        # softmax(q k^T / sqrt(c)) v, per head: 'bnhc,bmhc->bhnm' then 'bhnm,bmhc->bnhc'.
        out = jax.nn.dot_product_attention(q, k, v)
        return self.out(out.reshape(*out.shape[:-2], -1))


class MLP(nnx.Module):
    """Linear(D -> wD) -> GELU (tanh approximation, as jax.nn.gelu) -> Linear(wD -> D)."""

    def __init__(self, dim: int, widening_factor: int, *, rngs: nnx.Rngs):
        self.fc1 = _linear(dim, dim * widening_factor, rngs=rngs)
        self.fc2 = _linear(dim * widening_factor, dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.gelu(self.fc1(x)))


class _Residual(nnx.Module):
    """Dropout on a residual branch (identity when the rate is 0, the paper's setting)."""

    def __init__(self, rate: float, *, rngs: nnx.Rngs):
        self.dropout = nnx.Dropout(rate, rngs=rngs) if rate > 0 else None

    def __call__(self, x: jax.Array) -> jax.Array:
        return x if self.dropout is None else self.dropout(x)


class CrossAttend(nnx.Module):
    """Latents ``z [B, N, D]`` attend to inputs ``x [B, M, C]``; separate LNs for q and kv."""

    def __init__(
        self, latent_dim: int, input_dim: int, channels: int, num_heads: int,
        widening_factor: int, dropout: float, *, rngs: nnx.Rngs,
    ):
        self.ln_q = nnx.LayerNorm(latent_dim, epsilon=LN_EPS, rngs=rngs)
        self.ln_kv = nnx.LayerNorm(input_dim, epsilon=LN_EPS, rngs=rngs)
        self.attn = Attention(latent_dim, input_dim, channels, latent_dim, num_heads, rngs=rngs)
        self.ln_mlp = nnx.LayerNorm(latent_dim, epsilon=LN_EPS, rngs=rngs)
        self.mlp = MLP(latent_dim, widening_factor, rngs=rngs)
        self.drop = _Residual(dropout, rngs=rngs)

    def __call__(self, z: jax.Array, x: jax.Array) -> jax.Array:
        z = z + self.drop(self.attn(self.ln_q(z), self.ln_kv(x)))  # query residual
        return z + self.drop(self.mlp(self.ln_mlp(z)))


class SelfAttend(nnx.Module):
    """GPT-2-style pre-LN self-attention layer on the latents, ``[B, N, D]``."""

    def __init__(
        self, dim: int, num_heads: int, widening_factor: int, dropout: float, *, rngs: nnx.Rngs
    ):
        self.ln = nnx.LayerNorm(dim, epsilon=LN_EPS, rngs=rngs)
        self.attn = Attention(dim, dim, dim, dim, num_heads, rngs=rngs)
        self.ln_mlp = nnx.LayerNorm(dim, epsilon=LN_EPS, rngs=rngs)
        self.mlp = MLP(dim, widening_factor, rngs=rngs)
        self.drop = _Residual(dropout, rngs=rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        h = self.ln(z)
        z = z + self.drop(self.attn(h, h))
        return z + self.drop(self.mlp(self.ln_mlp(z)))


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


class InputAdapter(nnx.Module):
    """Flattens inputs to ``[B, M, C_in]`` and attaches position encodings.

    Positions come, in order of precedence, from explicit coordinates
    (``positions [B, M, p]`` in [-1, 1], e.g. point clouds), from grid item indices
    (``index [B, M]`` ints, e.g. a fixed permutation of pixels: each item keeps the
    encoding of where it came from), or from the input grid itself.
    """

    def __init__(
        self, m: ModelConfig, index_dims: Sequence[int], channels: int, pos_dim: int | None,
        *, rngs: nnx.Rngs,
    ):
        self.kind = m.position_encoding
        self.combine = m.position_combine
        self.index_dims = tuple(index_dims)
        self.num_items = math.prod(index_dims)
        self.explicit = pos_dim is not None
        p = pos_dim if pos_dim is not None else len(index_dims)
        self.bands = m.fourier_bands
        self.max_resolution = tuple(m.max_resolution or tuple(float(n) for n in index_dims))
        self.concat_pos, self.sine_only = m.concat_pos, m.sine_only
        learned, project = None, None  # each attribute is assigned once (NNX pytree rule)
        if self.kind == "fourier":
            pos_width = encodings.fourier_width(
                p, self.bands, concat_pos=self.concat_pos, sine_only=self.sine_only
            )
            if self.combine == "add":  # project the features to the input width, then add
                project = _linear(pos_width, channels, rngs=rngs)
        elif self.kind == "learned":
            if self.explicit:
                raise ConfigError(
                    "model.position_encoding='learned' needs a grid task; "
                    "point clouds have no fixed item order"
                )
            pos_width = channels if self.combine == "add" else m.learned_pos_dim
            learned = encodings.LearnedPositions(
                self.num_items, pos_width, m.learned_pos_init_scale, rngs=rngs
            )
        else:
            pos_width = 0
        self.learned, self.project = learned, project
        self.out_channels = channels + (pos_width if self.combine == "concat" else 0)

    def _grid_features(self) -> np.ndarray:
        return encodings.fourier_features(
            encodings.grid_positions(self.index_dims), self.bands, self.max_resolution,
            concat_pos=self.concat_pos, sine_only=self.sine_only,
        )

    def __call__(
        self, inputs: jax.Array, positions: jax.Array | None = None, index: jax.Array | None = None
    ) -> jax.Array:
        batch = inputs.shape[0]
        x = inputs.reshape(batch, -1, inputs.shape[-1])  # [B, M, C_in]
        if self.kind == "none":
            return x
        if self.kind == "fourier":
            if positions is not None:
                pe = encodings.fourier_features(
                    positions, self.bands, self.max_resolution,
                    concat_pos=self.concat_pos, sine_only=self.sine_only,
                )
            elif self.explicit:
                raise ValueError("this task has explicit positions: pass positions=[B, M, p]")
            else:
                pe = jnp.asarray(self._grid_features())  # constant, folded by XLA
                pe = pe[index] if index is not None else pe
            if self.project is not None:
                pe = self.project(pe)
        else:
            pe = self.learned(index)
        pe = jnp.broadcast_to(pe, (batch, *pe.shape[-2:])) if pe.ndim == 2 else pe
        pe = pe.astype(x.dtype)
        return jnp.concatenate([x, pe], axis=-1) if self.combine == "concat" else x + pe


class Perceiver(nnx.Module):
    """``inputs [B, *index_dims, C]`` (+ optional positions / index) -> ``logits [B, classes]``."""

    def __init__(
        self, m: ModelConfig, index_dims: Sequence[int], channels: int, num_classes: int,
        pos_dim: int | None = None, *, rngs: nnx.Rngs,
    ):
        self.adapter = InputAdapter(m, index_dims, channels, pos_dim, rngs=rngs)
        c = self.adapter.out_channels
        f = m.cross_qk_channels or c  # paper: F = C (261 on ImageNet)
        if f % m.cross_heads:
            raise ConfigError(
                f"model.cross_heads={m.cross_heads} must divide the cross-attention width {f} "
                f"(model.cross_qk_channels, default: input channels C)"
            )
        init = nnx.initializers.truncated_normal(stddev=m.latent_init_scale, lower=-2.0, upper=2.0)
        self.latents = nnx.Param(init(rngs.params(), (m.num_latents, m.latent_dim)))
        self.schedule = tuple(layer_schedule(m))
        n_cross = 1 + max(i for kind, i in self.schedule if kind == "cross")
        n_self = 1 + max((i for kind, i in self.schedule if kind == "self"), default=-1)
        self.cross = nnx.List([
            CrossAttend(m.latent_dim, c, f, m.cross_heads, m.widening_factor, m.dropout, rngs=rngs)
            for _ in range(n_cross)
        ])
        self.self_attends = nnx.List([
            SelfAttend(m.latent_dim, m.self_heads, m.widening_factor, m.dropout, rngs=rngs)
            for _ in range(n_self)
        ])
        self.head = _linear(m.latent_dim, num_classes, rngs=rngs, zero=True)  # [DM]: zero init

    def __call__(
        self, inputs: jax.Array, positions: jax.Array | None = None, index: jax.Array | None = None
    ) -> jax.Array:
        x = self.adapter(inputs, positions, index)  # [B, M, C]
        z = jnp.broadcast_to(self.latents[...], (x.shape[0], *self.latents.shape)).astype(x.dtype)
        for kind, i in self.schedule:
            z = self.cross[i](z, x) if kind == "cross" else self.self_attends[i](z)
        return self.head(z.mean(axis=1))  # average, then project (paper v2)


def build_model(config: Config, *, rngs: nnx.Rngs) -> nnx.Module:
    """The model ``config.model.kind`` names, sized for ``config.data``'s inputs."""
    from suite.baselines import BASELINES

    d = config.data
    cls = Perceiver if config.model.kind == "perceiver" else BASELINES.get(config.model.kind)
    if cls is None:
        raise ConfigError(f"model.kind={config.model.kind!r} is not available")
    return cls(config.model, d.index_dims, d.channels, d.num_classes, d.pos_dim, rngs=rngs)


def abstract_model(config: Config) -> nnx.Module:
    """The model with shapes only (no weights allocated): for counting and compiling."""
    return nnx.eval_shape(lambda: build_model(config, rngs=nnx.Rngs(0)))


def count_params(model: nnx.Module) -> int:
    """Unique parameters: a module called several times counts once."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def example_inputs(config: Config, batch: int) -> dict[str, jax.ShapeDtypeStruct]:
    """Abstract model inputs for ``batch`` examples (keyword arguments of the model)."""
    d = config.data
    shapes = {"inputs": jax.ShapeDtypeStruct((batch, *d.index_dims, d.channels), jnp.float32)}
    if d.pos_dim is not None:
        m = math.prod(d.index_dims)
        shapes["positions"] = jax.ShapeDtypeStruct((batch, m, d.pos_dim), jnp.float32)
    return shapes
