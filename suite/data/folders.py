"""Class-folder readers: one sub-folder of PNG/JPEG images or WAV files per class,
optionally split into ``train/`` and ``val/`` (or ``test/``)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from suite.config import DataConfig
from suite.data.sources import Split, data_dir, holdout, missing_error
from suite.errors import DataError


def _class_folders(root: Path, cfg: DataConfig, exts: tuple[str, ...]) -> dict[str, list[Path]]:
    if not root.is_dir():
        raise missing_error(cfg, "directory", root)
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if not classes:
        raise missing_error(cfg, "class sub-folders", root)
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

