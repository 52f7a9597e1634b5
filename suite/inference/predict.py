"""A run folder's newest checkpoint put to use: its metrics on a split (``evaluate``) and
its logits (``predict``) for what a user holds. Works on imported weights too.

Every input reaches the model through the run's own evaluation pipeline
(``suite.data.pipeline.eval_batches``: its ``Transform`` normalises, attaches positions,
applies ``data.permutation`` and its ``index``), never through a copy of it, so that a
prediction is the one the run's evaluation would make. What a user holds comes in three
units:

- raw (``--raw``): what the task's source yields before preprocessing, as ``perceiver-suite
  data TASK`` reports it (uint8 pixels, audio samples, point coordinates), or image files;
- model-ready (``--inputs``): normalised arrays ``[B, *index_dims, C]`` in grid order,
  i.e. the pipeline's arrays before the permutation, which is still applied;
- an example of the run's own data (``--split``, ``--example``).

Reading a checkpoint here is read-only: a corrupt newest one is noted and skipped, never
moved (``Checkpointer(read_only=True)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from suite import config as cfg_lib
from suite import data as data_lib
from suite.config import Config
from suite.data.images import ImageFiles
from suite.data.pipeline import IMAGENET_MEAN, IMAGENET_STD
from suite.data.sources import Split
from suite.errors import CheckpointError, SuiteError
from suite.inference import user_inputs
from suite.models.registry import build_model
from suite.training.checkpoint import Checkpointer
from suite.training.optim import optimizer as make_optimizer
from suite.training.run_folder import CHECKPOINTS, CONFIG, read_config

SHOWN = 20  # examples printed when no --out is given


def folder_config(workdir: Path, overrides: dict[str, Any] | None = None) -> Config:
    """The config a run folder was trained (or imported) with, plus ``overrides``."""
    path = Path(workdir) / CONFIG
    if not path.exists():
        raise SuiteError(f"{workdir}: no {CONFIG} (not a run folder)")
    config = read_config(path)
    return cfg_lib.apply_overrides(config, overrides) if overrides else config


def load_state(config: Config, workdir: str | Path) -> tuple[nnx.Module, int]:
    """The model from a run folder's newest intact checkpoint, and its step. Read-only:
    nothing in the folder is created, moved or deleted, even when a checkpoint is
    corrupt (the previous one is tried, with a note on stderr)."""
    model = build_model(config, rngs=nnx.Rngs(params=config.seed, dropout=config.seed + 1))
    opt = nnx.Optimizer(model, make_optimizer(config.train), wrt=nnx.Param)
    graphdef, state = nnx.split((model, opt))
    ckpt = Checkpointer(Path(workdir) / CHECKPOINTS, config.train.keep_checkpoints,
                        read_only=True)
    try:
        restored = ckpt.restore_latest(state)
    finally:
        ckpt.close()
    if restored is None:
        raise CheckpointError(f"{workdir}: no readable checkpoint")
    model, _ = nnx.merge(graphdef, restored.state)
    return model, restored.step


def evaluate_folder(workdir: Path, split: str = "eval", data_dir: str | None = None,
                    batch_size: int = 64) -> dict[str, Any]:
    """The newest checkpoint's metrics on the ``eval`` or ``train`` split."""
    from suite.training.optim import schedule
    from suite.training.steps import Steps, evaluate

    user_inputs.check_positive(batch_size, "--batch-size")
    config = folder_config(workdir, {"data.data_dir": data_dir} if data_dir else None)
    ds = data_lib.load(config.data, config.seed)
    model, step = load_state(config, workdir)
    opt = nnx.Optimizer(model, make_optimizer(config.train), wrt=nnx.Param)
    graphdef, state = nnx.split((model, opt))
    steps = Steps(graphdef, config, schedule(config.train))
    chosen = ds.eval if split == "eval" else ds.train
    result = evaluate(steps.eval_step, state, ds, min(batch_size, len(chosen)), split=chosen,
                      prefix=split)
    return {"step": step, "split": split, "examples": len(chosen), **result}


# ------------------------------------------------------------ inputs, as the run sees them


def model_ready_dataset(config: Config) -> data_lib.Dataset:
    """A dataset whose evaluation transform takes already-normalised grid-order arrays:
    the run's own transform (positions, permutation and index) with mean 0 and std 1.
    It needs none of the task's data (imported weights predict without it)."""
    d = config.data
    stub = Split(np.zeros((0, *d.index_dims, d.channels), np.float32), np.zeros(0, np.int32))
    return data_lib.Dataset(d, stub, stub, np.zeros(d.channels, np.float32),
                            np.ones(d.channels, np.float32))


