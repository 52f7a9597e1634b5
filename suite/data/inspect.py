"""``perceiver-suite data``: split sizes, shapes, classes, loading throughput, examples."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from suite.data.pipeline import Dataset, train_batches
from suite.data.sources import class_counts


def load_task(task: str, data_dir: str | None, overrides: dict[str, Any]) -> Dataset:
    """A task's data from its preset (or the default one) plus ``data.*`` overrides."""
    from suite import config as cfg_lib
    from suite.data.pipeline import load

    overrides = {**overrides, "data.task": task}
    if data_dir:
        overrides["data.data_dir"] = data_dir
    preset = task if task in cfg_lib.PRESETS else cfg_lib.DEFAULT_PRESET
    config = cfg_lib.build(preset, overrides)
    return load(config.data, config.seed)  # limits drawn as the run of that seed draws them


def summary(ds: Dataset, batch_size: int = 64, batches: int = 50) -> dict[str, Any]:
    """Facts about a loaded task plus the pipeline's throughput in examples/s."""
    cfg = ds.config
    it = iter(train_batches(ds, min(batch_size, len(ds.train)), seed=0))
    first = next(it)  # warm-up: worker start, first shuffle
    first.pop("bad", None)  # the loader's note of replaced files, not an input
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    seconds = time.perf_counter() - start
    counts = class_counts(ds.train, cfg.num_classes)
    return {
        "task": cfg.task,
        "train_examples": len(ds.train),
        "eval_examples": len(ds.eval),
        "input_shape": ({k: list(v.shape[1:]) for k, v in first["inputs"].items()}
                        if isinstance(first["inputs"], dict) else list(ds.train.inputs.shape[1:])),
        "input_dtype": ("float32" if isinstance(first["inputs"], dict)
                        else str(ds.train.inputs.dtype)),
        "batch": {k: (list(v.shape) if not isinstance(v, dict) else
                      {m: list(a.shape) for m, a in v.items()}) for k, v in first.items()},
        "num_classes": cfg.num_classes,
        "train_class_counts": counts,
        "eval_class_counts": class_counts(ds.eval, cfg.num_classes),
        "train_limit": cfg.train_limit,
        "eval_limit": cfg.eval_limit,
        "throughput_examples_per_s": batches * first["label"].shape[0] / seconds,
        "workers": cfg.num_workers,
        "reading": reading(ds),
        **preprocessing(ds),
    }


def preprocessing(ds: Dataset) -> dict[str, Any]:
    """What a run of this config does to each raw example before the model sees it: the
    raw units (what ``predict --raw`` takes), the normalisation statistics it applies
    (per channel: ``(x - mean) / std``) and the permutation of input items."""
    cfg = ds.config
    out: dict[str, Any] = {"raw_units": raw_units(ds), "normalization": cfg.normalization}
    if isinstance(ds.mean, dict):  # several modalities: statistics per modality
        out["mean"] = {k: np.asarray(v).tolist() for k, v in ds.mean.items()}
        out["std"] = {k: np.asarray(v).tolist() for k, v in ds.std.items()}
    else:
        out["mean"], out["std"] = np.asarray(ds.mean).tolist(), np.asarray(ds.std).tolist()
    out["permutation"] = (f"fixed (data.permutation_seed={cfg.permutation_seed}): the "
                          "items in one seeded order, each with its grid index"
                          if cfg.permutation == "fixed" else cfg.permutation)
    return out


def raw_units(ds: Dataset) -> str:
    """The units of a raw example as the task's source yields it."""
    inputs = ds.train.inputs
    if isinstance(inputs, dict):
        return "several modalities: " + ", ".join(
            f"{k} {_units_of(v)}" for k, v in inputs.items())
    return ("point coordinates, " if ds.point_cloud else "") + _units_of(inputs)


def _units_of(inputs: Any) -> str:
    from suite.data.images import ImageFiles
    from suite.data.video import VideoFiles

    if isinstance(inputs, ImageFiles):
        return "uint8 pixels 0..255 of image files at their own size (centre-cropped)"
    if isinstance(inputs, VideoFiles):
        return "uint8 pixels 0..255 of video frames (clipped and cropped)"
    if not isinstance(inputs, np.ndarray):
        return type(inputs).__name__
    sample = np.asarray(inputs[:4096], np.float64)
    return (f"{inputs.dtype} {list(inputs.shape[1:])}, {np.nanmin(sample):g}.."
            f"{np.nanmax(sample):g} in the training split")


def reading(ds: Dataset) -> list[str]:
    """What reading does to each split's files: audio resampled, cut or padded (counted at
    load), videos resized, cropped, resampled or padded (from a sample of the files)."""
    from suite.data.multimodal import streamed_files
    from suite.data.video import VideoFiles

    out = []
    for name, split in (("train", ds.train), ("eval", ds.eval)):
        files = streamed_files(split)
        notes = [*split.notes, *([f"video: {files.survey()}"]
                                 if isinstance(files, VideoFiles) else [])]
        out += [f"{name}: {note}" for note in notes]
    if out and [n.split(": ", 1)[1] for n in out if n.startswith("train:")] == \
            [n.split(": ", 1)[1] for n in out if n.startswith("eval:")]:
        out = [n.split(": ", 1)[1] for n in out if n.startswith("train:")]  # one folder read
    return out


