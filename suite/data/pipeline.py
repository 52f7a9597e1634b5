"""grain pipelines: deterministic shuffles, per-example transforms, savable iterators.

A batch is a dict of numpy arrays: ``inputs [B, *index_dims, C]`` (``[B, M, C]`` when
items are permuted), ``label [B]``, and, where the task needs them, ``positions
[B, M, p]`` (point clouds) or ``index [B, M]`` (which grid item each input came from,
so a permuted pixel keeps its own position encoding).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import grain
import numpy as np
from absl import flags

from suite.config import DataConfig
from suite.data import extras, images, multimodal, sources, video
from suite.data.images import ImageFiles
from suite.data.readers import READERS
from suite.data.sources import Split
from suite.data.video import VideoFiles
from suite.errors import DataError
from suite.tasks import TASKS

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)  # [DM] train/dataset.py MEAN_RGB
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)  # STDDEV_RGB

# grain's multi-process prefetch reads absl flags, which fail unless marked parsed.
if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


@dataclasses.dataclass
class Dataset:
    """A task's splits in memory, with the statistics used to normalise them."""

    config: DataConfig
    train: Split
    eval: Split
    mean: np.ndarray  # per channel, from the training split
    std: np.ndarray

    @property
    def point_cloud(self) -> bool:
        return TASKS[self.config.task].explicit_positions


def load(cfg: DataConfig, seed: int = 0) -> Dataset:
    """Read a task's files (or generate it), check shapes and labels, apply limits.

    ``data.train_limit`` / ``data.eval_limit`` keep a class-stratified subset drawn with
    ``seed`` (the run's): the same examples for every run of that seed.
    """
    extras.require(cfg)  # a missing optional dependency: one line, before any file is read
    try:
        train, eval_ = READERS[cfg.task](cfg)
    except FileNotFoundError as e:
        raise DataError(f"{cfg.task}: {e.filename}: file not found") from None
    expected = (*cfg.index_dims, cfg.channels)
    for name, split in (("train", train), ("eval", eval_)):
        if len(split) == 0:
            raise DataError(f"{cfg.task}: the {name} split is empty")
        if cfg.modalities:  # each modality is prepared to its layout in the loader
            sources.check_labels(split, cfg.num_classes, f"{cfg.task} {name} split")
            continue
        if split.inputs.shape[1:] != expected:
            raise DataError(
                f"{cfg.task}: {name} inputs have shape {list(split.inputs.shape[1:])}, but the "
                f"config says data.index_dims={list(cfg.index_dims)}, data.channels={cfg.channels}"
            )
        sources.check_labels(split, cfg.num_classes, f"{cfg.task} {name} split")
    if cfg.eval_split == "validation":
        train, eval_ = validation(train, cfg.eval_fraction)
    if cfg.train_limit:
        train = train.take(sources.stratified(train, cfg.train_limit, seed))
    if cfg.eval_limit:  # a validation split keeps one subset for every seed, as it is one
        eval_ = eval_.take(sources.stratified(
            eval_, cfg.eval_limit, 0 if cfg.eval_split == "validation" else seed))
    if cfg.modalities:  # per modality, from a sample of prepared training examples
        mean, std = multimodal.statistics(train, cfg)
        return Dataset(cfg, train, eval_, mean, std)
    if cfg.normalization == "imagenet":  # the official constants, on 0..255 values ([DM])
        mean, std = np.asarray(IMAGENET_MEAN), np.asarray(IMAGENET_STD)
    elif isinstance(train.inputs, ImageFiles | VideoFiles):  # streamed: a sample of crops
        mean, std = train.inputs.stats()
    else:
        axes = tuple(range(train.inputs.ndim - 1))
        sample = train.inputs[:4096].astype(np.float32)
        mean, std = sample.mean(axis=axes), np.maximum(sample.std(axis=axes), 1e-6)
    return Dataset(cfg, train, eval_, mean.astype(np.float32), std.astype(np.float32))


