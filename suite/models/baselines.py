"""Baselines in the Perceiver's config schema: a full Transformer, a ViT, a small ConvNet.

All three take the same inputs as the Perceiver (``[B, *index_dims, C]``, or items in a
fixed permuted order with their ``index``) and attach the same position encodings
first, so Table 2's comparison holds: position features travel with their pixels.

- ``transformer``: self-attention over all M inputs (cost O(L M^2)); the paper's
  Transformer baseline uses the latent-Transformer layers on the inputs.
- ``vit``: pixels (with their position features) cut into ``patch_size``^2 patches,
  projected, then Transformer layers (the paper's "ViT (FF)").
- ``convnet``: a small pre-activation ResNet on the (possibly scrambled) image grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
from flax import nnx

from suite.config import ModelConfig
from suite.errors import ConfigError
from suite.extend import Inputs
from suite.models.encodings import InputAdapter
from suite.models.layers import LN_EPS, SelfAttend, linear


def _to_grid(x: jax.Array, index_dims: Sequence[int]) -> jax.Array:
    """``[B, M, C]`` -> ``[B, *index_dims, C]`` (a permuted image stays scrambled)."""
    return x.reshape(x.shape[0], *index_dims, x.shape[-1])


class _Trunk(nnx.Module):
    """Tokens ``[B, T, H]`` -> L pre-LN self-attention layers -> LN -> mean -> logits."""

    def __init__(self, m: ModelConfig, num_classes: int, *, rngs: nnx.Rngs):
        self.layers = nnx.List([
            SelfAttend(m.hidden_dim, m.self_heads, m.widening_factor, m.dropout, rngs=rngs)
            for _ in range(m.num_layers)
        ])
        self.norm = nnx.LayerNorm(m.hidden_dim, epsilon=LN_EPS, rngs=rngs)
        self.head = linear(m.hidden_dim, num_classes, rngs=rngs, zero=True)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        for layer in self.layers:
            tokens = layer(tokens)
        return self.head(self.norm(tokens).mean(axis=1))


class TransformerClassifier(nnx.Module):
    """Inputs + positions -> Linear(C -> H) -> L pre-LN self-attention layers -> mean -> head."""

    def __init__(self, knobs: Any, m: ModelConfig, inputs: Inputs, *, rngs: nnx.Rngs):
        self.adapter = InputAdapter(m, inputs.index_dims, inputs.channels, inputs.pos_dim,
                                    rngs=rngs)
        self.embed = linear(self.adapter.out_channels, m.hidden_dim, rngs=rngs)
        self.trunk = _Trunk(m, inputs.num_classes, rngs=rngs)

    def __call__(self, inputs: jax.Array, positions: jax.Array | None = None,
                 index: jax.Array | None = None) -> jax.Array:
        return self.trunk(self.embed(self.adapter(inputs, positions, index)))  # [B, M, H]


class ViT(nnx.Module):
    """Pixels with position features -> patches -> Linear -> Transformer layers -> head."""

    def __init__(self, knobs: Any, m: ModelConfig, inputs: Inputs, *, rngs: nnx.Rngs):
        index_dims, channels, num_classes = inputs.index_dims, inputs.channels, inputs.num_classes
        if inputs.pos_dim is not None or len(index_dims) != 2:
            raise ConfigError("model.kind='vit' needs a 2-D image task (data.index_dims=[H, W])")
        h, w = index_dims
        p = m.patch_size
        if h % p or w % p:
            raise ConfigError(f"model.patch_size={p} must divide data.index_dims={[h, w]}")
        self.index_dims, self.patch = (h, w), p
        self.adapter = InputAdapter(m, index_dims, channels, None, rngs=rngs)
        self.embed = linear(p * p * self.adapter.out_channels, m.hidden_dim, rngs=rngs)
        self.trunk = _Trunk(m, num_classes, rngs=rngs)

    def __call__(self, inputs: jax.Array, positions: jax.Array | None = None,
                 index: jax.Array | None = None) -> jax.Array:
        x = _to_grid(self.adapter(inputs, positions, index), self.index_dims)  # [B, H, W, C]
        b, h, w, c = x.shape
        p = self.patch
        # 'b (gh p) (gw q) c -> b (gh gw) (p q c)'
        x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
        return self.trunk(self.embed(x.reshape(b, (h // p) * (w // p), p * p * c)))


class _ResBlock(nnx.Module):
    """Pre-activation residual block: (GroupNorm, GELU, 3x3 conv) x 2, strided shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, *, rngs: nnx.Rngs):
        self.norm1 = nnx.GroupNorm(cin, num_groups=min(8, cin), rngs=rngs)
        self.conv1 = nnx.Conv(cin, cout, (3, 3), strides=stride, padding="SAME", rngs=rngs)
        self.norm2 = nnx.GroupNorm(cout, num_groups=min(8, cout), rngs=rngs)
        self.conv2 = nnx.Conv(cout, cout, (3, 3), padding="SAME", rngs=rngs)
        self.shortcut = (nnx.Conv(cin, cout, (1, 1), strides=stride, rngs=rngs)
                         if stride != 1 or cin != cout else None)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.conv1(jax.nn.gelu(self.norm1(x)))
        h = self.conv2(jax.nn.gelu(self.norm2(h)))
        return h + (x if self.shortcut is None else self.shortcut(x))