def render(info: dict[str, Any]) -> str:
    lines = [
        f"task            {info['task']}",
        f"train / eval    {info['train_examples']:,} / {info['eval_examples']:,} examples",
        f"input           {info['input_shape']} {info['input_dtype']}",
        "batch           " + ", ".join(f"{k} {v}" for k, v in info["batch"].items()),
        f"classes         {info['num_classes']}",
        *(f"{split + ' per class':<16}{_counts(info[f'{split}_class_counts'])}" + (
            f" (a seeded, class-stratified data.{split}_limit={info[f'{split}_limit']})"
            if info[f"{split}_limit"] else "") for split in ("train", "eval")),
        f"throughput      {info['throughput_examples_per_s']:,.0f} examples/s "
        f"({plural(info['workers'], 'worker process')}; data.num_workers)",
        *(f"{'reading' if i == 0 else '':<16}{line}" for i, line in enumerate(info["reading"])),
        *([f"raw units       {info['raw_units']}" + (
            "" if info["raw_units"].startswith("several") else " (what predict --raw takes)"),
           f"normalisation   (x - mean) / std per channel, data.normalization="
           f"{info['normalization']}: mean {_channels(info['mean'])}, std "
           f"{_channels(info['std'])}",
           f"permutation     {info['permutation']}"] if "raw_units" in info else []),
    ]
    return "\n".join(lines)


def _channels(values: list[float] | dict[str, list[float]], shown: int = 8) -> str:
    """Per-channel statistics: all of up to ``shown`` channels, else their range."""
    if isinstance(values, dict):
        return "; ".join(f"{k} {_channels(v)}" for k, v in values.items())
    if len(values) <= shown:
        return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"
    return f"{min(values):.4g}..{max(values):.4g} over {len(values)} channels"


class _Check:
    """Why file ``i`` of a split does not decode ("" if it does); picklable for workers."""

    def __init__(self, files):
        self.files = files

    def __call__(self, i: int) -> tuple[int, str]:
        return i, self.files.check(i) or ""


def verify(ds: Dataset) -> tuple[list[tuple[str, str, str]], int]:
    """Every file of both splits decoded as the loader does, in ``data.num_workers``
    processes (threads if 0): ``[(split, path, reason)]`` of the unreadable ones, and how
    many files were checked. Splits read into memory at load report what loading left
    out."""
    import grain

    from suite.data.multimodal import streamed_files
    from suite.data.pipeline import read_options

    bad, checked = [], 0
    for name, split in (("train", ds.train), ("eval", ds.eval)):
        bad += [(name, path, reason) for path, reason in split.skipped]
        checked += len(split.skipped)
        files = streamed_files(split)  # image or video files decoded in the loader
        if files is None:
            checked += len(split)
            continue
        it = grain.MapDataset.range(len(files)).map(_Check(files)) \
            .to_iter_dataset(read_options(ds.config))
        if ds.config.num_workers > 0:
            it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=ds.config.num_workers))
        for i, reason in it:
            checked += 1
            if reason:
                bad.append((name, str(files.paths[i]), reason))
    return bad, checked


def render_verify(bad: list[tuple[str, str, str]], checked: int, workers: int) -> str:
    lines = [f"decoded {checked:,} files ({plural(workers, 'worker process')}; "
             "data.num_workers): "
             f"{len(bad)} unreadable"]
    lines += [f"  {name:<5} {reason}" for name, _, reason in bad]
    return "\n".join(lines)


def _counts(counts: list[int], shown: int = 20) -> str:
    """``"0: 52, 1: 55, ..."`` for up to ``shown`` classes, else the range."""
    if len(counts) <= shown:
        return ", ".join(f"{i}: {n:,}" for i, n in enumerate(counts))
    return f"min {min(counts):,}, max {max(counts):,} over {len(counts)} classes"


def show(ds: Dataset, n: int, path: Path) -> Path:
    """Write a PNG grid of ``n`` preprocessed training examples (images, signals, clouds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batch = next(iter(train_batches(ds, min(n, len(ds.train)), seed=0)))
    n = batch["label"].shape[0]
    cols = min(n, 8)
    rows = (n + cols - 1) // cols
    three_d = "positions" in batch and batch["positions"].shape[-1] == 3
    fig = plt.figure(figsize=(2 * cols, 2 * rows))
    for i in range(n):
        kw = {"projection": "3d"} if three_d else {}
        ax = fig.add_subplot(rows, cols, i + 1, **kw)
        x = batch["inputs"][i]
        if three_d:
            p = batch["positions"][i]
            ax.scatter(p[:, 0], p[:, 1], p[:, 2], s=1)
        elif x.ndim == 3 and "index" not in batch:
            img = (x - x.min()) / max(float(x.max() - x.min()), 1e-6)  # normalised -> [0, 1]
            ax.imshow(img if x.shape[-1] == 3 else img[..., 0],
                      cmap=None if x.shape[-1] == 3 else "gray")
        else:
            ax.plot(x.reshape(len(x), -1)[:, 0])
        ax.set_title(f"label {int(batch['label'][i])}", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"{ds.config.task}: {n} training examples (after preprocessing)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plural(n: int, noun: str) -> str:
    """``"1 worker process"``, ``"2 worker processes"``."""
    return f"{n} {noun}" + ("" if n == 1 else "es" if noun.endswith("s") else "s")
