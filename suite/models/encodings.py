"""Position encodings (Fourier features as the official code, learned) and the input
adapter that attaches them.

The features are pure functions of positions; the adapter decides where positions come
from (an input grid, explicit point coordinates, or a permutation of grid items).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from suite import extend
from suite.config import ModelConfig
from suite.config.tables import table_get
from suite.errors import ConfigError
from suite.models.layers import linear


def grid_positions(index_dims: Sequence[int]) -> np.ndarray:
    """Row-major grid coordinates in [-1, 1] with endpoints, ``[prod(index_dims), d]``.

    Matches ``build_linear_positions`` in the official code: ``linspace(-1, 1, n)`` per
    axis, ``meshgrid(indexing='ij')``, flattened.
    """
    axes = [np.linspace(-1.0, 1.0, n, endpoint=True, dtype=np.float32) for n in index_dims]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    return grid.reshape(-1, len(index_dims))


def fourier_features(
    positions: jnp.ndarray | np.ndarray,
    num_bands: int,
    max_resolution: Sequence[float],
    *,
    concat_pos: bool = True,
    sine_only: bool = False,
) -> jnp.ndarray:
    """Fourier features of positions in [-1, 1], ``[..., d] -> [..., d * (2K + 1)]``.

    Frequencies per dimension are ``linspace(1, max_resolution / 2, K)`` (linear, up to
    Nyquist); features are ``sin(pi f x)`` and ``cos(pi f x)``. Channel order, as in the
    official code: ``[x_1..x_d, sin(f_1 x_1)..sin(f_K x_1), .., sin(f_K x_d), cos(same)]``.
    ``sine_only`` drops the cosines (width d(K + 1)); ``concat_pos=False`` drops the raw x.
    """
    xp = jnp if isinstance(positions, jnp.ndarray) and not isinstance(positions, np.ndarray) else np
    d = positions.shape[-1]
    if len(max_resolution) == 1:
        max_resolution = tuple(max_resolution) * d
    if len(max_resolution) != d:
        raise ValueError(f"max_resolution has {len(max_resolution)} values for {d}-d positions")
    freqs = np.stack(
        [np.linspace(1.0, r / 2.0, num_bands, endpoint=True) for r in max_resolution]
    ).astype(np.float32)  # [d, K]
    # [..., d, 1] * [d, K] -> [..., d * K], dimension-major as in the official code.
    scaled = (positions[..., :, None] * freqs).reshape(*positions.shape[:-1], d * num_bands)
    parts = [xp.sin(np.pi * scaled)]
    if not sine_only:
        parts.append(xp.cos(np.pi * scaled))
    if concat_pos:
        parts.insert(0, positions)
    return xp.concatenate(parts, axis=-1)


def fourier_width(num_dims: int, num_bands: int, *, concat_pos: bool, sine_only: bool) -> int:
    """Channels produced by :func:`fourier_features`: d(2K+1) by default."""
    return num_dims * ((1 if sine_only else 2) * num_bands + (1 if concat_pos else 0))


def patches(x: jax.Array, patch: Sequence[int]) -> jax.Array:
    """``[B, *dims, C]`` -> ``[B, *dims // patch, prod(patch) * C]``: each item a patch,
    its values (row-major within the patch, channels last) as its channels."""
    b, *dims, c = x.shape
    d = len(dims)
    split = [v for n, p in zip(dims, patch, strict=True) for v in (n // p, p)]
    x = x.reshape(b, *split, c)  # [B, g1, p1, g2, p2, ..., C]
    order = [0, *range(1, 2 * d, 2), *range(2, 2 * d + 1, 2), 2 * d + 1]
    grid = [n // p for n, p in zip(dims, patch, strict=True)]
    return x.transpose(order).reshape(b, *grid, -1)


class MultimodalAdapter(nnx.Module):
    """Several modalities into one input array ([DM] ``MultimodalPreprocessor``): each
    modality with its own position features (``InputAdapter``), padded to a common width
    (the widest + ``model.modality_padding``) with its own learned vector broadcast over
    its items, then concatenated along the items in the layouts' (sorted) order.

    ``keep`` (``{modality: [B]}``, 1 kept / 0 dropped, training's modality dropout)
    gives the mask ``[B, M]`` the cross-attention applies: a dropped modality's inputs
    are masked out of the softmax, not zeroed.
    """

    def __init__(self, m: ModelConfig, layouts, *, rngs: nnx.Rngs):
        self.names = tuple(lay.name for lay in layouts)
        self.adapters = nnx.List([
            InputAdapter(m, lay.dims, lay.channels, None, rngs=rngs, patch=lay.patch,
                         modality=lay.name) for lay in layouts])
        widths = [a.out_channels for a in self.adapters]
        self.out_channels = max(widths) + m.modality_padding
        init = nnx.initializers.truncated_normal(stddev=0.02, lower=-2.0, upper=2.0)
        self.padding = nnx.List([nnx.Param(init(rngs.params(), (1, self.out_channels - w)))
                                 for w in widths])

    def __call__(self, inputs: dict[str, jax.Array], keep: dict[str, jax.Array] | None = None
                 ) -> tuple[jax.Array, jax.Array | None]:
        parts, masks = [], []
        for name, adapter, pad in zip(self.names, self.adapters, self.padding, strict=True):
            x = adapter(inputs[name])  # [B, M_i, C_i]
            fill = jnp.broadcast_to(pad[...].astype(x.dtype), (*x.shape[:2], pad.shape[-1]))
            parts.append(jnp.concatenate([x, fill], axis=-1))
            if keep is not None:
                masks.append(jnp.broadcast_to(keep[name][:, None] > 0, x.shape[:2]))
        return jnp.concatenate(parts, axis=1), (jnp.concatenate(masks, axis=1) if masks
                                                 else None)


class FourierPositions(nnx.Module):
    """``model.position_encoding='fourier'``: Fourier features of each item's position
    (``model.fourier_bands`` K per dimension, up to ``model.max_resolution``; the grid
    itself by default), ``d(2K + 1)`` wide; under ``model.position_combine='add'``
    projected by a linear layer to the items' channels.

    Positions come from explicit coordinates (``positions [B, M, p]`` in [-1, 1], point
    clouds), else from the grid, in the order of ``index [B, M]`` where given (a fixed
    permutation: each item keeps the encoding of where it came from).
    """

    def __init__(self, knobs, m: ModelConfig, *, grid: Sequence[int], channels: int,
                 pos_dim: int | None, modality: str | None, rngs: nnx.Rngs):
        self.grid = tuple(grid)
        self.explicit = pos_dim is not None
        self.bands, self.max_resolution, raw = _fourier_shape(m, grid, pos_dim, modality)
        self.concat_pos, self.sine_only = m.concat_pos, m.sine_only
        add = m.position_combine == "add"  # project the features to the input width
        self.project = linear(raw, channels, rngs=rngs) if add else None
        self.width = channels if add else raw

    @classmethod
    def flops(cls, knobs, m: ModelConfig, *, grid: Sequence[int], channels: int,
              pos_dim: int | None, modality: str | None) -> float:
        """The projection under ``position_combine='add'``: 2 M x width x C."""
        if m.position_combine != "add":
            return 0.0
        return 2.0 * math.prod(grid) * _fourier_shape(m, grid, pos_dim, modality)[2] * channels

    def __call__(self, positions: jax.Array | None = None, index: jax.Array | None = None
                 ) -> jax.Array:
        if positions is not None:
            pe = fourier_features(positions, self.bands, self.max_resolution,
                                  concat_pos=self.concat_pos, sine_only=self.sine_only)
        elif self.explicit:
            raise ValueError("this task has explicit positions: pass positions=[B, M, p]")
        else:  # computed in the graph: no M x C constant
            pe = fourier_features(jnp.asarray(grid_positions(self.grid)), self.bands,
                                  self.max_resolution, concat_pos=self.concat_pos,
                                  sine_only=self.sine_only)
            pe = pe[index] if index is not None else pe
        return pe if self.project is None else self.project(pe)


def _fourier_shape(m: ModelConfig, grid: Sequence[int], pos_dim: int | None,
                   modality: str | None) -> tuple[int, tuple[float, ...], int]:
    """Bands, maximum resolution per dimension and the features' width."""
    bands = table_get(m.fourier_bands, modality, 64) if modality else m.fourier_bands
    resolution = table_get(m.max_resolution, modality) if modality else m.max_resolution
    p = pos_dim if pos_dim is not None else len(grid)
    width = fourier_width(p, bands, concat_pos=m.concat_pos, sine_only=m.sine_only)
    return bands, tuple(resolution or tuple(float(n) for n in grid)), width


class LearnedPositions(nnx.Module):
    """``model.position_encoding='learned'``: a learned table of position encodings, one
    row per input item, ``[M, width]`` (``model.learned_pos_dim``; the items' channels
    under ``model.position_combine='add'``).

    Paper Table 2 ("learned pos."): 128 channels; an init scale of 1.0 worked best.
    """

    def __init__(self, knobs, m: ModelConfig, *, grid: Sequence[int], channels: int,
                 pos_dim: int | None, modality: str | None, rngs: nnx.Rngs):
        if pos_dim is not None:
            raise ConfigError("model.position_encoding='learned' needs a grid task; "
                              "point clouds have no fixed item order")
        self.width = channels if m.position_combine == "add" else m.learned_pos_dim
        init = nnx.initializers.truncated_normal(stddev=m.learned_pos_init_scale, lower=-2.0,
                                                 upper=2.0)
        self.table = nnx.Param(init(rngs.params(), (math.prod(grid), self.width)))

    @classmethod
    def flops(cls, knobs, m: ModelConfig, **shape) -> float:
        return 0.0  # a lookup

    def __call__(self, positions: jax.Array | None = None, index: jax.Array | None = None
                 ) -> jax.Array:
        """Rows for item ``index`` (``[..., M]`` ints), or the whole table."""
        table = self.table[...]
        return table if index is None else table[index]


class NoPositions(nnx.Module):
    """``model.position_encoding='none'``: the inputs as they are (width 0)."""

    width = 0

    def __init__(self, knobs, m: ModelConfig, *, grid: Sequence[int], channels: int,
                 pos_dim: int | None, modality: str | None, rngs: nnx.Rngs):
        pass

    @classmethod
    def flops(cls, knobs, m: ModelConfig, **shape) -> float:
        return 0.0

    def __call__(self, positions=None, index=None):
        return None


class InputAdapter(nnx.Module):
    """Flattens inputs to ``[B, M, C_in]`` and attaches the position encoding that
    ``model.position_encoding`` names (a registered variant, ``suite.extend``):
    concatenated (the paper) or added (``model.position_combine``)."""

    def __init__(
        self, m: ModelConfig, index_dims: Sequence[int], channels: int, pos_dim: int | None,
        *, rngs: nnx.Rngs, patch: Sequence[int] | None = None, modality: str | None = None,
    ):
        self.combine = m.position_combine
        self.patch = tuple(patch) if patch else None  # inputs cut into this grid of patches
        if self.patch:
            index_dims = tuple(n // p for n, p in zip(index_dims, self.patch, strict=True))
            channels = channels * math.prod(self.patch)
        self.index_dims = tuple(index_dims)
        self.num_items = math.prod(index_dims)
        entry = extend.get("position_encoding", m.position_encoding)
        self.encoding = entry.obj(extend.knobs_of(m, "position_encoding"), m,
                                  grid=self.index_dims, channels=channels, pos_dim=pos_dim,
                                  modality=modality, rngs=rngs)
        self.width = int(self.encoding.width)
        if self.combine == "add" and self.width not in (0, channels):
            raise ConfigError(f"model.position_encoding={m.position_encoding!r} gives "
                              f"{self.width} channels; model.position_combine='add' needs "
                              f"the inputs' {channels}")
        self.out_channels = channels + (self.width if self.combine == "concat" else 0)

    def __call__(
        self, inputs: jax.Array, positions: jax.Array | None = None, index: jax.Array | None = None
    ) -> jax.Array:
        batch = inputs.shape[0]
        if self.patch:
            inputs = patches(inputs, self.patch)  # [B, *grid, prod(patch) C]
        x = inputs.reshape(batch, -1, inputs.shape[-1])  # [B, M, C_in]
        if not self.width:
            return x
        pe = self.encoding(positions, index)
        pe = jnp.broadcast_to(pe, (batch, *pe.shape[-2:])) if pe.ndim == 2 else pe
        pe = pe.astype(x.dtype)
        return jnp.concatenate([x, pe], axis=-1) if self.combine == "concat" else x + pe