def raw_dataset(config: Config) -> data_lib.Dataset:
    """The run's dataset, whose evaluation transform takes raw inputs: its data loaded
    (the statistics it normalises with, the kind of its files); with the fixed ImageNet
    statistics (``data.normalization=imagenet``) none of the data is needed."""
    from suite.data import folders
    from suite.data.readers import READERS

    d = config.data
    if d.normalization == "imagenet" and not d.modalities and len(d.index_dims) == 2:
        inputs = (ImageFiles([], d.index_dims, d.channels)
                  if READERS.get(d.task) is folders.image_folder  # streamed: centre crops
                  else np.zeros((0, *d.index_dims, d.channels), np.uint8))
        stub = Split(inputs, np.zeros(0, np.int32))
        return data_lib.Dataset(d, stub, stub, np.asarray(IMAGENET_MEAN, np.float32),
                                np.asarray(IMAGENET_STD, np.float32))
    try:
        return data_lib.load(d, config.seed)
    except SuiteError as e:
        raise SuiteError(f"raw inputs are normalised with the run's training statistics "
                         f"(data.normalization={d.normalization}), which need its data: "
                         f"{e}") from None


def raw_units(ds: data_lib.Dataset) -> tuple[tuple[int | None, ...], str,
                                              tuple[float, float] | None]:
    """What one raw example is: its shape (None: any size), its units in words, and the
    span of the training split's values (None where the split is not in memory)."""
    cfg, inputs = ds.config, ds.train.inputs
    if cfg.modalities or isinstance(inputs, dict):
        raise SuiteError(f"{cfg.task} feeds several modalities; one array cannot hold them: "
                         "predict --split eval --example N takes an example of them")
    if isinstance(inputs, ImageFiles):
        return (None, None, cfg.channels), "uint8 pixels of any size, centre-cropped", (0, 255)
    if not isinstance(inputs, np.ndarray):
        raise SuiteError(f"{cfg.task} reads {type(inputs).__name__} (video files); "
                         "predict --split eval --example N takes an example of them")
    shape = tuple(inputs.shape[1:])
    if len(inputs) == 0:  # fixed statistics, no data loaded
        return shape, f"{inputs.dtype} pixels 0..255", (0, 255)
    sample = inputs[:4096]
    return shape, f"{inputs.dtype}", user_inputs.value_span(sample)


def user_split(ds: data_lib.Dataset, array: np.ndarray) -> Split:
    """A batch a user holds as a split of the run's data (labels 0, unused): point clouds
    are their coordinates, as the task's readers give them."""
    labels = np.zeros(len(array), np.int32)
    if ds.point_cloud:
        array = np.asarray(array, np.float32)
        return Split(array, labels, positions=array)
    return Split(array, labels)  # the transform takes any numeric dtype to float32


def prepared_array(config: Config, path: Path, raw: bool
                   ) -> tuple[data_lib.Dataset, Split, list[str]]:
    """A ``.npy`` file of raw (``--raw``) or model-ready (``--inputs``) examples as a split
    of the run's data, with the dataset that prepares it and notes on its values."""
    flag = "--raw" if raw else "--inputs"
    array = user_inputs.read_array(path, flag)
    where = f"{flag} {path}"
    if config.data.modalities:
        raise SuiteError(f"{where}: {config.data.task} feeds several modalities; one array "
                         "cannot hold them: use --split eval --example N")
    if raw:
        ds = raw_dataset(config)
        shape, units, span = raw_units(ds)
        array = user_inputs.batch_of(array, shape, where, f"the {config.data.task} task's "
                                     f"raw inputs, {units}; see perceiver-suite data "
                                     f"{config.data.task}")
        note = span and user_inputs.units_note(array, span, where, units)
    else:
        d = config.data
        ds = model_ready_dataset(config)
        note = user_inputs.normalised_note(array, where)
        array = user_inputs.batch_of(array.astype(np.float32, copy=False),
                                     (*d.index_dims, d.channels), where,
                                     "normalised, in grid order; raw values go with --raw")
    return ds, user_split(ds, array), [note] if note else []


def prepared_images(config: Config, paths: list[Path]) -> tuple[data_lib.Dataset, Split]:
    """Image files as a split of the run's data: decoded as its reader decodes them; a
    task that streams files centre-crops them in its transform, any other takes its own
    size as is and another size through the same centre crop."""
    from suite.data import images

    d = config.data
    if len(d.index_dims) != 2 or d.modalities:
        raise SuiteError(f"image files: the run takes data.index_dims={list(d.index_dims)}, "
                         "not images")
    ds = raw_dataset(config)
    streamed = isinstance(ds.train.inputs, ImageFiles)
    decoded = np.empty(len(paths), object)
    for i, path in enumerate(paths):
        img = images.decode(Path(path), d.channels)
        if not streamed and img.shape[:2] != tuple(d.index_dims):
            img = images.center_crop(img, d.index_dims)
        decoded[i] = img
    inputs = decoded if streamed else np.stack(list(decoded))
    return ds, Split(inputs, np.zeros(len(paths), np.int32))


def prepared_example(config: Config, split: str, n: int
                     ) -> tuple[data_lib.Dataset, Split, np.ndarray]:
    """Example ``n`` of the run's ``eval`` or ``train`` split, and its label."""
    ds = data_lib.load(config.data, config.seed)
    chosen = ds.eval if split == "eval" else ds.train
    user_inputs.check_example(n, len(chosen), f"the {split} split")
    return ds, chosen.take(np.arange(n, n + 1)), chosen.labels[n]


