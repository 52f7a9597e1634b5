"""The Perceiver's building blocks, shared with the baselines: attention, MLP, blocks.

Initialisation follows the official code: VarianceScaling(1.0, fan-in, truncated
normal) kernels, zero biases, LayerNorm epsilon 1e-5 (Haiku's default).

Precision: ``dtype`` is the compute dtype of the matmuls (None: float32). Parameters
stay float32 (cast at use), LayerNorm statistics are computed in float32, and the
attention softmax runs in float32; the residual stream between blocks stays float32.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from suite.errors import ConfigError

COMPUTE_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}

LN_EPS = 1e-5  # Haiku's LayerNorm default, as in the official code


def linear(din: int, dout: int, *, rngs: nnx.Rngs, zero: bool = False,
           dtype: Any = None) -> nnx.Linear:
    # Official code: VarianceScaling(1.0), fan-in, truncated normal; biases zero.
    init = nnx.initializers.zeros_init() if zero else nnx.initializers.variance_scaling(
        1.0, "fan_in", "truncated_normal"
    )
    return nnx.Linear(din, dout, kernel_init=init, rngs=rngs, dtype=dtype)


def chunked_attention(q: jax.Array, k: jax.Array, v: jax.Array, chunk: int) -> jax.Array:
    """``softmax(q k^T / sqrt(c)) v`` over the keys in chunks of ``chunk`` with an online
    softmax (flash-attention style, pure JAX): the ``[B, H, N, M]`` logits never exist
    at once, and the backward pass recomputes each chunk's instead of storing them.

    ``q [B, N, H, c]``, ``k, v [B, M, H, c]`` -> ``[B, N, H, c]``. Logits, the running
    maximum and sums are float32 whatever the compute dtype.
    """
    b, n, h, c = q.shape
    m = k.shape[1]
    pad = -m % chunk
    k, v = (jnp.pad(t, ((0, 0), (0, pad), (0, 0), (0, 0))) for t in (k, v))
    kc = k.reshape(b, -1, chunk, h, c).swapaxes(0, 1)  # [chunks, B, K, H, c]
    vc = v.reshape(b, -1, chunk, h, c).swapaxes(0, 1)
    valid = (jnp.arange(m + pad) < m).reshape(-1, chunk)  # [chunks, K]
    q = q * jnp.asarray(1.0 / math.sqrt(c), q.dtype)

    @jax.checkpoint
    def step(carry, xs):
        top, total, acc = carry  # [B, H, N], [B, H, N], [B, N, H, c]
        kk, vv, ok = xs
        logits = jnp.einsum("bnhc,bkhc->bhnk", q, kk, preferred_element_type=jnp.float32)
        logits = jnp.where(ok, logits, -jnp.inf)
        new_top = jnp.maximum(top, logits.max(-1))
        rescale = jnp.exp(top - new_top)
        p = jnp.exp(logits - new_top[..., None])
        total = total * rescale + p.sum(-1)
        acc = acc * rescale.transpose(0, 2, 1)[..., None] + jnp.einsum(
            "bhnk,bkhc->bnhc", p.astype(vv.dtype), vv, preferred_element_type=jnp.float32)
        return (new_top, total, acc), None

    init = (jnp.full((b, h, n), -jnp.inf, jnp.float32), jnp.zeros((b, h, n), jnp.float32),
            jnp.zeros((b, n, h, c), jnp.float32))
    (_, total, acc), _ = jax.lax.scan(step, init, (kc, vc, valid))
    return (acc / total.transpose(0, 2, 1)[..., None]).astype(q.dtype)


class Attention(nnx.Module):
    """Multi-head QKV attention with input and output projections (all with biases).

    ``q_in [B, N, Dq]``, ``kv_in [B, M, Dkv]`` -> ``[B, N, out_channels]``; q/k/v are
    ``channels`` wide, split over ``num_heads``.
    """

    def __init__(
        self, q_dim: int, kv_dim: int, channels: int, out_channels: int, num_heads: int,
        *, rngs: nnx.Rngs, dtype: Any = None, chunk: int = 0,
    ):
        if channels % num_heads:
            raise ConfigError(f"attention width {channels} is not divisible by {num_heads} heads")
        self.num_heads, self.chunk = num_heads, chunk
        self.q = linear(q_dim, channels, rngs=rngs, dtype=dtype)
        self.k = linear(kv_dim, channels, rngs=rngs, dtype=dtype)
        self.v = linear(kv_dim, channels, rngs=rngs, dtype=dtype)
        self.out = linear(channels, out_channels, rngs=rngs, dtype=dtype)

    def __call__(self, q_in: jax.Array, kv_in: jax.Array) -> jax.Array:
        def heads(x: jax.Array) -> jax.Array:  # [B, T, H*c] -> [B, T, H, c]
            return x.reshape(*x.shape[:-1], self.num_heads, -1)

        q, k, v = heads(self.q(q_in)), heads(self.k(kv_in)), heads(self.v(kv_in))
        # softmax(q k^T / sqrt(c)) v, per head: 'bnhc,bmhc->bhnm' then 'bhnm,bmhc->bnhc'.
        if self.chunk and k.shape[1] > self.chunk:
            out = chunked_attention(q, k, v, self.chunk)
        else:
            out = jax.nn.dot_product_attention(q, k, v)
        return self.out(out.reshape(*out.shape[:-2], -1))


class MLP(nnx.Module):
    """Linear(D -> wD) -> GELU (tanh approximation, as jax.nn.gelu) -> Linear(wD -> D)."""

    def __init__(self, dim: int, widening_factor: int, *, rngs: nnx.Rngs, dtype: Any = None):
        self.fc1 = linear(dim, dim * widening_factor, rngs=rngs, dtype=dtype)
        self.fc2 = linear(dim * widening_factor, dim, rngs=rngs, dtype=dtype)

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
        widening_factor: int, dropout: float, *, rngs: nnx.Rngs, dtype: Any = None,
        chunk: int = 0,
    ):
        self.ln_q = nnx.LayerNorm(latent_dim, epsilon=LN_EPS, rngs=rngs)
        self.ln_kv = nnx.LayerNorm(input_dim, epsilon=LN_EPS, rngs=rngs)
        self.attn = Attention(latent_dim, input_dim, channels, latent_dim, num_heads, rngs=rngs,
                              dtype=dtype, chunk=chunk)
        self.ln_mlp = nnx.LayerNorm(latent_dim, epsilon=LN_EPS, rngs=rngs)
        self.mlp = MLP(latent_dim, widening_factor, rngs=rngs, dtype=dtype)
        self.drop = Residual(dropout, rngs=rngs)

    def __call__(self, z: jax.Array, x: jax.Array) -> jax.Array:
        z = z + self.drop(self.attn(self.ln_q(z), self.ln_kv(x)))  # query residual
        return z + self.drop(self.mlp(self.ln_mlp(z)))


class SelfAttend(nnx.Module):
    """GPT-2-style pre-LN self-attention layer on the latents, ``[B, N, D]``."""

    def __init__(
        self, dim: int, num_heads: int, widening_factor: int, dropout: float, *, rngs: nnx.Rngs,
        dtype: Any = None,
    ):
        self.ln = nnx.LayerNorm(dim, epsilon=LN_EPS, rngs=rngs)
        self.attn = Attention(dim, dim, dim, dim, num_heads, rngs=rngs, dtype=dtype)
        self.ln_mlp = nnx.LayerNorm(dim, epsilon=LN_EPS, rngs=rngs)
        self.mlp = MLP(dim, widening_factor, rngs=rngs, dtype=dtype)
        self.drop = Residual(dropout, rngs=rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        h = self.ln(z)
        z = z + self.drop(self.attn(h, h))
        return z + self.drop(self.mlp(self.ln_mlp(z)))

