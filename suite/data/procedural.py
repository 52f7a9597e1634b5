"""Data sets that need no files: scikit-learn's bundled digits, procedural point clouds,
the mnist1d generator, and tiny random data for tests."""

from __future__ import annotations

import numpy as np

from suite.config import DataConfig
from suite.data.sources import Split, holdout


def digits(cfg: DataConfig) -> tuple[Split, Split]:
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0..16), held out by seed."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images * (255.0 / 16.0)).round().astype(np.uint8)[..., None]
    return holdout(Split(images, d.target.astype(np.int32)), cfg.eval_fraction)



def _sample_solid(kind: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """n points on the surface of a unit solid: sphere, cube, cylinder, cone, torus."""
    if kind == 0:  # sphere
        p = rng.normal(size=(n, 3))
        return p / np.linalg.norm(p, axis=1, keepdims=True)
    if kind == 1:  # cube: pick a face, uniform on it
        p = rng.uniform(-1, 1, size=(n, 3))
        axis = rng.integers(0, 3, n)
        p[np.arange(n), axis] = rng.choice([-1.0, 1.0], n)
        return p
    if kind == 2:  # cylinder side
        t = rng.uniform(0, 2 * np.pi, n)
        return np.stack([np.cos(t), np.sin(t), rng.uniform(-1, 1, n)], axis=1)
    if kind == 3:  # cone side
        t, h = rng.uniform(0, 2 * np.pi, n), np.sqrt(rng.uniform(0, 1, n))
        return np.stack([h * np.cos(t), h * np.sin(t), 1 - 2 * h], axis=1)
    t, s = rng.uniform(0, 2 * np.pi, n), rng.uniform(0, 2 * np.pi, n)  # torus
    r = 1.0 + 0.35 * np.cos(s)
    return np.stack([r * np.cos(t), r * np.sin(t), 0.35 * np.sin(s)], axis=1) / 1.35


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def shapes3d(cfg: DataConfig, n_train: int = 2000, n_eval: int = 500) -> tuple[Split, Split]:
    """Procedural point clouds: 5 solids with random pose, anisotropic scale and noise."""
    n_points = cfg.index_dims[0]

    def make(n: int, seed: int) -> Split:
        rng = np.random.default_rng(seed)
        labels = rng.integers(0, 5, n).astype(np.int32)
        clouds = np.empty((n, n_points, 3), dtype=np.float32)
        for i, kind in enumerate(labels):
            p = _sample_solid(int(kind), n_points, rng) * rng.uniform(0.6, 1.0, 3)
            p = p @ _random_rotation(rng).T + rng.normal(scale=0.01, size=p.shape)
            clouds[i] = p
        return Split(clouds, labels, positions=clouds)

    return make(n_train, 1), make(n_eval, 2)


def mnist1d(cfg: DataConfig) -> tuple[Split, Split]:
    """The procedural 1-D digits from the ``mnist1d`` package's generator (no download)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.final_seq_length = cfg.index_dims[0]
    state = np.random.get_state()  # the generator seeds numpy's global RNG
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(state)
    train = Split(d["x"].astype(np.float32)[..., None], d["y"].astype(np.int32))
    test = Split(d["x_test"].astype(np.float32)[..., None], d["y_test"].astype(np.int32))
    return train, test


def synthetic(cfg: DataConfig, n_train: int = 512, n_eval: int = 128) -> tuple[Split, Split]:
    """Random inputs whose label is set by the mean of one channel: learnable, tiny."""
    def make(n: int, seed: int) -> Split:
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(n, *cfg.index_dims, cfg.channels)).astype(np.float32)
        score = x.reshape(n, -1).mean(axis=1)
        edges = np.quantile(score, np.linspace(0, 1, cfg.num_classes + 1)[1:-1])
        labels = np.searchsorted(edges, score).astype(np.int32)
        pos = None
        if cfg.pos_dim:
            m = int(np.prod(cfg.index_dims))
            pos = rng.uniform(-1, 1, size=(n, m, cfg.pos_dim)).astype(np.float32)
        return Split(x, labels, pos)

    return make(n_train, 11), make(n_eval, 12)