def validation(train: Split, fraction: float) -> tuple[Split, Split]:
    """Split the training split into (train, validation): a class-stratified share drawn
    with a fixed seed, so every run of a grid (any seed, any recipe) holds out the same
    examples and a recipe sweep never sees the test split."""
    held = sources.stratified(train, max(1, int(round(fraction * len(train)))), seed=0)
    if len(held) >= len(train):
        raise DataError(f"data.eval_split='validation': data.eval_fraction={fraction} of "
                        f"{len(train)} training examples leaves none to train on")
    rest = np.setdiff1d(np.arange(len(train)), held)
    lost = np.setdiff1d(sources.class_of(train.labels), sources.class_of(train.labels[rest]))
    if len(lost):  # a class with a single example would be held out whole
        raise DataError(f"data.eval_split='validation': data.eval_fraction={fraction} would "
                        f"hold out every training example of class {int(lost[0])}; "
                        "add examples of it or use data.eval_split='eval'")
    return train.take(rest), dataclasses.replace(train.take(held), skipped=())


MAX_REPLACEMENTS = 64  # unreadable files in a row before a split is taken as broken


class _Source:
    """Random access to one split's examples as dicts (grain's data-source protocol).

    A streamed split (image files) decodes here, in the loader's threads or workers. An
    unreadable file raises under ``data.bad_examples="fail"``; under ``"skip"`` the next
    readable example of the split takes its place (the same one every time: resume stays
    bit-identical) and the record says which index was bad (``bad``, -1 if none), for the
    trainer to name and count it, and for evaluation to weigh it 0.
    """

    def __init__(self, split: Split, skip: bool = False):
        self.split = split
        self.streamed = multimodal.streamed_files(split) is not None
        self.skip = skip and self.streamed

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        i = j = int(i)
        several = isinstance(self.split.inputs, dict)
        for _ in range(MAX_REPLACEMENTS):
            try:
                inputs = ({k: v[j] for k, v in self.split.inputs.items()} if several
                          else self.split.inputs[j])
                break
            except DataError:
                if not self.skip:
                    raise
                j = (j + 1) % len(self.split)
        else:
            raise DataError(f"{MAX_REPLACEMENTS} unreadable files in a row from "
                            f"{multimodal.streamed_files(self.split).paths[i]}: is this a "
                            "folder of the task's files?")
        rec = {"inputs": inputs, "label": self.split.labels[j]}
        if self.split.positions is not None:
            rec["positions"] = self.split.positions[j]
        if self.streamed:
            rec["bad"] = np.int32(-1 if j == i else i)
        return rec


