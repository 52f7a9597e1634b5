"""Examples of several modalities (``data.modalities``): one array per modality, each
prepared on its own (video clips and crops, audio cut or padded, or its log-mel
spectrogram), normalised with its own statistics, and in training each modality dropped
per example with ``data.modality_dropout``'s chance (``keep``: the model masks a dropped
modality's inputs out of the cross-attention).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from suite.config import DataConfig
from suite.config.layout import MEL_BINS, Layout, layouts, mel_hop
from suite.data import extras, video
from suite.data.images import ImageFiles
from suite.data.sources import Split
from suite.errors import DataError


def streamed_files(split: Split) -> Any:
    """The split's files decoded in the loader (images or videos), or None."""
    inputs = split.inputs
    if isinstance(inputs, dict):
        return next((v for v in inputs.values() if isinstance(v, video.VideoFiles | ImageFiles)),
                    None)
    return inputs if isinstance(inputs, video.VideoFiles | ImageFiles) else None


def config_layouts(cfg: DataConfig) -> dict[str, Layout]:
    from suite.config.schema import Config

    return {lay.name: lay for lay in layouts(Config(data=cfg))}


def audio_features(x: np.ndarray, lay: Layout, cfg: DataConfig) -> np.ndarray:
    """Raw samples ``[S]`` -> the layout's ``[samples, 1]`` (cut or zero-padded), or a
    log-mel spectrogram ``[frames, 64, 1]`` (librosa; hop 10 ms, window 4 hops)."""
    x = np.asarray(x, np.float32).reshape(-1)
    if cfg.audio_features == "raw":
        out = np.zeros(lay.dims[0], np.float32)
        out[: min(len(x), lay.dims[0])] = x[: lay.dims[0]]
        return out[:, None]
    librosa = extras.module("audio")
    hop = mel_hop(cfg)
    samples = (lay.dims[0] - 1) * hop
    y = np.zeros(samples, np.float32)
    y[: min(len(x), samples)] = x[:samples]
    mel = librosa.feature.melspectrogram(y=y, sr=cfg.sample_rate, n_fft=4 * hop,
                                         hop_length=hop, n_mels=MEL_BINS)
    return np.log(mel.T + 1e-6).astype(np.float32)[: lay.dims[0], :, None]


def prepare(name: str, raw: Any, lay: Layout, cfg: DataConfig, rng: np.random.Generator | None,
            augment: bool) -> np.ndarray:
    """One modality of one example, before normalisation, in the layout's shape."""
    if name == "video":
        frames = raw if isinstance(raw, video.Frames) else np.asarray(raw)
        if isinstance(frames, np.ndarray) and frames.shape == (*lay.dims, 3):
            return frames.astype(np.float32)  # already a clip (procedural)
        return video.clip(frames, lay.dims, cfg.frame_stride, rng, augment).astype(np.float32)
    if name == "audio":
        return audio_features(raw, lay, cfg)
    raise DataError(f"modality {name!r} has no preparation")


def statistics(split: Split, cfg: DataConfig, limit: int = 64
               ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-modality, per-channel mean and std of up to ``limit`` training examples."""
    lays = config_layouts(cfg)  # the fed modalities
    mean, std = {}, {}
    picks = np.linspace(0, len(split) - 1, min(limit, len(split))).astype(int)
    for name, lay in lays.items():
        values = []
        for i in picks:
            try:
                values.append(prepare(name, split.inputs[name][int(i)], lay, cfg, None, False))
            except DataError:
                continue
        if not values:
            raise DataError(f"{cfg.task}: none of {len(picks)} sampled {name} inputs reads")
        flat = np.concatenate([v.reshape(-1, lay.channels) for v in values]).astype(np.float64)
        mean[name], std[name] = flat.mean(axis=0), np.maximum(flat.std(axis=0), 1e-6)
    return mean, std


class Transform:
    """Per-example preparation of every modality; picklable for grain's workers."""

    def __init__(self, ds: Any, augment: bool):
        self.cfg, self.mean, self.std, self.augment = ds.config, ds.mean, ds.std, augment
        self.layouts = config_layouts(ds.config)
        self.dropout = dict(ds.config.modality_dropout)

    def __call__(self, rec: dict[str, Any], rng: np.random.Generator | None) -> dict[str, Any]:
        label = rec["label"]
        out: dict[str, Any] = {"label": label.astype(np.float32) if np.ndim(label)
                               else np.int32(label)}
        out["inputs"] = {
            name: ((prepare(name, rec["inputs"][name], lay, self.cfg, rng, self.augment)
                    - self.mean[name]) / self.std[name]).astype(np.float32)
            for name, lay in self.layouts.items()}
        if rng is not None and self.dropout:  # training: which modalities this example feeds
            keep = {n: np.float32(rng.random() >= self.dropout.get(n, 0.0))
                    for n in self.layouts}
            if not any(keep.values()):  # never all: the softmax needs something to attend to
                keep = {n: np.float32(1.0) for n in keep}
            out["keep"] = keep
        if "bad" in rec:
            out["bad"] = rec["bad"]
        return out