class ConvNet(nnx.Module):
    """A small ResNet: 3x3 stem, 3 stages of 2 blocks (widths H, 2H, 4H), pool, head."""

    def __init__(self, knobs: Any, m: ModelConfig, inputs: Inputs, *, rngs: nnx.Rngs):
        index_dims, channels, num_classes = inputs.index_dims, inputs.channels, inputs.num_classes
        if inputs.pos_dim is not None or len(index_dims) != 2:
            raise ConfigError("model.kind='convnet' needs a 2-D image task "
                              "(data.index_dims=[H, W])")
        self.index_dims = tuple(index_dims)
        self.adapter = InputAdapter(m, index_dims, channels, None, rngs=rngs)
        width = m.hidden_dim
        self.stem = nnx.Conv(self.adapter.out_channels, width, (3, 3), padding="SAME", rngs=rngs)
        blocks, cin = [], width
        for stage, cout in enumerate((width, 2 * width, 4 * width)):
            for i in range(2):
                blocks.append(_ResBlock(cin, cout, 2 if (i == 0 and stage > 0) else 1,
                                        rngs=rngs))
                cin = cout
        self.blocks = nnx.List(blocks)
        self.norm = nnx.GroupNorm(cin, num_groups=min(8, cin), rngs=rngs)
        self.head = linear(cin, num_classes, rngs=rngs, zero=True)

    def __call__(self, inputs: jax.Array, positions: jax.Array | None = None,
                 index: jax.Array | None = None) -> jax.Array:
        x = self.stem(_to_grid(self.adapter(inputs, positions, index), self.index_dims))
        for block in self.blocks:
            x = block(x)
        return self.head(jax.nn.gelu(self.norm(x)).mean(axis=(1, 2)))


def transformer_flops(m: ModelConfig, items: int, channels: int, num_classes: int) -> float:
    """Forward FLOPs (2 x MACs) of L self-attention layers over ``items`` tokens."""
    h, w = m.hidden_dim, m.widening_factor
    layer = 4 * items * h * h + 2 * items * items * h + 2 * w * items * h * h
    return 2.0 * (items * channels * h + m.num_layers * layer + h * num_classes)


def convnet_flops(m: ModelConfig, index_dims: Sequence[int], channels: int,
                  num_classes: int) -> float:
    """Forward FLOPs (2 x MACs) of the ConvNet's convolutions and head."""
    hh, ww = index_dims
    width = m.hidden_dim
    macs = hh * ww * 9 * channels * width  # stem
    cin = width
    for stage, cout in enumerate((width, 2 * width, 4 * width)):
        for i in range(2):
            if i == 0 and stage > 0:
                hh, ww = math.ceil(hh / 2), math.ceil(ww / 2)
                macs += hh * ww * cin * cout  # 1x1 strided shortcut
            elif cin != cout:
                macs += hh * ww * cin * cout
            macs += hh * ww * 9 * (cin * cout + cout * cout)
            cin = cout
    return 2.0 * (macs + cin * num_classes)
