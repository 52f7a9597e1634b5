"""Which reader loads each task (``data.task`` -> a function of the data config)."""

from __future__ import annotations

from collections.abc import Callable

from suite.config import DataConfig
from suite.data import av, folders, formats, procedural
from suite.data.sources import Split

READERS: dict[str, Callable[[DataConfig], tuple[Split, Split]]] = {
    "digits": procedural.digits,
    "mnist": formats.idx_images,
    "fashion_mnist": formats.idx_images,
    "cifar10": formats.cifar,
    "cifar100": formats.cifar,
    "image_folder": folders.image_folder,
    "imagenet": folders.image_folder,
    "modelnet40": formats.modelnet40,
    "shapes3d": procedural.shapes3d,
    "mnist1d": procedural.mnist1d,
    "wav_folder": folders.wav_folder,
    "wav_manifest": folders.wav_manifest,
    "audioset": folders.wav_manifest,
    "synthetic": procedural.synthetic,
    "video_folder": av.video_folder,
    "av_manifest": av.av_manifest,
    "shape_tone": av.shape_tone,
}
