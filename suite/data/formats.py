"""Readers of the standard files: MNIST-style IDX, CIFAR python pickles, ModelNet40 HDF5."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

from suite.config import DataConfig
from suite.data import extras
from suite.data.sources import Split, check_labels, data_dir, missing_error
from suite.errors import DataError


def _open_maybe_gz(path: Path) -> bytes:
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            return f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({e}); the file may be truncated") from None


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST format): magic 0x0000 08 <ndim>, big-endian dims, uint8 data."""
    raw = _open_maybe_gz(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or not 1 <= raw[3] <= 4:
        magic = raw[:4].hex() if len(raw) >= 4 else raw.hex()
        raise DataError(
            f"{path}: wrong magic number 0x{magic} (expected 0x000008NN for unsigned-byte IDX)"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated header ({len(raw)} bytes)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: truncated or padded: {len(raw) - header} data bytes for shape "
            f"{list(dims)} (expected {expected})"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find(root: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        if (root / name).is_file():
            return root / name
    return None


def idx_images(cfg: DataConfig) -> tuple[Split, Split]:
    """MNIST / Fashion-MNIST from the four standard IDX files (gzipped or not)."""
    root = data_dir(cfg)
    if not root.is_dir():
        raise missing_error(cfg, "directory", root)
    splits = []
    for prefix in ("train", "t10k"):
        img_path = _find(root, f"{prefix}-images-idx3-ubyte")
        lab_path = _find(root, f"{prefix}-labels-idx1-ubyte")
        if img_path is None or lab_path is None:
            wanted = f"{prefix}-images-idx3-ubyte(.gz) / {prefix}-labels-idx1-ubyte(.gz)"
            raise missing_error(cfg, wanted, root)
        images, labels = read_idx(img_path), read_idx(lab_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"{img_path}: {images.shape} images do not match {labels.shape} labels in "
                f"{lab_path.name}"
            )
        split = Split(images[..., None], labels.astype(np.int32))
        check_labels(split, cfg.num_classes, str(lab_path))
        splits.append(split)
    return splits[0], splits[1]


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except FileNotFoundError:
        raise
    except Exception as e:  # truncated or not a pickle
        raise DataError(f"{path}: not a readable CIFAR python batch ({type(e).__name__})") from None


def cifar(cfg: DataConfig) -> tuple[Split, Split]:
    """CIFAR-10 (data_batch_1..5, test_batch) or CIFAR-100 (train, test) python pickles."""
    root = data_dir(cfg)
    if not root.is_dir():
        raise missing_error(cfg, "directory", root)
    if cfg.task == "cifar10":
        names = ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"])
        label_key = b"labels"
    else:
        names = (["train"], ["test"])
        label_key = b"fine_labels"
    splits = []
    for files in names:
        xs, ys = [], []
        for name in files:
            path = root / name
            if not path.is_file():
                raise missing_error(cfg, name, root)
            batch = _unpickle(path)
            if b"data" not in batch or label_key not in batch:
                raise DataError(f"{path}: missing b'data' or {label_key!r} (not a CIFAR batch)")
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            if data.ndim != 2 or data.shape[1] != 3072:
                raise DataError(f"{path}: data has shape {data.shape}, expected [n, 3072]")
            xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(np.asarray(batch[label_key], dtype=np.int32))
        split = Split(np.concatenate(xs), np.concatenate(ys))
        check_labels(split, cfg.num_classes, str(root / files[0]))
        splits.append(split)
    return splits[0], splits[1]



def modelnet40(cfg: DataConfig) -> tuple[Split, Split]:
    """``modelnet40_ply_hdf5_2048``: ply_data_{train,test}*.h5 with ``data`` and ``label``."""
    h5py = extras.module("modelnet")
    root = data_dir(cfg)
    if not root.is_dir():
        raise missing_error(cfg, "directory", root)
    splits = []
    for part in ("train", "test"):
        files = sorted(root.glob(f"ply_data_{part}*.h5"))
        if not files:
            raise missing_error(cfg, f"ply_data_{part}*.h5", root)
        xs, ys = [], []
        for path in files:
            try:
                with h5py.File(path, "r") as f:
                    if "data" not in f or "label" not in f:
                        raise DataError(f"{path}: expected datasets 'data' and 'label', found "
                                        f"{sorted(f.keys())}")
                    xs.append(np.asarray(f["data"], dtype=np.float32))
                    ys.append(np.asarray(f["label"]).reshape(-1).astype(np.int32))
            except OSError as e:
                raise DataError(f"{path}: not a readable HDF5 file ({e})") from None
        points = np.concatenate(xs)
        n_points = cfg.index_dims[0]
        if points.ndim != 3 or points.shape[2] != 3 or points.shape[1] < n_points:
            raise DataError(f"{files[0]}: points have shape {points.shape}, expected "
                            f"[n, >= {n_points}, 3] (data.index_dims={list(cfg.index_dims)})")
        points = points[:, :n_points]
        split = Split(points, np.concatenate(ys), positions=points)
        check_labels(split, cfg.num_classes, str(files[0]))
        splits.append(split)
    return splits[0], splits[1]


