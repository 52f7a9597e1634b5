"""Splits in memory, where a task's files live, and the checks every reader shares.

The readers themselves are in ``formats`` (standard files), ``folders`` (class folders)
and ``procedural`` (no files); ``readers`` maps each task to one.

Every reader returns ``(train, eval)`` :class:`Split`s with inputs shaped
``[n, *index_dims, C]`` (uint8 for images, float32 otherwise), integer labels, and
explicit ``positions [n, M, p]`` for point clouds. Malformed files raise
:class:`DataError` with what was expected, where, and how to get it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from suite.config import DataConfig
from suite.errors import DataError
from suite.tasks import DATA_ENV

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
    "wav_manifest": "list clips in train.csv and eval.csv: a 'path,labels' header, labels "
                    "joined by ';', paths relative to the folder",
    "audioset": "list clips in train.csv and eval.csv: a 'path,labels' header, labels "
                "joined by ';', paths relative to the folder",
    "video_folder": "make one sub-folder of video files per class (optionally in train/, val/)",
    "av_manifest": "list clips in train.csv and eval.csv: a 'video,audio,labels' header, "
                   "labels joined by ';', paths relative to the folder",
}


@dataclasses.dataclass
class Split:
    """One split in memory. ``inputs [n, *index_dims, C]``; ``positions [n, M, p]`` or None."""

    inputs: np.ndarray
    labels: np.ndarray
    positions: np.ndarray | None = None
    skipped: tuple[tuple[str, str], ...] = ()  # (path, reason) of files dropped on reading
    notes: tuple[str, ...] = ()  # what reading did to the files (resampled, cut, padded)

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: np.ndarray | slice) -> Split:
        pos = None if self.positions is None else self.positions[idx]
        inputs = ({k: v[idx] for k, v in self.inputs.items()} if isinstance(self.inputs, dict)
                  else self.inputs[idx])  # several modalities: one array each
        return Split(inputs, self.labels[idx], pos, self.skipped, self.notes)


def data_dir(cfg: DataConfig) -> Path:
    """Where a task's files live: data.data_dir, then $PERCEIVER_SUITE_DATA/<task>, then default."""
    if cfg.data_dir:
        return Path(cfg.data_dir).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser() / cfg.task
    if cfg.task in DEFAULT_DIRS:
        return Path(DEFAULT_DIRS[cfg.task])
    return Path("data") / cfg.task


def missing_error(cfg: DataConfig, what: str, where: Path) -> DataError:
    how = HOW_TO_GET.get(cfg.task, "")
    return DataError(
        f"{cfg.task}: {what} not found in {where} (set data.data_dir or ${DATA_ENV}"
        f"{'; ' + how if how else ''})"
    )


def holdout(split: Split, fraction: float, seed: int = 0) -> tuple[Split, Split]:
    """Carve a deterministic eval split from a format that has none."""
    order = np.random.default_rng(seed).permutation(len(split))
    n_eval = max(1, int(round(fraction * len(split))))
    held = split.take(np.sort(order[:n_eval]))  # files dropped on reading count once, as train
    return split.take(np.sort(order[n_eval:])), dataclasses.replace(held, skipped=())


def class_of(labels: np.ndarray) -> np.ndarray:
    """Each example's class for stratifying: its label, or a multi-hot row's first label
    (-1 for a row without any)."""
    if labels.ndim == 1:
        return labels.astype(np.int64)
    return np.where(labels.any(axis=1), labels.argmax(axis=1), -1).astype(np.int64)


def stratified(split: Split, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded, class-stratified subset of ``n`` examples.

    Each class keeps its share of the split (largest remainders, ties broken by the
    seed), and every class keeps at least one example when ``n`` allows: the subset of
    a class-sorted folder is never just its first classes.
    """
    total = len(split)
    if n >= total:
        return np.arange(total)
    rng = np.random.default_rng(seed)
    classes, members = np.unique(class_of(split.labels), return_inverse=True)
    counts = np.bincount(members, minlength=len(classes))
    exact = n * counts / total
    quota = np.floor(exact).astype(int)
    order = np.lexsort((rng.permutation(len(classes)), -(exact - quota)))
    quota[order[: n - quota.sum()]] += 1
    if n >= len(classes):  # no class left out: take from the largest quotas
        for c in np.flatnonzero(quota == 0):
            quota[int(np.argmax(quota))] -= 1
            quota[c] = 1
    picked = [rng.choice(np.flatnonzero(members == c), q, replace=False)
              for c, q in enumerate(quota) if q]
    return np.sort(np.concatenate(picked))


def class_counts(split: Split, num_classes: int) -> list[int]:
    """Examples per class (multi-hot: per label, so a clip counts once per label)."""
    if split.labels.ndim == 2:
        return split.labels.astype(bool).sum(axis=0).astype(int).tolist()
    return np.bincount(split.labels.astype(np.int64), minlength=num_classes).tolist()


def check_labels(split: Split, num_classes: int, where: str) -> None:
    if split.labels.ndim == 2:  # multi-hot: one column per class
        if split.labels.shape[1] != num_classes:
            raise DataError(f"{where}: {split.labels.shape[1]} label columns for "
                            f"data.num_classes={num_classes}")
        return
    if len(split) and (split.labels.min() < 0 or split.labels.max() >= num_classes):
        bad = split.labels[(split.labels < 0) | (split.labels >= num_classes)][0]
        raise DataError(
            f"{where}: label {int(bad)} is out of range for {num_classes} classes "
            f"(data.num_classes={num_classes})"
        )