class Transform:
    """Per-example preprocessing: normalise, augment, attach positions, permute.

    Picklable (grain sends it to worker processes). ``rng`` is None for eval.
    """

    def __init__(self, ds: Dataset, augment: bool):
        cfg = ds.config
        self.mean, self.std = ds.mean, ds.std
        self.point_cloud = ds.point_cloud
        self.image = ds.train.inputs.dtype == np.uint8 and len(cfg.index_dims) == 2
        self.streamed = isinstance(ds.train.inputs, ImageFiles)  # raw files: crop here
        self.video = isinstance(ds.train.inputs, VideoFiles)  # decoded clips: frames + crop
        self.frame_stride = cfg.frame_stride
        self.index_dims = tuple(cfg.index_dims)
        self.randaugment = (cfg.randaugment_layers, cfg.randaugment_magnitude)
        self.augment = augment
        m = int(np.prod(cfg.index_dims))
        self.perm = (
            np.random.default_rng(cfg.permutation_seed).permutation(m).astype(np.int32)
            if cfg.permutation == "fixed" else None
        )

    def __call__(self, rec: dict[str, np.ndarray], rng: np.random.Generator | None):
        label = rec["label"]
        out: dict[str, Any] = {"label": label.astype(np.float32) if np.ndim(label)
                               else np.int32(label)}  # multi-hot vectors stay vectors
        if self.point_cloud:
            pts = rec["positions"].astype(np.float32)
            if self.augment and rng is not None:  # paper: per-point scale U[0.99, 1.01]
                pts = pts * rng.uniform(0.99, 1.01, size=(len(pts), 1)).astype(np.float32)
            pts = pts - pts.mean(axis=0)  # zero-mean, then into the unit cube
            pts = pts / max(float(np.abs(pts).max()), 1e-6)
            out["inputs"], out["positions"] = pts, pts
        else:
            raw = rec["inputs"]
            if self.streamed:  # a decoded file at its own size
                raw = self._crop(raw, rng)
            elif self.video:  # all its frames: one clip, one crop for every frame
                raw = video.clip(raw, self.index_dims, self.frame_stride, rng, self.augment)
            x = (raw.astype(np.float32) - self.mean) / self.std
            if self.image and self.augment and rng is not None and not self.streamed:
                x = _crop_and_flip(x, rng)
            out["inputs"] = x
            if "positions" in rec:
                out["positions"] = rec["positions"]
        if "bad" in rec:  # which unreadable file this example stands in for (-1: none)
            out["bad"] = rec["bad"]
        if self.perm is not None:  # after positions are attached (paper Table 2)
            flat = out["inputs"].reshape(len(self.perm), -1)
            out["inputs"] = flat[self.perm]
            if "positions" in out:
                out["positions"] = out["positions"][self.perm]
            else:
                out["index"] = self.perm
        return out

    def _crop(self, raw: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        """A streamed image to ``index_dims``: random-resized crop, flip and RandAugment
        for training (if ``data.augment``), the centre crop otherwise."""
        if not (self.augment and rng is not None):
            return images.center_crop(raw, self.index_dims)
        crop = images.random_resized_crop(raw, self.index_dims, rng)
        return images.randaugment(crop, *self.randaugment, rng)


def _crop_and_flip(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random crop from a reflect-padded image, then a random horizontal flip.

    The crop keeps the image size, so its positions are the standard grid: position
    encodings are crop-relative, as the paper found best (App. D).
    """
    h, w = x.shape[:2]
    pad = max(1, h // 8)
    padded = np.pad(x, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    top, left = rng.integers(0, 2 * pad + 1, size=2)
    x = padded[top : top + h, left : left + w]
    return x[:, ::-1] if rng.random() < 0.5 else x


class _RandomTransform(grain.transforms.RandomMap):
    """A per-example transform (one modality's or several's) with grain's per-record RNG."""

    def __init__(self, transform: Transform | multimodal.Transform):
        self.transform = transform

    def random_map(self, rec, rng: np.random.Generator):
        return self.transform(rec, rng)


class _MixBatch(grain.transforms.RandomMap):
    """MixUp (Zhang et al., 2018) and CutMix (Yun et al., 2019) on a training batch:
    each example is mixed with its partner in the reversed batch; with both on, the
    first half gets MixUp and the second CutMix ([DM] ``my_mixup_cutmix``). Adds
    ``mix_label`` (the partner's label) and ``mix_ratio`` (the share of the example's
    own input) for the loss. The generator is grain's, so resume replays it exactly."""

    def __init__(self, mixup: float, cutmix: float):
        self.mixup, self.cutmix = mixup, cutmix

    def random_map(self, batch, rng: np.random.Generator):
        x, b = batch["inputs"], len(batch["label"])
        partner = np.arange(b)[::-1]
        out, ratio = x.copy(), np.ones(b, np.float32)
        split = b // 2 if self.mixup and self.cutmix else (b if self.mixup else 0)
        if split:
            lam = rng.beta(self.mixup, self.mixup, size=split).astype(np.float32)
            shape = (split,) + (1,) * (x.ndim - 1)
            out[:split] = lam.reshape(shape) * x[:split] + \
                (1 - lam.reshape(shape)) * x[partner[:split]]
            ratio[:split] = lam
        h, w = x.shape[1:3] if x.ndim == 4 else (0, 0)
        for i in range(split, b):  # a box of area 1 - lam from the partner
            lam = rng.beta(self.cutmix, self.cutmix)
            cy, cx = rng.integers(0, h), rng.integers(0, w)
            rh, rw = int(np.sqrt(1 - lam) * h), int(np.sqrt(1 - lam) * w)
            y0, y1 = np.clip([cy - rh // 2, cy + rh // 2], 0, h)
            x0, x1 = np.clip([cx - rw // 2, cx + rw // 2], 0, w)
            out[i, y0:y1, x0:x1] = x[partner[i], y0:y1, x0:x1]
            ratio[i] = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
        return {**batch, "inputs": out, "mix_label": batch["label"][partner],
                "mix_ratio": ratio}


def _transform(ds: Dataset, augment: bool) -> Transform | multimodal.Transform:
    return (multimodal.Transform if ds.config.modalities else Transform)(ds, augment)


def _random_transform(ds: Dataset, augment: bool) -> _RandomTransform:
    return _RandomTransform(_transform(ds, augment))


class _EvalTransform(grain.transforms.Map):
    def __init__(self, transform: Transform | multimodal.Transform):
        self.transform = transform

    def map(self, rec):
        return self.transform(rec, None)


def read_options(cfg: DataConfig) -> grain.ReadOptions:
    """Batches read ahead by a few threads, at most ``data.prefetch`` of them: memory is
    bounded by the buffer (grain's default, 500 elements, would hold 500 batches)."""
    return grain.ReadOptions(num_threads=max(1, min(4, os.cpu_count() or 1)),
                             prefetch_buffer_size=max(1, cfg.prefetch))


def train_batches(ds: Dataset, batch_size: int, seed: int, *, process: int = 0,
                  processes: int = 1) -> grain.IterDataset:
    """Endless shuffled training batches; a new permutation each epoch, all from ``seed``.

    With several processes (multi-host training), each loads and transforms only its
    share of every global batch: elements ``process, process + processes, ...`` of the
    shuffled stream, so the global batches are those of a single-process run.
    """
    cfg = ds.config
    if batch_size > len(ds.train):
        raise DataError(
            f"train.batch_size={batch_size} is larger than the {len(ds.train)} training examples"
        )
    mds = (
        grain.MapDataset.source(_Source(ds.train, cfg.bad_examples == "skip"))
        .seed(seed)
        .shuffle()
        .repeat(None)
        .random_map(_random_transform(ds, cfg.augment))
    )
    if processes > 1:
        mds = mds[process::processes]
    mds = mds.batch(batch_size // processes, drop_remainder=True)
    if cfg.mixup or cfg.cutmix:
        mds = mds.random_map(_MixBatch(cfg.mixup, cfg.cutmix))
    it = mds.to_iter_dataset(read_options(cfg))
    if cfg.num_workers > 0:
        it = it.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=cfg.num_workers, per_worker_buffer_size=cfg.prefetch
        ))
    return it


def eval_batches(ds: Dataset, batch_size: int, split: Split | None = None) -> grain.IterDataset:
    """One pass over the eval split (or ``split``, e.g. a subset of the training split) in
    order, preprocessed as for evaluation (no augmentation); the last batch may be short."""
    mds = (
        grain.MapDataset.source(_Source(ds.eval if split is None else split,
                                        ds.config.bad_examples == "skip"))
        .map(_EvalTransform(_transform(ds, augment=False)))
        .batch(batch_size, drop_remainder=False)
    )
    return mds.to_iter_dataset(read_options(ds.config))


def train_eval_split(ds: Dataset, n: int | None, seed: int) -> Split | None:
    """The fixed, seeded subset of the training split evaluated as ``train_eval/``: ``n``
    examples (None: as many as the eval split has; 0: none), class-stratified."""
    n = len(ds.eval) if n is None else n
    if n <= 0:
        return None
    return ds.train.take(sources.stratified(ds.train, n, seed))


NOT_INPUTS = ("label", "bad", "mix_label", "mix_ratio")


def model_kwargs(batch: dict[str, Any]) -> dict[str, Any]:
    """The model's keyword arguments from a batch (everything but the label)."""
    return {k: v for k, v in batch.items() if k not in NOT_INPUTS}


def pop_bad(batch: dict[str, Any]) -> np.ndarray | None:
    """Take the streamed loader's ``bad`` column out of a host batch (before it goes to
    the device): per example, the split index of the unreadable file it replaced, or -1;
    None for a split that is not streamed."""
    bad = batch.pop("bad", None)
    return None if bad is None else np.asarray(bad)
