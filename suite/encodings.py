"""Position encodings: Fourier features (as the official Perceiver code) and learned.

Pure functions on positions; the model decides where they come from (an input grid,
explicit point coordinates, or a permutation of grid items).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx


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


class LearnedPositions(nnx.Module):
    """A learned table of position encodings, one row per input item, ``[M, width]``.

    Paper Table 2 ("learned pos."): 128 channels; an init scale of 1.0 worked best.
    """

    def __init__(self, num_items: int, width: int, init_scale: float, *, rngs: nnx.Rngs):
        init = nnx.initializers.truncated_normal(stddev=init_scale, lower=-2.0, upper=2.0)
        self.table = nnx.Param(init(rngs.params(), (num_items, width)))

    def __call__(self, index: jnp.ndarray | None = None) -> jnp.ndarray:
        """Rows for item ``index`` (``[..., M]`` ints), or the whole table."""
        table = self.table[...]
        return table if index is None else table[index]
