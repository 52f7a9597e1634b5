"""Readers of video and of audio+video: class folders of video files (``video_folder``), a
manifest of video and WAV clips with labels (``av_manifest``), and a procedural
audio-visual set whose label needs both (``shape_tone``).

Video files stream: they are decoded one at a time in the loader (``suite.data.video``).
WAV clips are read at load, resampled to ``data.sample_rate`` (soxr, through librosa)
and cut or zero-padded to the modality's samples (``Split.notes`` counts them); one that
does not read is left out (``data.bad_examples=skip``) or fatal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from suite.config import DataConfig
from suite.config.layout import layouts
from suite.data.folders import ClipNotes, read_wav
from suite.data.sources import Split, data_dir, missing_error
from suite.data.video import VIDEO_EXTS, VideoFiles
from suite.errors import DataError


def video_folder(cfg: DataConfig) -> tuple[Split, Split]:
    """One folder per class of video files (optionally under ``train/`` and ``val/``):
    clips ``[T, H, W, 3]`` (``data.index_dims``) streamed from the files."""
    from suite.data import folders

    if len(cfg.index_dims) != 3 or cfg.channels != 3:
        raise DataError(f"video_folder: data.index_dims={list(cfg.index_dims)} and "
                        f"data.channels={cfg.channels} must describe RGB clips [T, H, W] x 3")

    def read(files: dict[str, list[Path]], classes: list[str], c: DataConfig) -> Split:
        paths, labels = folders.labelled(files, classes, c)
        return Split(VideoFiles(paths, tuple(c.index_dims), c.fps, c.frame_stride), labels)

    return folders.folder_splits(cfg, VIDEO_EXTS, read)


def av_manifest(cfg: DataConfig) -> tuple[Split, Split]:
    """``train.csv`` / ``eval.csv`` with a ``video,audio,labels`` header (paths relative to
    the folder, labels joined by ``;``): multi-hot labels, video streamed, audio in
    memory."""
    from suite.data.folders import manifest_rows

    root = data_dir(cfg)
    lays = {lay.name: lay for lay in layouts_of(cfg)}
    samples = lays["audio"].dims[0] if cfg.audio_features == "raw" else \
        (lays["audio"].dims[0] - 1) * max(1, cfg.sample_rate // 100)
    splits, classes = [], None
    for name in ("train.csv", "eval.csv"):
        if not (root / name).is_file():
            raise missing_error(cfg, name, root)
        rows = manifest_rows(root / name, ("video", "audio"))
        classes = classes or sorted({t for _, labels in rows for t in labels})
        if len(classes) > cfg.num_classes:
            raise DataError(f"{root / name}: {len(classes)} labels but data.num_classes="
                            f"{cfg.num_classes}; set data.num_classes={len(classes)}")
        hot = np.zeros((len(rows), cfg.num_classes), np.float32)
        audio, kept, skipped, notes = [], [], [], ClipNotes(cfg.sample_rate, samples)
        for i, (paths, labels) in enumerate(rows):
            unknown = [t for t in labels if t not in classes]
            if unknown:
                raise DataError(f"{root / name}: label {unknown[0]!r} is not in train.csv")
            hot[i, [classes.index(t) for t in labels]] = 1.0
            try:
                clip = read_wav(root / paths["audio"], cfg.sample_rate, notes)
            except DataError as e:
                if cfg.bad_examples == "fail":
                    raise
                skipped.append((str(root / paths["audio"]), str(e)))
                continue
            padded = np.zeros(samples, np.float32)
            padded[: min(samples, len(clip))] = clip[:samples]
            audio.append(padded)
            kept.append(i)
        if not kept:
            raise DataError(f"{root / name}: none of its {len(rows)} audio clips reads")
        videos = VideoFiles([root / rows[i][0]["video"] for i in kept], lays["video"].dims,
                            cfg.fps, cfg.frame_stride)
        splits.append(Split({"audio": np.stack(audio), "video": videos}, hot[kept], None,
                            tuple(skipped), notes.lines()))
    return splits[0], splits[1]


def layouts_of(cfg: DataConfig):
    """The layouts of every modality the task has (readers read all, whatever is fed)."""
    import dataclasses

    from suite.config.schema import Config
    from suite.tasks import TASKS

    every = tuple(sorted(n for n, _ in TASKS[cfg.task].modalities))
    return layouts(Config(data=dataclasses.replace(cfg, modalities=every)))


def shape_tone(cfg: DataConfig, n_train: int = 2048, n_eval: int = 512) -> tuple[Split, Split]:
    """A square moving left or right across the frames and a low or a high tone: the label
    (4 classes) is the direction and the pitch together, so either modality alone can tell
    at most half of it. Sizes, speed, start, loudness, pitch and noise vary per clip."""
    lays = {lay.name: lay for lay in layouts_of(cfg)}
    t, h, w = lays["video"].dims
    samples = lays["audio"].dims[0] if cfg.audio_features == "raw" else \
        (lays["audio"].dims[0] - 1) * max(1, cfg.sample_rate // 100)

    def make(n: int, seed: int) -> Split:
        rng = np.random.default_rng(seed)
        labels = rng.integers(0, 4, n).astype(np.int32)
        direction, pitch = labels // 2, labels % 2
        video = rng.integers(0, 90, (n, t, h, w, 3), dtype=np.uint8)  # busy background
        side = rng.integers(max(2, h // 5), max(3, h // 3), n)
        for i in range(n):
            s = int(side[i])
            top = int(rng.integers(0, h - s + 1))
            x0 = rng.uniform(0, w - s)
            speed = rng.uniform(0.4, 1.0) * (w - s) / max(1, t - 1) * (1 if direction[i] else -1)
            colour = rng.integers(80, 160, 3)  # a faint square
            for f in range(t):
                x = int(np.clip(round(x0 + speed * f), 0, w - s))
                video[i, f, top:top + s, x:x + s] = colour
        time = np.arange(samples) / cfg.sample_rate
        base = np.where(pitch == 1, 1200.0, 400.0) * rng.uniform(0.9, 1.1, n)
        audio = (rng.uniform(0.2, 0.8, (n, 1)) * np.sin(2 * np.pi * base[:, None] * time)
                 + 1.5 * rng.normal(size=(n, samples))).astype(np.float32)  # a faint tone
        return Split({"audio": audio, "video": video}, labels)

    return make(n_train, 21), make(n_eval, 22)
