"""Readers for the formats researchers have on disk, into in-memory numpy splits.

Every reader returns ``(train, eval)`` :class:`Split`s with inputs shaped
``[n, *index_dims, C]`` (uint8 for images, float32 otherwise), integer labels, and
explicit ``positions [n, M, p]`` for point clouds. Malformed files raise
:class:`DataError` with what was expected, where, and how to get it.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import struct
import wave
from pathlib import Path

import numpy as np

from suite.config import DataConfig
from suite.errors import DataError

DATA_ENV = "PERCEIVER_SUITE_DATA"  # root folder holding one sub-folder per task
DEFAULT_DIRS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist"}  # Debian's package
HOW_TO_GET = {
    "fashion_mnist": "install Debian's dataset-fashion-mnist or put the 4 IDX files there",
    "mnist": "put train-/t10k-images-idx3-ubyte(.gz) and -labels-idx1-ubyte(.gz) there",
    "cifar10": "unpack cifar-10-python.tar.gz there (data_batch_1..5, test_batch)",
    "cifar100": "unpack cifar-100-python.tar.gz there (train, test)",
    "modelnet40": "unpack modelnet40_ply_hdf5_2048.zip there (ply_data_*.h5)",
    "image_folder": "make one sub-folder of PNG/JPEG files per class (optionally in train/, val/)",
    "imagenet": "lay out ILSVRC as train/<class>/*.JPEG and val/<class>/*.JPEG",
    "wav_folder": "make one sub-folder of .wav files per class (optionally in train/, val/)",
}


@dataclasses.dataclass
class Split:
    """One split in memory. ``inputs [n, *index_dims, C]``; ``positions [n, M, p]`` or None."""

    inputs: np.ndarray
    labels: np.ndarray
    positions: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: np.ndarray | slice) -> Split:
        pos = None if self.positions is None else self.positions[idx]
        return Split(self.inputs[idx], self.labels[idx], pos)


def data_dir(cfg: DataConfig) -> Path:
    """Where a task's files live: data.data_dir, then $PERCEIVER_SUITE_DATA/<task>, then default."""
    if cfg.data_dir:
        return Path(cfg.data_dir).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser() / cfg.task
    if cfg.task in DEFAULT_DIRS:
        return Path(DEFAULT_DIRS[cfg.task])
    return Path("data") / cfg.task


def _missing(cfg: DataConfig, what: str, where: Path) -> DataError:
    how = HOW_TO_GET.get(cfg.task, "")
    return DataError(
        f"{cfg.task}: {what} not found in {where} (set data.data_dir or ${DATA_ENV}"
        f"{'; ' + how if how else ''})"
    )


def holdout(split: Split, fraction: float, seed: int = 0) -> tuple[Split, Split]:
    """Carve a deterministic eval split from a format that has none."""
    order = np.random.default_rng(seed).permutation(len(split))
    n_eval = max(1, int(round(fraction * len(split))))
    return split.take(np.sort(order[n_eval:])), split.take(np.sort(order[:n_eval]))


def check_labels(split: Split, num_classes: int, where: str) -> None:
    if len(split) and (split.labels.min() < 0 or split.labels.max() >= num_classes):
        bad = split.labels[(split.labels < 0) | (split.labels >= num_classes)][0]
        raise DataError(
            f"{where}: label {int(bad)} is out of range for {num_classes} classes "
            f"(data.num_classes={num_classes})"
        )


# ------------------------------------------------------------------------- formats


def digits(cfg: DataConfig) -> tuple[Split, Split]:
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0..16), held out by seed."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images * (255.0 / 16.0)).round().astype(np.uint8)[..., None]
    return holdout(Split(images, d.target.astype(np.int32)), cfg.eval_fraction)


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
        raise _missing(cfg, "directory", root)
    splits = []
    for prefix in ("train", "t10k"):
        img_path = _find(root, f"{prefix}-images-idx3-ubyte")
        lab_path = _find(root, f"{prefix}-labels-idx1-ubyte")
        if img_path is None or lab_path is None:
            wanted = f"{prefix}-images-idx3-ubyte(.gz) / {prefix}-labels-idx1-ubyte(.gz)"
            raise _missing(cfg, wanted, root)
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
        raise _missing(cfg, "directory", root)
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
                raise _missing(cfg, name, root)
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


def _class_folders(root: Path, cfg: DataConfig, exts: tuple[str, ...]) -> dict[str, list[Path]]:
    if not root.is_dir():
        raise _missing(cfg, "directory", root)
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if not classes:
        raise _missing(cfg, "class sub-folders", root)
    out = {}
    for c in classes:
        files = sorted(p for p in c.iterdir() if p.suffix.lower() in exts)
        if not files:
            raise DataError(f"{c}: empty class folder (expected {', '.join(exts)} files)")
        out[c.name] = files
    return out


