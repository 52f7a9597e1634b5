"""The loss and the jit-compiled train and eval steps: pure functions of the state.

``nnx.split`` once, then ``jax.jit`` functions of the ``(model, optimizer)`` state
pytree: no NNX graph walk per step. The train step donates its state and returns a
dict of scalars; nothing in it touches the host.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from suite import data as data_lib
from suite.config import Config

METRIC_KEYS = ("loss", "accuracy", "grad_norm")


def targets_of(labels: jax.Array, classes: int) -> jax.Array:
    """One-hot targets from class ids ``[B]``; multi-hot ``[B, classes]`` pass through."""
    return labels.astype(jnp.float32) if labels.ndim == 2 else jax.nn.one_hot(labels, classes)


def top1(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """1 where the top-scoring class is a label of the example (``[B]``)."""
    best = logits.argmax(-1)
    if labels.ndim == 2:
        return jnp.take_along_axis(labels, best[:, None], axis=-1)[:, 0] > 0
    return best == labels


def loss_fn(model: nnx.Module, batch: dict[str, jax.Array], config: Config):
    """Mean loss over the batch (softmax or sigmoid cross-entropy), and the logits."""
    logits = model(**data_lib.model_kwargs(batch))
    targets = targets_of(batch["label"], logits.shape[-1])
    if "mix_ratio" in batch:  # MixUp / CutMix: the two labels in the share of their inputs
        r = batch["mix_ratio"].reshape(-1, *([1] * (targets.ndim - 1)))
        targets = r * targets + (1 - r) * targets_of(batch["mix_label"], logits.shape[-1])
    if config.train.label_smoothing:
        targets = optax.smooth_labels(targets, config.train.label_smoothing)
    return _loss(logits, targets, config).mean(), logits


def _loss(logits: jax.Array, targets: jax.Array, config: Config) -> jax.Array:
    """Per-example loss against (possibly smoothed) one-hot targets."""
    if config.train.loss == "sigmoid":
        return optax.sigmoid_binary_cross_entropy(logits, targets).sum(-1)
    return optax.softmax_cross_entropy(logits, targets)


class Steps:
    """The compiled train and eval steps over ``(model, optimizer)`` state.

    ``traces`` counts how often Python traced each step (one each, for a whole run).
    ``shardings``: ``(state, batch, replicated)`` shardings on a mesh, or None.
    """

    def __init__(self, graphdef: nnx.GraphDef, config: Config, lr_schedule: optax.Schedule,
                 shardings: tuple | None = None):
        self.traces = {"train": 0, "eval": 0}

        def train_step(state, batch):
            self.traces["train"] += 1
            model, opt = nnx.merge(graphdef, state)
            model.train()
            grad_fn = nnx.value_and_grad(loss_fn, has_aux=True)
            (loss, logits), grads = grad_fn(model, batch, config)
            opt.update(model, grads)
            metrics = {
                "loss": loss,
                "accuracy": top1(logits, batch["label"]).mean(),
                "grad_norm": optax.tree.norm(grads),
                "learning_rate": lr_schedule(opt.step[...] - 1),
                "nonfinite": (~jnp.isfinite(loss)).astype(jnp.float32),
            }
            return nnx.state((model, opt)), metrics

        def eval_step(state, batch, weight):
            self.traces["eval"] += 1
            model, _ = nnx.merge(graphdef, state)
            model.eval()
            logits = model(**data_lib.model_kwargs(batch))
            labels = batch["label"]
            per_example = _loss(logits, targets_of(labels, logits.shape[-1]), config)
            return {
                "loss": (per_example * weight).sum(),
                "correct": (top1(logits, labels) * weight).sum(),
                "count": weight.sum(),
                "logits": logits.astype(jnp.float32),  # for mAP on multi-label tasks
            }

        if shardings is None:
            self.train_step = jax.jit(train_step, donate_argnums=0)
            self.eval_step = jax.jit(eval_step)
            return
        state, batch, replicated = shardings
        self.train_step = jax.jit(train_step, donate_argnums=0, in_shardings=(state, batch),
                                  out_shardings=(state, replicated))
        self.eval_step = jax.jit(eval_step, in_shardings=(state, batch, batch),
                                 out_shardings=replicated)


def evaluate(eval_step, state, ds: data_lib.Dataset, batch_size: int, *,
             split: data_lib.Split | None = None, prefix: str = "eval",
             on_bad=None) -> dict[str, float]:
    """Loss and accuracy over the whole eval split, or over ``split`` (short last batch
    padded, weighted 0), as ``{prefix}/loss`` etc. An example whose file did not read is
    weighted 0 too, and ``on_bad(bad)`` told of it (``pipeline.pop_bad``).

    ``eval_step(state, batch, weight)``: ``Steps.eval_step`` or its compiled form.
    """
    totals = {"loss": 0.0, "correct": 0.0, "count": 0.0}
    scores, labels = [], []
    for batch in data_lib.eval_batches(ds, batch_size, split):
        n = batch["label"].shape[0]
        weight = np.zeros(batch_size, np.float32)
        weight[:n] = 1.0
        bad = data_lib.pop_bad(batch)
        if bad is not None and (bad >= 0).any():
            weight[:n][bad >= 0] = 0.0
            if on_bad is not None:
                on_bad(bad)
        kept = weight[:n] > 0
        if batch["label"].ndim == 2:
            labels.append(batch["label"][kept])
        if n < batch_size:  # every array (and each modality's) padded alike
            fill = batch_size - n
            batch = jax.tree.map(
                lambda v, fill=fill: np.concatenate([v, np.repeat(v[-1:], fill, axis=0)]), batch)
        out = jax.device_get(eval_step(state, batch, weight))
        for k in totals:
            totals[k] += float(out[k])
        if labels:
            scores.append(np.asarray(out["logits"])[:n][kept])
    result = {f"{prefix}/loss": totals["loss"] / totals["count"],
              f"{prefix}/accuracy": totals["correct"] / totals["count"]}
    if labels:
        result[f"{prefix}/mAP"] = mean_average_precision(np.concatenate(labels),
                                                         np.concatenate(scores))
    return result


def mean_average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Macro mAP over the classes with a positive: the average precision of each class
    (a column of ``[examples, classes]``), then their mean (AudioSet's metric)."""
    from sklearn.metrics import average_precision_score

    present = labels.sum(axis=0) > 0
    if not present.any():
        return float("nan")
    return float(average_precision_score(labels[:, present], scores[:, present],
                                         average="macro"))


def smoke_test() -> dict[str, Any]:
    """Build, compile and run one train step of a tiny Perceiver on the default device."""
    import time

    from suite import config as cfg_lib
    from suite.models import build_model
    from suite.training.optim import optimizer, schedule

    config = cfg_lib.build("synthetic", {"train.batch_size": 8})
    model = build_model(config, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split((model, nnx.Optimizer(model, optimizer(config.train),
                                                      wrt=nnx.Param)))
    steps = Steps(graphdef, config, schedule(config.train))
    d = config.data
    batch = {"inputs": np.random.default_rng(0).normal(size=(8, *d.index_dims, d.channels))
             .astype(np.float32), "label": np.arange(8, dtype=np.int32) % d.num_classes}
    start = time.perf_counter()
    compiled = steps.train_step.lower(state, batch).compile()
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    _, metrics = compiled(state, batch)
    loss = float(jax.device_get(metrics["loss"]))
    return {"compile_seconds": compile_seconds, "step_seconds": time.perf_counter() - start,
            "loss": loss, "ok": bool(np.isfinite(loss))}
