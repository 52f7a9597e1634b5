"""A latent mixer: a Perceiver whose latent tower mixes with MLPs instead of attention.

One cross-attend reads the inputs into N latents, as the Perceiver's first does; then
``depth`` MLP-Mixer blocks (Tolstikhin et al., 2021) process the latents: a token-mixing
MLP across the N latents (each channel on its own) and a channel MLP across the D
channels (each latent on its own), each after a LayerNorm and with a residual. The
latents are averaged and classified. Its cost is linear in the inputs M, as the
Perceiver's is, with no N x N attention in the tower.

Registered as a whole model, ``model.kind = "latent_mixer"``. It reads the built-in keys
``model.num_latents`` (N), ``model.latent_dim`` (D), ``model.cross_heads`` and
``model.widening_factor`` (the channel MLP's), and has knobs of its own,
``model.latent_mixer.depth``, ``.token_hidden`` and ``.pos_dim``. It defines no
``flops``: ``describe``, a run's MFU and the report use XLA's count of the compiled
program, and say so.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from suite import extend
from suite.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class MixerKnobs:
    depth: int = 4  # mixer blocks after the cross-attend
    token_hidden: int = 64  # hidden units of the token-mixing MLP (across the latents)
    pos_dim: int = 16  # learned position features concatenated to each input item

    def __post_init__(self):
        for name in ("depth", "token_hidden", "pos_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")


class Mlp(nnx.Module):
    """Linear -> GELU -> Linear, ``[..., dim] -> [..., dim]``."""

    def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(dim, hidden, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.gelu(self.fc1(x)))


class MixerBlock(nnx.Module):
    """``z [B, N, D]``: token mixing across N, then channel mixing across D."""

    def __init__(self, n: int, d: int, token_hidden: int, channel_hidden: int, *,
                 rngs: nnx.Rngs):
        self.ln_tokens = nnx.LayerNorm(d, rngs=rngs)
        self.tokens = Mlp(n, token_hidden, rngs=rngs)
        self.ln_channels = nnx.LayerNorm(d, rngs=rngs)
        self.channels = Mlp(d, channel_hidden, rngs=rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        z = z + self.tokens(self.ln_tokens(z).swapaxes(1, 2)).swapaxes(1, 2)
        return z + self.channels(self.ln_channels(z))


@extend.register_model("latent_mixer", knobs=MixerKnobs)
class LatentMixer(nnx.Module):
    """``inputs [B, *index_dims, C]`` -> logits ``[B, num_classes]``."""

    def __init__(self, knobs: MixerKnobs, m, inputs: extend.Inputs, *, rngs: nnx.Rngs):
        if inputs.multimodal or inputs.pos_dim is not None:
            raise ConfigError(f"model.kind='latent_mixer' reads one array on a grid; this task "
                              f"gives {'several modalities' if inputs.multimodal else 'points'}")
        n, d = m.num_latents, m.latent_dim
        items = math.prod(inputs.index_dims)
        init = nnx.initializers.truncated_normal(stddev=0.02, lower=-2.0, upper=2.0)
        self.positions = nnx.Param(init(rngs.params(), (items, knobs.pos_dim)))
        self.latents = nnx.Param(init(rngs.params(), (n, d)))
        kv_dim = inputs.channels + knobs.pos_dim
        self.ln_q, self.ln_kv = nnx.LayerNorm(d, rngs=rngs), nnx.LayerNorm(kv_dim, rngs=rngs)
        self.cross = nnx.MultiHeadAttention(m.cross_heads, d, d, d, in_kv_features=kv_dim,
                                            decode=False, deterministic=True, keep_rngs=False,
                                            rngs=rngs)
        self.ln_mlp = nnx.LayerNorm(d, rngs=rngs)
        self.mlp = Mlp(d, d * m.widening_factor, rngs=rngs)
        self.blocks = nnx.List([MixerBlock(n, d, knobs.token_hidden, d * m.widening_factor,
                                           rngs=rngs) for _ in range(knobs.depth)])
        self.ln_out = nnx.LayerNorm(d, rngs=rngs)
        self.head = nnx.Linear(d, inputs.num_classes, rngs=rngs)

    def __call__(self, inputs: jax.Array, positions=None, index=None, keep=None) -> jax.Array:
        b, c = inputs.shape[0], inputs.shape[-1]
        x = inputs.reshape(b, -1, c)  # [B, M, C]
        pos = self.positions[...]
        pos = pos[index] if index is not None else jnp.broadcast_to(pos, (b, *pos.shape))
        x = jnp.concatenate([x, pos.astype(x.dtype)], axis=-1)  # [B, M, C + pos_dim]
        z = jnp.broadcast_to(self.latents[...], (b, *self.latents.shape))
        kv = self.ln_kv(x)
        z = z + self.cross(self.ln_q(z), kv, kv)
        z = z + self.mlp(self.ln_mlp(z))
        for block in self.blocks:
            z = block(z)
        return self.head(self.ln_out(z).mean(axis=1))
