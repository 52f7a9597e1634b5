"""The Perceiver's building blocks, shared with the baselines: attention, MLP, blocks.

Initialisation follows the official code: VarianceScaling(1.0, fan-in, truncated
normal) kernels, zero biases, LayerNorm epsilon 1e-5 (Haiku's default).
"""

from __future__ import annotations

import jax
from flax import nnx

from suite.errors import ConfigError

LN_EPS = 1e-5  # Haiku's LayerNorm default, as in the official code


def linear(din: int, dout: int, *, rngs: nnx.Rngs, zero: bool = False) -> nnx.Linear:
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
        self.q = linear(q_dim, channels, rngs=rngs)
        self.k = linear(kv_dim, channels, rngs=rngs)
        self.v = linear(kv_dim, channels, rngs=rngs)
        self.out = linear(channels, out_channels, rngs=rngs)

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
        self.fc1 = linear(dim, dim * widening_factor, rngs=rngs)
        self.fc2 = linear(dim * widening_factor, dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.gelu(self.fc1(x)))


class Residual(nnx.Module):
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
        self.drop = Residual(dropout, rngs=rngs)

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
        self.drop = Residual(dropout, rngs=rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        h = self.ln(z)
        z = z + self.drop(self.attn(h, h))
        return z + self.drop(self.mlp(self.ln_mlp(z)))