# ------------------------------------------------------------------------------- logits


def _forward(model: nnx.Module):
    graphdef, state = nnx.split(model)

    @jax.jit
    def logits(state, kwargs):
        m = nnx.merge(graphdef, state)
        m.eval()
        return m(**kwargs).astype(jax.numpy.float32)

    return lambda kwargs: np.asarray(logits(state, kwargs))


def logits_of(model: nnx.Module, ds: data_lib.Dataset, split: Split,
              batch_size: int = 32) -> np.ndarray:
    """Logits ``[B, classes]`` (float32) of a split, through the run's evaluation
    pipeline; every batch padded to one compiled shape."""
    forward = _forward(model)
    size = min(batch_size, len(split))
    out = []
    for batch in data_lib.eval_batches(ds, size, split):
        data_lib.pop_bad(batch)
        n = len(batch["label"])
        kwargs = data_lib.model_kwargs(batch)
        if n < size:
            kwargs = jax.tree.map(
                lambda v, fill=size - n: np.concatenate([v, np.repeat(v[-1:], fill, axis=0)]),
                kwargs)
        out.append(forward(kwargs)[:n])
    return np.concatenate(out)


def predict_arrays(workdir: Path, inputs: np.ndarray, batch_size: int = 32, *,
                   raw: bool = False) -> np.ndarray:
    """Logits ``[B, classes]`` of arrays: model-ready ones (normalised, grid order,
    ``[B, *index_dims, C]``), or with ``raw`` in the task's own units; either way the
    run's permutation and positions are applied as in its evaluation."""
    config = folder_config(workdir)
    where = "raw inputs" if raw else "inputs"
    inputs = np.asarray(inputs)
    if inputs.dtype.kind not in user_inputs.NUMERIC_KINDS or inputs.ndim == 0:
        raise SuiteError(f"{where} of dtype {inputs.dtype}: expected a numeric array")
    if raw:
        ds = raw_dataset(config)
        shape, units, _ = raw_units(ds)
        inputs = user_inputs.batch_of(inputs, shape, where, units)
    else:
        ds = model_ready_dataset(config)
        d = config.data
        inputs = user_inputs.batch_of(inputs.astype(np.float32, copy=False),
                                      (*d.index_dims, d.channels), where, "normalised")
    model, _ = load_state(config, workdir)
    return logits_of(model, ds, user_split(ds, inputs), batch_size)


def predict_images(workdir: Path, paths: list[Path], top: int = 5) -> list[dict[str, Any]]:
    """The top classes of image files, through the run's evaluation transform."""
    config = folder_config(workdir)
    ds, split = prepared_images(config, paths)
    model, _ = load_state(config, workdir)
    best = top_classes(logits_of(model, ds, split), min(top, config.data.num_classes),
                       config.train.loss == "sigmoid")
    return [{"path": str(p), "top": t} for p, t in zip(paths, best, strict=True)]


def top_classes(logits: np.ndarray, k: int, sigmoid: bool = False
                ) -> list[list[tuple[int, float]]]:
    """Per example, the ``k`` best classes and their probabilities (softmax, or per-class
    sigmoids for a multi-label run), best first; ties keep the lower class first."""
    z = np.asarray(logits, np.float64)
    if sigmoid:
        probs = 1.0 / (1.0 + np.exp(-z))
    else:
        probs = np.exp(z - z.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
    best = np.argsort(-z, axis=1, kind="stable")[:, :k]
    return [[(int(c), float(p[c])) for c in row] for row, p in zip(best, probs, strict=True)]


def top_table(names: list[str], tops: list[list[tuple[int, float]]],
              labels: list[Any] | None = None, shown: int = SHOWN,
              first: str = "example") -> str:
    """The top classes of the first ``shown`` examples, one line each, under a header."""
    width = max(len(n) for n in [first, *names[:shown]])
    k = len(tops[0]) if tops else 0
    lines = [f"{first:<{width}}  top {k}: class (probability)"]
    for i, (name, top) in enumerate(zip(names[:shown], tops, strict=False)):
        label = f"  (label {_label(labels[i])})" if labels is not None else ""
        lines.append(f"{name:<{width}}  " + ", ".join(f"{c} ({p:.1%})" for c, p in top)
                     + label)
    if len(names) > shown:
        lines.append(f"... {len(names) - shown} more; --out FILE for all")
    return "\n".join(lines)


def _label(label: Any) -> str:
    label = np.asarray(label)
    if label.ndim:  # multi-hot
        return "[" + ", ".join(map(str, np.flatnonzero(label))) + "]"
    return str(int(label))


def one_example(ds: data_lib.Dataset, split: Split, n: int) -> dict[str, Any]:
    """Example ``n`` of a split through the run's evaluation transform, without a batch
    axis (``attention`` draws one example)."""
    batch = next(iter(data_lib.eval_batches(ds, 1, split.take(np.arange(n, n + 1)))))
    data_lib.pop_bad(batch)
    return jax.tree.map(lambda v: v[0], batch)
