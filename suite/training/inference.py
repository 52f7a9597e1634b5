"""A run folder's newest checkpoint put to use: its metrics on a split (``evaluate``) and
its logits for arrays or image files (``predict``). Works on imported weights too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from suite import config as cfg_lib
from suite import data as data_lib
from suite.config import Config
from suite.errors import CheckpointError, SuiteError
from suite.files import read_json
from suite.models.registry import build_model
from suite.training.checkpoint import Checkpointer
from suite.training.optim import optimizer as make_optimizer
from suite.training.run_folder import CHECKPOINTS, CONFIG


def folder_config(workdir: Path, overrides: dict[str, Any] | None = None) -> Config:
    """The config a run folder was trained (or imported) with, plus ``overrides``."""
    path = Path(workdir) / CONFIG
    if not path.exists():
        raise SuiteError(f"{workdir}: no {CONFIG} (not a run folder)")
    config = cfg_lib.from_dict(read_json(path))
    return cfg_lib.apply_overrides(config, overrides) if overrides else config


def load_state(config: Config, workdir: str | Path) -> tuple[nnx.Module, int]:
    """The model from a run folder's newest intact checkpoint, and its step."""
    model = build_model(config, rngs=nnx.Rngs(params=config.seed, dropout=config.seed + 1))
    opt = nnx.Optimizer(model, make_optimizer(config.train), wrt=nnx.Param)
    graphdef, state = nnx.split((model, opt))
    ckpt = Checkpointer(Path(workdir) / CHECKPOINTS, config.train.keep_checkpoints)
    try:
        restored = ckpt.restore_latest(state)
    finally:
        ckpt.close()
    if restored is None:
        raise CheckpointError(f"{workdir}: no readable checkpoint")
    model, _ = nnx.merge(graphdef, restored.state)
    return model, restored.step


def _forward(model: nnx.Module):
    graphdef, state = nnx.split(model)

    @jax.jit
    def logits(state, kwargs):
        m = nnx.merge(graphdef, state)
        m.eval()
        return m(**kwargs).astype(jax.numpy.float32)

    return lambda kwargs: np.asarray(logits(state, kwargs))


def evaluate_folder(workdir: Path, split: str = "eval", data_dir: str | None = None,
                    batch_size: int = 64) -> dict[str, Any]:
    """The newest checkpoint's metrics on the ``eval`` or ``train`` split."""
    from suite.training.optim import schedule
    from suite.training.steps import Steps, evaluate

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


def predict_arrays(workdir: Path, inputs: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Logits ``[B, classes]`` for inputs already in the model's layout ``[B, *index_dims,
    C]`` (normalised as the folder's data pipeline would), batched, float32."""
    config = folder_config(workdir)
    expected = (*config.data.index_dims, config.data.channels)
    if tuple(inputs.shape[1:]) != expected:
        raise SuiteError(f"inputs of shape {list(inputs.shape)}: the model takes "
                         f"[batch, {', '.join(map(str, expected))}]")
    model, _ = load_state(config, workdir)
    forward = _forward(model)
    out = []
    for i in range(0, len(inputs), batch_size):
        chunk = np.asarray(inputs[i:i + batch_size], np.float32)
        n = len(chunk)
        if n < batch_size and len(inputs) > batch_size:  # one compiled shape throughout
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - n, axis=0)])
        out.append(forward({"inputs": chunk})[:n])
    return np.concatenate(out)


def predict_images(workdir: Path, paths: list[Path], top: int = 5) -> list[dict[str, Any]]:
    """The top classes of image files, each through the task's evaluation transform (the
    centre crop and the folder's normalisation)."""
    from suite.data import images

    config = folder_config(workdir)
    d = config.data
    if len(d.index_dims) != 2:
        raise SuiteError(f"{workdir} takes data.index_dims={list(d.index_dims)}, not images")
    mean, std = normalisation(config)
    batch = np.stack([(images.center_crop(images.decode(Path(p), d.channels), d.index_dims)
                       - mean) / std for p in paths]).astype(np.float32)
    logits = predict_arrays(workdir, batch)
    k = min(top, logits.shape[-1])
    out = []
    for path, row in zip(paths, logits, strict=True):
        best = np.argsort(-row)[:k]
        probs = np.exp(row - row.max())
        probs /= probs.sum()
        out.append({"path": str(path), "top": [(int(c), float(probs[c])) for c in best]})
    return out


def normalisation(config: Config) -> tuple[np.ndarray, np.ndarray]:
    """The per-channel mean and std the folder's pipeline normalises with."""
    if config.data.normalization == "imagenet":
        from suite.data.pipeline import IMAGENET_MEAN, IMAGENET_STD

        return np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)
    try:
        ds = data_lib.load(config.data, config.seed)
    except SuiteError as e:
        raise SuiteError(f"the folder normalises with its training data's statistics "
                         f"(data.normalization=dataset), which needs its data: {e}") from None
    return ds.mean, ds.std

