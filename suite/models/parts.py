"""The Perceiver's standard parts in ``suite.extend``'s contracts: each the module of
``layers`` it always was (same parameters, same numbers), built from ``(knobs, m, ...)``
and counting its own FLOPs. A variant of yours is a class like these.

FLOPs are forward FLOPs per example, multiplies and adds counted apart (2 x MACs), as in
the paper; softmax, LayerNorm and GELU are left out.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from suite.config import ModelConfig
from suite.models.layers import MLP, Attention, SelfAttention


class StandardCrossAttention(Attention):
    """``model.cross_attention='standard'``: softmax(q k^T / sqrt(c)) v over the inputs,
    with q/k/v of ``qk_channels`` split over ``num_heads`` (paper: F = C, 1 head)."""

    def __init__(self, knobs: Any, m: ModelConfig, *, q_dim: int, kv_dim: int,
                 qk_channels: int, out_dim: int, num_heads: int, rngs: nnx.Rngs,
                 dtype: Any = None):
        super().__init__(q_dim, kv_dim, qk_channels, out_dim, num_heads, rngs=rngs, dtype=dtype)

    @classmethod
    def flops(cls, knobs: Any, m: ModelConfig, *, queries: int, inputs: int, q_dim: int,
              kv_dim: int, qk_channels: int, out_dim: int, num_heads: int) -> float:
        """q: N D F; k and v: 2 M C F; logits and weighted sum: 2 N M F; output: N F D."""
        n, big_m, f = queries, inputs, qk_channels
        return 2.0 * (n * q_dim * f + 2 * big_m * kv_dim * f + 2 * n * big_m * f
                      + n * f * out_dim)


class StandardSelfAttention(SelfAttention):
    """``model.self_attention='standard'``: multi-head attention of the latents to
    themselves, q/k/v as wide as the latents."""

    def __init__(self, knobs: Any, m: ModelConfig, *, dim: int, num_heads: int,
                 rngs: nnx.Rngs, dtype: Any = None):
        super().__init__(dim, num_heads, rngs=rngs, dtype=dtype)

    @classmethod
    def flops(cls, knobs: Any, m: ModelConfig, *, tokens: int, dim: int,
              num_heads: int) -> float:
        """q, k, v and output projections: 4 N D^2; logits and weighted sum: 2 N^2 D."""
        return 2.0 * (4 * tokens * dim**2 + 2 * tokens**2 * dim)


class StandardMLP(MLP):
    """``model.mlp='standard'``: Linear(D -> wD) -> GELU -> Linear(wD -> D), the GELU's
    form from ``model.gelu_approximate``."""

    def __init__(self, knobs: Any, m: ModelConfig, *, dim: int, widening_factor: int,
                 rngs: nnx.Rngs, dtype: Any = None):
        super().__init__(dim, widening_factor, rngs=rngs, dtype=dtype,
                         approximate=m.gelu_approximate)

    @classmethod
    def flops(cls, knobs: Any, m: ModelConfig, *, tokens: int, dim: int,
              widening_factor: int) -> float:
        """Two linear layers: 2 w N D^2."""
        return 2.0 * (2 * widening_factor * tokens * dim**2)


def truncated_normal_latents(knobs: Any, m: ModelConfig, key: jax.Array,
                             shape: tuple[int, int]) -> jax.Array:
    """``model.latent_init='truncated_normal'``: std ``model.latent_init_scale``, cut at 2
    standard deviations (the official code's)."""
    init = nnx.initializers.truncated_normal(stddev=m.latent_init_scale, lower=-2.0, upper=2.0)
    return init(key, shape)
