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

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from suite.config import ModelConfig
from suite.errors import ConfigError
from suite.models.encodings import InputAdapter
from suite.models.layers import CrossAttend, SelfAttend, linear


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
        self.head = linear(m.latent_dim, num_classes, rngs=rngs, zero=True)  # [DM]: zero init

    def __call__(
        self, inputs: jax.Array, positions: jax.Array | None = None, index: jax.Array | None = None
    ) -> jax.Array:
        x = self.adapter(inputs, positions, index)  # [B, M, C]
        z = jnp.broadcast_to(self.latents[...], (x.shape[0], *self.latents.shape)).astype(x.dtype)
        for kind, i in self.schedule:
            z = self.cross[i](z, x) if kind == "cross" else self.self_attends[i](z)
        return self.head(z.mean(axis=1))  # average, then project (paper v2)

