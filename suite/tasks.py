"""Static facts about each data task: input layout, classes, position geometry.

Kept apart from the loaders (``suite.data``) so that configs can be resolved and
models described without importing grain or reading a single file.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

DATA_ENV = "PERCEIVER_SUITE_DATA"  # root folder holding one sub-folder per task


def chosen_location(cfg) -> str | None:
    """Where ``$PERCEIVER_SUITE_DATA`` sends a task's files (absolute), or None where the
    config alone says (``data.data_dir``, or the task's default place). Part of a run's
    identity: pointing the variable at other data makes other runs."""
    if cfg.data_dir or not os.environ.get(DATA_ENV):
        return None
    return str(Path(os.environ[DATA_ENV]).expanduser().absolute() / cfg.task)


# Optional dependencies, installed as ``pip install 'perceiver-suite[EXTRA]'``: the
# module each extra brings, and what it reads. A task names the ones it needs
# (``TaskInfo.extras``); ``needed_extras`` adds the ones a config's options need.
EXTRAS: dict[str, tuple[str, str]] = {
    "video": ("av", "decodes video files"),
    "audio": ("librosa", "resamples audio, draws mel spectrograms"),
    "modelnet": ("h5py", "reads HDF5 files"),
}


def needed_extras(data) -> tuple[str, ...]:
    """The extras that reading ``data``'s task needs (a ``DataConfig``): the task's own,
    plus ``audio`` where a fed audio modality becomes a log-mel spectrogram."""
    info = TASKS.get(data.task)
    needed = list(info.extras) if info else []
    audio_fed = info is not None and "audio" in dict(info.modalities) and (
        not data.modalities or "audio" in data.modalities)
    if audio_fed and data.audio_features == "mel" and "audio" not in needed:
        needed.append("audio")
    return tuple(needed)


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """What the model needs to know about a task before seeing any data."""

    index_dims: tuple[int, ...]  # shape of the input array without channels (M = prod)
    channels: int  # C, channels per input item before position features
    num_classes: int
    # Point clouds carry explicit coordinates of this dimensionality; grids use index_dims.
    pos_dim: int | None = None
    # Fourier max resolution when the task is not a grid (point clouds): per position dim.
    max_resolution: tuple[float, ...] | None = None
    multi_label: bool = False
    description: str = ""
    # Several modalities: (name, (index_dims, channels)) each, fed as one input array
    # per modality; the fields above then describe none of them.
    modalities: tuple[tuple[str, tuple[tuple[int, ...], int]], ...] = ()
    # The package extras reading its data needs (keys of EXTRAS): digits needs none.
    extras: tuple[str, ...] = ()

    @property
    def explicit_positions(self) -> bool:
        return self.pos_dim is not None


TASKS: dict[str, TaskInfo] = {
    "digits": TaskInfo((8, 8), 1, 10, description="scikit-learn's bundled 8x8 digits (offline)"),
    "mnist": TaskInfo((28, 28), 1, 10, description="MNIST IDX files"),
    "fashion_mnist": TaskInfo((28, 28), 1, 10, description="Fashion-MNIST IDX files"),
    "cifar10": TaskInfo((32, 32), 3, 10, description="CIFAR-10 python pickle batches"),
    "cifar100": TaskInfo((32, 32), 3, 100, description="CIFAR-100 python pickle files"),
    "image_folder": TaskInfo((32, 32), 3, 10, description="one folder per class of PNG/JPEG"),
    "imagenet": TaskInfo(
        (224, 224), 3, 1000, description="ImageNet as class folders (train/ and val/)"
    ),
    # Paper, section 4.3: max frequency 1120 = 10x ImageNet's, i.e. max_resolution 2240.
    "modelnet40": TaskInfo(
        (2048,), 3, 40, pos_dim=3, max_resolution=(2240.0,) * 3,
        description="modelnet40_ply_hdf5_2048 HDF5 point clouds", extras=("modelnet",),
    ),
    "shapes3d": TaskInfo(
        (512,), 3, 5, pos_dim=3, max_resolution=(2240.0,) * 3,
        description="procedural point clouds on the surfaces of 5 solids",
    ),
    "mnist1d": TaskInfo((40,), 1, 10, description="procedural 1-D digits (mnist1d generator)"),
    "wav_folder": TaskInfo((4096,), 1, 10, description="one folder per class of WAV files",
                           extras=("audio",)),
    "wav_manifest": TaskInfo(
        (4096,), 1, 10, multi_label=True,
        description="WAV clips with several labels each, listed in train.csv / eval.csv",
        extras=("audio",),
    ),
    # Paper, section 4.2: 61,440 raw samples as 480 vectors of 128; 527 classes, multi-label.
    "audioset": TaskInfo(
        (480,), 128, 527, multi_label=True,
        description="AudioSet-style raw audio: WAV clips listed in train.csv / eval.csv",
        extras=("audio",),
    ),
    "synthetic": TaskInfo((8, 8), 1, 10, description="tiny random data for tests/benchmarks"),
    "video_folder": TaskInfo((8, 32, 32), 3, 10, extras=("video",),
                             description="one folder per class of video files (MP4, AVI, ...)"),
    # A moving square and a tone: the label is the direction and the pitch together, so
    # each modality alone tells half of it.
    "shape_tone": TaskInfo((8, 16, 16), 3, 4, modalities=(
        ("audio", ((4096,), 1)), ("video", ((8, 16, 16), 3))),
        description="procedural audio+video: a moving square and a tone, 4 classes"),
    "av_manifest": TaskInfo((8, 32, 32), 3, 10, multi_label=True, modalities=(
        ("audio", ((16000,), 1)), ("video", ((8, 32, 32), 3))),
        description="video and WAV clips with several labels each, in train.csv / eval.csv",
        extras=("video", "audio")),
}