def _folder_splits(cfg: DataConfig, exts: tuple[str, ...], read) -> tuple[Split, Split]:
    root = data_dir(cfg)
    train_dir = root / "train"
    eval_dir = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
    if train_dir.is_dir() and eval_dir is not None:
        train_files = _class_folders(train_dir, cfg, exts)
        classes = list(train_files)
        eval_files = _class_folders(eval_dir, cfg, exts)
        unknown = set(eval_files) - set(classes)
        if unknown:
            raise DataError(f"{eval_dir}: classes {sorted(unknown)} are not in {train_dir}")
        return (_read_folder(train_files, classes, cfg, read),
                _read_folder(eval_files, classes, cfg, read))
    files = _class_folders(root, cfg, exts)
    return holdout(_read_folder(files, list(files), cfg, read), cfg.eval_fraction)


def _read_folder(files: dict[str, list[Path]], classes: list[str], cfg: DataConfig, read) -> Split:
    if len(classes) > cfg.num_classes:
        raise DataError(
            f"{len(classes)} class folders but data.num_classes={cfg.num_classes}; "
            f"set data.num_classes={len(classes)}"
        )
    xs, ys = [], []
    for name, paths in files.items():
        for p in paths:
            xs.append(read(p, cfg))
            ys.append(classes.index(name))
    return Split(np.stack(xs), np.asarray(ys, dtype=np.int32))


def _read_image(path: Path, cfg: DataConfig) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    h, w = cfg.index_dims
    try:
        with Image.open(path) as im:
            im = im.convert("L" if cfg.channels == 1 else "RGB")
            if im.size != (w, h):  # resize the shorter side, centre crop
                scale = max(w / im.width, h / im.height)
                im = im.resize((max(w, round(im.width * scale)), max(h, round(im.height * scale))),
                               Image.BICUBIC)
                left, top = (im.width - w) // 2, (im.height - h) // 2
                im = im.crop((left, top, left + w, top + h))
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from None
    return arr.reshape(h, w, cfg.channels)


def image_folder(cfg: DataConfig) -> tuple[Split, Split]:
    """One folder per class of PNG/JPEG files, resized and centre-cropped to index_dims."""
    if len(cfg.index_dims) != 2 or cfg.channels not in (1, 3):
        raise DataError(
            f"{cfg.task}: data.index_dims={list(cfg.index_dims)} and data.channels={cfg.channels} "
            "must describe an image (2 dims, 1 or 3 channels)"
        )
    return _folder_splits(cfg, (".png", ".jpg", ".jpeg"), _read_image)


def _read_wav(path: Path, cfg: DataConfig) -> np.ndarray:
    """A mono PCM WAV as float32 in [-1, 1], cropped or zero-padded to index_dims[0] samples."""
    try:
        with wave.open(str(path), "rb") as w:
            width, channels, frames = w.getsampwidth(), w.getnchannels(), w.getnframes()
            raw = w.readframes(frames)
    except (wave.Error, EOFError, OSError) as e:
        raise DataError(f"{path}: not a readable PCM WAV file ({e})") from None
    dtype = {1: np.uint8, 2: np.int16, 4: np.int32}.get(width)
    if dtype is None:
        raise DataError(f"{path}: {8 * width}-bit samples are not supported (8, 16 or 32-bit PCM)")
    x = np.frombuffer(raw[: len(raw) - len(raw) % (width * channels)], dtype=dtype)
    x = x.reshape(-1, channels).mean(axis=1)
    x = (x - 128.0) / 128.0 if dtype is np.uint8 else x / float(np.iinfo(dtype).max)
    n = cfg.index_dims[0]
    out = np.zeros(n, dtype=np.float32)
    out[: min(n, len(x))] = x[:n]
    return out.reshape(n, 1)


def wav_folder(cfg: DataConfig) -> tuple[Split, Split]:
    """One folder per class of WAV files: 1-D raw audio, ``[n, samples, 1]``."""
    if len(cfg.index_dims) != 1 or cfg.channels != 1:
        raise DataError(f"wav_folder: needs data.index_dims=[samples] and data.channels=1, got "
                        f"{list(cfg.index_dims)} and {cfg.channels}")
    return _folder_splits(cfg, (".wav",), _read_wav)


def modelnet40(cfg: DataConfig) -> tuple[Split, Split]:
    """``modelnet40_ply_hdf5_2048``: ply_data_{train,test}*.h5 with ``data`` and ``label``."""
    import h5py

    root = data_dir(cfg)
    if not root.is_dir():
        raise _missing(cfg, "directory", root)
    splits = []
    for part in ("train", "test"):
        files = sorted(root.glob(f"ply_data_{part}*.h5"))
        if not files:
            raise _missing(cfg, f"ply_data_{part}*.h5", root)
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


# ---------------------------------------------------------------- procedural tasks


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


def no_loader(cfg: DataConfig) -> tuple[Split, Split]:
    raise DataError(f"{cfg.task}: no local loader exists for this task; it is for `describe` "
                    "and compute benchmarks only (use wav_folder for audio)")


READERS = {
    "digits": digits,
    "mnist": idx_images,
    "fashion_mnist": idx_images,
    "cifar10": cifar,
    "cifar100": cifar,
    "image_folder": image_folder,
    "imagenet": image_folder,
    "modelnet40": modelnet40,
    "shapes3d": shapes3d,
    "mnist1d": mnist1d,
    "wav_folder": wav_folder,
    "audioset": no_loader,
    "synthetic": synthetic,
}
