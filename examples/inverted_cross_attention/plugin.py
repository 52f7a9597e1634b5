"""Inverted cross-attention (Wu et al., 2023, "Inverted-Attention Transformers can Learn
Object Representations"), as a variant of the Perceiver's cross-attention.

The standard cross-attend normalises each latent's weights over the inputs: every latent
reads a weighted mean of all inputs, and nothing stops two latents from reading the same
ones. The inverted one takes the softmax over the latents instead, so the latents compete
for each input (as in Slot Attention), then renormalises each latent's weights over the
inputs so that it still reads a weighted mean:

    attn = softmax(logits, axis=latents)                      # [B, H, N, M]
    attn = attn / (attn.sum(axis=inputs, keepdims=True) + renorm_eps)

Everything else (q/k/v/output projections, their initialisation, heads) is the standard
cross-attention's, so the two differ only in the normalisation: same parameters, same
FLOPs. Chosen with ``model.cross_attention = "inverted"``; its knob is
``model.inverted.renorm_eps``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from suite import extend


@dataclasses.dataclass(frozen=True)
class InvertedKnobs:
    renorm_eps: float = 1e-8  # added to each latent's total weight before renormalising;
    # large values (about 1) shrink the reads of latents that won few inputs

    def __post_init__(self):
        if not self.renorm_eps > 0:
            raise ValueError(f"renorm_eps={self.renorm_eps} must be > 0")


def _linear(din: int, dout: int, rngs: nnx.Rngs, dtype) -> nnx.Linear:
    """The standard cross-attention's projection: fan-in truncated normal, zero bias,
    parameters in float32, matmuls in ``dtype``."""
    init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
    return nnx.Linear(din, dout, kernel_init=init, dtype=dtype, rngs=rngs)


@extend.register_cross_attention("inverted", knobs=InvertedKnobs)
class InvertedCrossAttention(nnx.Module):
    """Latents ``q_in [B, N, q_dim]`` read inputs ``kv_in [B, M, kv_dim]``; softmax over
    the N latents, then renormalised over the M inputs. ``[B, N, out_dim]``."""

    def __init__(self, knobs: InvertedKnobs, m, *, q_dim: int, kv_dim: int, qk_channels: int,
                 out_dim: int, num_heads: int, rngs: nnx.Rngs, dtype=None):
        if qk_channels % num_heads:
            raise ValueError(f"{qk_channels} channels do not split over {num_heads} heads")
        self.eps, self.num_heads = knobs.renorm_eps, num_heads
        self.q = _linear(q_dim, qk_channels, rngs, dtype)
        self.k = _linear(kv_dim, qk_channels, rngs, dtype)
        self.v = _linear(kv_dim, qk_channels, rngs, dtype)
        self.out = _linear(qk_channels, out_dim, rngs, dtype)

    def _heads(self, x: jax.Array) -> jax.Array:  # [B, T, H*c] -> [B, T, H, c]
        return x.reshape(*x.shape[:-1], self.num_heads, -1)

    def keys_values(self, kv_in: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Keys and values ``[B, M, H, c]``: a weight-shared repeat computes them once."""
        return self._heads(self.k(kv_in)), self._heads(self.v(kv_in))

    def _logits(self, q_in: jax.Array, k: jax.Array) -> jax.Array:
        q = self._heads(self.q(q_in))
        logits = jnp.einsum("bnhc,bmhc->bhnm", q, k).astype(jnp.float32)
        return logits / math.sqrt(q.shape[-1])

    def attention_logits(self, q_in: jax.Array, kv_in: jax.Array) -> jax.Array:
        """The scaled pre-softmax logits ``[B, H, N, M]`` that ``perceiver-suite
        attention`` (and ``report --attention``) draws."""
        return self._logits(q_in, self._heads(self.k(kv_in)))

    def __call__(self, q_in: jax.Array, kv_in: jax.Array | None, *, kv=None,
                 mask: jax.Array | None = None) -> jax.Array:
        k, v = kv if kv is not None else self.keys_values(kv_in)
        attn = jax.nn.softmax(self._logits(q_in, k), axis=2)  # over the latents (N)
        if mask is not None:  # [B, M]: a masked input gives nothing to any latent
            attn = attn * mask[:, None, None, :]
        attn = attn / (attn.sum(axis=3, keepdims=True) + self.eps)  # over the inputs (M)
        out = jnp.einsum("bhnm,bmhc->bnhc", attn.astype(v.dtype), v)
        return self.out(out.reshape(*out.shape[:-2], -1))

    @classmethod
    def flops(cls, knobs: InvertedKnobs, m, *, queries: int, inputs: int, q_dim: int,
              kv_dim: int, qk_channels: int, out_dim: int, num_heads: int) -> float:
        """The standard cross-attention's count (the normalisations are element-wise,
        left out as the softmax is): q N D F; k and v 2 M C F; logits and the weighted
        sum 2 N M F; output N F D; multiply and add counted apart."""
        n, big_m, f = queries, inputs, qk_channels
        return 2.0 * (n * q_dim * f + 2 * big_m * kv_dim * f + 2 * n * big_m * f
                      + n * f * out_dim)
