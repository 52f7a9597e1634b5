"""The Perceiver's building blocks, shared with the baselines: attention, MLP, blocks.

Initialisation follows the official code: VarianceScaling(1.0, fan-in, truncated
normal) kernels, zero biases, LayerNorm epsilon 1e-5 (Haiku's default).

Precision: ``dtype`` is the compute dtype of the matmuls (None: float32). Parameters
stay float32 (cast at use), LayerNorm statistics are computed in float32, and the
attention softmax runs in float32; the residual stream between blocks stays float32.
Low-precision projections and attention accumulate in float32 (``mixed_dense``,
``mixed_attention``); the chunked cross-attention keeps its own float32 online softmax.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from suite.errors import ConfigError

COMPUTE_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}

LN_EPS = 1e-5  # Haiku's LayerNorm default, as in the official code


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def mixed_dense(x: jax.Array, kernel: jax.Array, dtype: Any, x_dtype: Any) -> jax.Array:
    """``x @ kernel`` over the last axis of ``x``, operands cast to ``dtype`` (bfloat16),
    accumulated and returned in float32; ``x_dtype`` is the dtype of ``x`` (for its
    gradient).

    The backward pass casts the incoming gradient to ``dtype`` too and writes both
    gradient matmuls as einsums over the original axes. XLA:CPU upcasts to float32 a
    bfloat16 matmul with a bfloat16 result (``nnx.Linear``'s), one that mixes a float32
    cotangent with bfloat16 operands (autodiff of this forward pass) and one that
    contracts a transposed 2-D operand: the bfloat16 model ran slower than the float32
    one. This way every matmul of the step runs on bfloat16 units (AVX512-BF16 on CPU,
    tensor cores on GPU).
    """
    return _mixed_dense_fwd(x, kernel, dtype, x_dtype)[0]


def _mixed_dense_fwd(x, kernel, dtype, x_dtype):
    xc, kc = x.astype(dtype), kernel.astype(dtype)
    return jnp.einsum("...k,kn->...n", xc, kc, preferred_element_type=jnp.float32), (xc, kc)


def _mixed_dense_bwd(dtype, x_dtype, res, dy):
    xc, kc = res
    dy = dy.astype(dtype)
    dx = jnp.einsum("...n,kn->...k", dy, kc, preferred_element_type=jnp.float32)
    dk = jnp.einsum("...k,...n->kn", xc, dy, preferred_element_type=jnp.float32)
    return dx.astype(x_dtype), dk


mixed_dense.defvjp(_mixed_dense_fwd, _mixed_dense_bwd)


def _heads_first(t: jax.Array) -> jax.Array:
    """``[B, T, H, c]`` -> ``[B*H, T, c]``."""
    b, n, h, c = t.shape
    return t.transpose(0, 2, 1, 3).reshape(b * h, n, c)


def _heads_back(t: jax.Array, b: int) -> jax.Array:
    """``[B*H, T, c]`` -> ``[B, T, H, c]``."""
    x, n, c = t.shape
    return t.reshape(b, x // b, n, c).transpose(0, 2, 1, 3)


def masked_bias(mask: jax.Array | None) -> jax.Array | None:
    """A key mask ``[B, M]`` (True: attend) as the logits' additive bias ``[B, 1, M]``."""
    return None if mask is None else jnp.where(mask, 0.0, -1e30)[:, None, :].astype(jnp.float32)


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def mixed_attention(q: jax.Array, k: jax.Array, v: jax.Array, dtype: Any,
                    bias: jax.Array | None = None) -> jax.Array:
    """``softmax(q k^T / sqrt(c)) v`` per head, with matmuls in ``dtype`` (bfloat16)
    accumulated in float32 and the softmax in float32; ``q [B, N, H, c]``,
    ``k, v [B, M, H, c]`` -> ``[B, N, H, c]`` in ``q``'s dtype.

    Heads are folded into one batch axis and the backward pass is written out, so that
    every matmul keeps a form XLA:CPU runs on bf16 units (the transposed ones are
    materialised first): ``jax.nn.dot_product_attention`` in bf16 is upcast to float32
    there, and its autodiff backward pass with it.
    """
    return _mixed_attention_fwd(q, k, v, dtype, bias)[0]


def _mixed_attention_fwd(q, k, v, dtype, bias=None):
    b, c = q.shape[0], q.shape[-1]
    qc = _heads_first(q * jnp.asarray(1.0 / math.sqrt(c), q.dtype)).astype(dtype)
    kc, vc = _heads_first(k).astype(dtype), _heads_first(v).astype(dtype)
    logits = jnp.einsum("xnc,xmc->xnm", qc, kc, preferred_element_type=jnp.float32)
    if bias is not None:  # [B, 1, M] -> one row per head in the folded batch axis
        logits = logits + jnp.repeat(bias, q.shape[2], axis=0)
    p = jax.nn.softmax(logits, axis=-1).astype(dtype)
    out = jnp.einsum("xnm,xmc->xnc", p, vc, preferred_element_type=jnp.float32)
    return _heads_back(out, b).astype(q.dtype), (qc, kc, vc, p, bias)


def _mixed_attention_bwd(dtype, res, d_out):
    qc, kc, vc, p, bias = res
    b, c = d_out.shape[0], qc.shape[-1]
    do = _heads_first(d_out).astype(dtype)
    dv = jnp.einsum("xmn,xnc->xmc", jnp.swapaxes(p, 1, 2), do,
                    preferred_element_type=jnp.float32)
    dp = jnp.einsum("xnc,xmc->xnm", do, vc, preferred_element_type=jnp.float32)
    pf = p.astype(jnp.float32)
    ds = (pf * (dp - jnp.sum(dp * pf, axis=-1, keepdims=True))).astype(dtype)
    dq = jnp.einsum("xnm,xmc->xnc", ds, kc, preferred_element_type=jnp.float32)
    dk = jnp.einsum("xmn,xnc->xmc", jnp.swapaxes(ds, 1, 2), qc,
                    preferred_element_type=jnp.float32)
    grads = tuple(_heads_back(t, b).astype(d_out.dtype)
                  for t in (dq * (1.0 / math.sqrt(c)), dk, dv))
    return (*grads, None if bias is None else jnp.zeros_like(bias))


mixed_attention.defvjp(_mixed_attention_fwd, _mixed_attention_bwd)


def low_precision(dtype: Any) -> Any:
    """``dtype`` as a numpy dtype when it is below float32 (the mixed paths), else None."""
    return None if dtype is None or jnp.dtype(dtype) == jnp.float32 else jnp.dtype(dtype)


class Linear(nnx.Linear):
    """``nnx.Linear`` (same parameters, same float32 path) whose low-precision path
    accumulates in float32, adds the bias in float32 and then casts to ``dtype``."""

    def __call__(self, inputs: jax.Array, out_sharding=None) -> jax.Array:
        dtype = low_precision(self.dtype)
        if dtype is None:
            return super().__call__(inputs, out_sharding)
        y = mixed_dense(inputs, self.kernel[...], dtype, inputs.dtype)
        return (y + self.bias[...]).astype(dtype)


def linear(din: int, dout: int, *, rngs: nnx.Rngs, zero: bool = False,
           dtype: Any = None) -> nnx.Linear:
    # Official code: VarianceScaling(1.0), fan-in, truncated normal; biases zero.
    init = nnx.initializers.zeros_init() if zero else nnx.initializers.variance_scaling(
        1.0, "fan_in", "truncated_normal"
    )
    return Linear(din, dout, kernel_init=init, rngs=rngs, dtype=dtype)


def chunk_size(m: int, chunk: int) -> int:
    """``chunk``, or the largest divisor of ``m`` near it (so no padding is needed)."""
    best = max(d for d in range(1, min(chunk, m) + 1) if m % d == 0)
    return best if best * 4 >= chunk else chunk


def online_softmax_init(b: int, n: int, h: int, c: int):
    """Running maximum, running sum ``[B, H, N]`` and weighted values ``[B, N, H, c]``."""
    return (jnp.full((b, h, n), -jnp.inf, jnp.float32), jnp.zeros((b, h, n), jnp.float32),
            jnp.zeros((b, n, h, c), jnp.float32))


def online_softmax_step(carry, q: jax.Array, k: jax.Array, v: jax.Array, valid: jax.Array):
    """Fold one chunk of keys/values into the running softmax-weighted sum (float32).

    ``q [B, N, H, c]`` already scaled by 1/sqrt(c); ``k, v [B, K, H, c]``; ``valid [K]``, or
    ``[B, K]`` with a per-example key mask. Masked logits are -1e30, not -inf, so a chunk
    with nothing to attend to keeps its running maximum finite.
    """
    top, total, acc = carry
    logits = jnp.einsum("bnhc,bkhc->bhnk", q, k, preferred_element_type=jnp.float32)
    valid = valid[:, None, None, :] if valid.ndim == 2 else valid  # [B, K]: a per-example mask
    logits = jnp.where(valid, logits, -1e30)
    new_top = jnp.maximum(top, logits.max(-1))
    rescale = jnp.exp(top - new_top)
    p = jnp.exp(logits - new_top[..., None])
    total = total * rescale + p.sum(-1)
    acc = acc * rescale.transpose(0, 2, 1)[..., None] + jnp.einsum(
        "bhnk,bkhc->bnhc", p.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return new_top, total, acc


def online_softmax_result(carry, dtype) -> jax.Array:
    _, total, acc = carry
    return (acc / total.transpose(0, 2, 1)[..., None]).astype(dtype)


def chunked_attention(q: jax.Array, k: jax.Array, v: jax.Array, chunk: int) -> jax.Array:
    """``softmax(q k^T / sqrt(c)) v`` over the keys in chunks of ``chunk`` with an online
    softmax (flash-attention style, pure JAX): the ``[B, H, N, M]`` logits never exist
    at once, and the backward pass recomputes each chunk's instead of storing them.

    ``q [B, N, H, c]``, ``k, v [B, M, H, c]`` -> ``[B, N, H, c]``. Logits, the running
    maximum and sums are float32 whatever the compute dtype.
    """
    b, n, h, c = q.shape
    m = k.shape[1]
    chunk = chunk_size(m, chunk)
    pad = -m % chunk
    k, v = (jnp.pad(t, ((0, 0), (0, pad), (0, 0), (0, 0))) if pad else t for t in (k, v))
    q = q * jnp.asarray(1.0 / math.sqrt(c), q.dtype)

    @jax.checkpoint
    def step(carry, i):
        kk, vv = (jax.lax.dynamic_slice_in_dim(t, i * chunk, chunk, axis=1) for t in (k, v))
        valid = i * chunk + jnp.arange(chunk) < m
        return online_softmax_step(carry, q, kk, vv, valid), None

    carry, _ = jax.lax.scan(step, online_softmax_init(b, n, h, c), jnp.arange((m + pad) // chunk))
    return online_softmax_result(carry, q.dtype)


class Attention(nnx.Module):
    """Multi-head QKV attention with input and output projections (all with biases).

    ``q_in [B, N, Dq]``, ``kv_in [B, M, Dkv]`` -> ``[B, N, out_channels]``; q/k/v are
    ``channels`` wide, split over ``num_heads``.
    """

    def __init__(
        self, q_dim: int, kv_dim: int, channels: int, out_channels: int, num_heads: int,
        *, rngs: nnx.Rngs, dtype: Any = None,
    ):
        if channels % num_heads:
            raise ConfigError(f"attention width {channels} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q = linear(q_dim, channels, rngs=rngs, dtype=dtype)
        self.k = linear(kv_dim, channels, rngs=rngs, dtype=dtype)
        self.v = linear(kv_dim, channels, rngs=rngs, dtype=dtype)
        self.out = linear(channels, out_channels, rngs=rngs, dtype=dtype)

    def heads(self, x: jax.Array) -> jax.Array:
        """``[B, T, H*c]`` -> ``[B, T, H, c]``."""
        return x.reshape(*x.shape[:-1], self.num_heads, -1)

    def keys_values(self, kv_in: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``kv_in [B, M, Dkv]`` -> keys and values ``[B, M, H, c]``."""
        return self.heads(self.k(kv_in)), self.heads(self.v(kv_in))

    def __call__(self, q_in: jax.Array, kv_in: jax.Array | None,
                 kv: tuple[jax.Array, jax.Array] | None = None,
                 mask: jax.Array | None = None) -> jax.Array:
        """``kv``: keys and values computed beforehand (then ``kv_in`` is unused);
        ``mask [B, M]``: True where an input may be attended to."""
        q = self.heads(self.q(q_in))
        k, v = kv if kv is not None else self.keys_values(kv_in)
        # softmax(q k^T / sqrt(c)) v, per head: 'bnhc,bmhc->bhnm' then 'bhnm,bmhc->bnhc'.
        dtype = low_precision(self.q.dtype)
        if dtype is None:
            out = jax.nn.dot_product_attention(
                q, k, v, mask=None if mask is None else mask[:, None, None, :])
        else:
            out = mixed_attention(q, k, v, dtype, masked_bias(mask))
        return self.out(out.reshape(*out.shape[:-2], -1))


class SelfAttention(Attention):
    """``Attention`` of a token array to itself: ``x [B, N, D]`` -> ``[B, N, D]``."""

    def __init__(self, dim: int, num_heads: int, *, rngs: nnx.Rngs, dtype: Any = None):
        super().__init__(dim, dim, dim, dim, num_heads, rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        return super().__call__(x, x, mask=mask)


class MLP(nnx.Module):
    """Linear(D -> wD) -> GELU -> Linear(wD -> D). The GELU is the tanh approximation
    (``jax.nn.gelu``, the official code's) unless ``approximate`` is off (the exact erf
    form, Hugging Face's port's ``hidden_act="gelu"``)."""

    def __init__(self, dim: int, widening_factor: int, *, rngs: nnx.Rngs, dtype: Any = None,
                 approximate: bool = True):
        self.fc1 = linear(dim, dim * widening_factor, rngs=rngs, dtype=dtype)
        self.fc2 = linear(dim * widening_factor, dim, rngs=rngs, dtype=dtype)
        self.approximate = approximate

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=self.approximate))


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
        chunk: int = 0, query_residual: bool = True, gelu_approximate: bool = True,
        attention: Callable[..., nnx.Module] | None = None,
        mlp: Callable[..., nnx.Module] | None = None,
    ):
        """``attention`` and ``mlp``: factories of a registered variant's modules (keyword
        arguments of ``suite.extend``'s contracts); None: the standard ones."""
        self.query_residual = query_residual  # the decoders' is optional ([DM] BasicDecoder)
        self.ln_q = nnx.LayerNorm(latent_dim, epsilon=LN_EPS, rngs=rngs)
        self.ln_kv = nnx.LayerNorm(input_dim, epsilon=LN_EPS, rngs=rngs)
        self.attn = Attention(latent_dim, input_dim, channels, latent_dim, num_heads, rngs=rngs,
                              dtype=dtype) if attention is None else attention(
            q_dim=latent_dim, kv_dim=input_dim, qk_channels=channels, out_dim=latent_dim,
            num_heads=num_heads, rngs=rngs, dtype=dtype)
        self.chunk = chunk  # > 0: attend to the inputs a chunk at a time (_streamed)
        self.ln_mlp = nnx.LayerNorm(latent_dim, epsilon=LN_EPS, rngs=rngs)
        self.mlp = MLP(latent_dim, widening_factor, rngs=rngs, dtype=dtype,
                       approximate=gelu_approximate) if mlp is None else mlp(
            dim=latent_dim, widening_factor=widening_factor, rngs=rngs, dtype=dtype)
        self.drop = Residual(dropout, rngs=rngs)

    def streams(self, x: jax.Array) -> bool:
        """Does this cross-attend read ``x`` a chunk at a time (``model.cross_attention_chunk``)?"""
        return bool(self.chunk and x.shape[1] > self.chunk)

    def keys_values(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Its keys and values of the inputs ``x [B, M, C]``, ``[B, M, H, c]`` each: a
        weight-shared repeat on the same inputs can compute them once (``Perceiver``)."""
        return self.attn.keys_values(self.ln_kv(x))

    def __call__(self, z: jax.Array, x: jax.Array,
                 kv: tuple[jax.Array, jax.Array] | None = None,
                 mask: jax.Array | None = None) -> jax.Array:
        """``kv``: this cross-attend's ``keys_values(x)``, computed beforehand; ``mask
        [B, M]``: the inputs each example may attend to (None: all)."""
        if kv is not None:
            attended = self.attn(self.ln_q(z), None, kv=kv, mask=mask)
        elif self.streams(x):
            attended = self._streamed(self.ln_q(z), x, mask)
        else:
            attended = self.attn(self.ln_q(z), self.ln_kv(x), mask=mask)
        z = z + self.drop(attended) if self.query_residual else self.drop(attended)
        return z + self.drop(self.mlp(self.ln_mlp(z)))

    def _streamed(self, q_in: jax.Array, x: jax.Array, mask: jax.Array | None = None
                  ) -> jax.Array:
        """Attention over the inputs ``x [B, M, C]`` a chunk at a time: the key/value
        LayerNorm, projections and logits exist for one chunk only, in the forward pass
        and (recomputed) in the backward pass; an online softmax joins the chunks."""
        attn, (b, m, _) = self.attn, x.shape
        chunk = chunk_size(m, self.chunk)
        pad = -m % chunk
        x = jnp.pad(x, ((0, 0), (0, pad), (0, 0))) if pad else x
        keep = None if mask is None else (jnp.pad(mask, ((0, 0), (0, pad))) if pad else mask)
        q = attn.heads(attn.q(q_in))
        q = q * jnp.asarray(1.0 / math.sqrt(q.shape[-1]), q.dtype)
        graphdef, state = nnx.split((self.ln_kv, attn.k, attn.v))

        @jax.checkpoint
        def step(carry, i):
            ln, k_proj, v_proj = nnx.merge(graphdef, state)
            h = ln(jax.lax.dynamic_slice_in_dim(x, i * chunk, chunk, axis=1))
            valid = i * chunk + jnp.arange(chunk) < m
            if keep is not None:
                valid = valid & jax.lax.dynamic_slice_in_dim(keep, i * chunk, chunk, axis=1)
            return online_softmax_step(carry, q, attn.heads(k_proj(h)), attn.heads(v_proj(h)),
                                       valid), None

        init = online_softmax_init(b, q.shape[1], attn.num_heads, q.shape[-1])
        carry, _ = jax.lax.scan(step, init, jnp.arange((m + pad) // chunk))
        out = online_softmax_result(carry, q.dtype)
        return attn.out(out.reshape(*out.shape[:-2], -1))


class SelfAttend(nnx.Module):
    """GPT-2-style pre-LN self-attention layer on the latents, ``[B, N, D]``."""

    def __init__(
        self, dim: int, num_heads: int, widening_factor: int, dropout: float, *, rngs: nnx.Rngs,
        dtype: Any = None, gelu_approximate: bool = True,
        attention: Callable[..., nnx.Module] | None = None,
        mlp: Callable[..., nnx.Module] | None = None,
    ):
        """``attention`` and ``mlp``: factories of registered variants, as ``CrossAttend``'s."""
        self.ln = nnx.LayerNorm(dim, epsilon=LN_EPS, rngs=rngs)
        self.attn = SelfAttention(dim, num_heads, rngs=rngs, dtype=dtype) if attention is None \
            else attention(dim=dim, num_heads=num_heads, rngs=rngs, dtype=dtype)
        self.ln_mlp = nnx.LayerNorm(dim, epsilon=LN_EPS, rngs=rngs)
        self.mlp = MLP(dim, widening_factor, rngs=rngs, dtype=dtype, approximate=gelu_approximate) \
            if mlp is None else mlp(dim=dim, widening_factor=widening_factor, rngs=rngs,
                                    dtype=dtype)
        self.drop = Residual(dropout, rngs=rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        z = z + self.drop(self.attn(self.ln(z)))
        return z + self.drop(self.mlp(self.ln_mlp(z)))

