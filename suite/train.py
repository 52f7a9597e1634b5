"""Training: a module-level loss, jit-compiled steps, the loop, and the run folder.

A run folder holds ``config.json``, ``metrics.jsonl`` (one line per logged step),
``summary.json`` (written once, at the end) and ``checkpoints/``. Rerunning in the same
folder resumes from the newest good checkpoint and gives bit-identical results to an
uninterrupted run: model, optimizer, RNG and data-iterator state are all restored, and
partially accumulated metrics too.
"""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from suite import config as cfg_lib
from suite import data as data_lib
from suite import fmt
from suite.checkpoint import Checkpointer
from suite.config import Config
from suite.errors import CheckpointError, SuiteError
from suite.files import append_jsonl, read_json, read_jsonl, write_json_atomic, write_text_atomic
from suite.flops import analytic_flops, cost_of
from suite.model import build_model, count_params
from suite.optim import optimizer as make_optimizer
from suite.optim import schedule as make_schedule

METRIC_KEYS = ("loss", "accuracy", "grad_norm")


class Preempted(Exception):
    """SIGTERM / SIGINT arrived; a checkpoint was saved. ``signum`` says which."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"stopped by signal {signum} after step {step}; checkpoint saved")
        self.signum, self.step = signum, step


def machine_description() -> str:
    """CPU model, core count and JAX backend, for the record in every summary."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                       cpu)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {cores} cores, jax {jax.__version__} on {jax.default_backend()}"


# --------------------------------------------------------------------------- losses


def loss_fn(model: nnx.Module, batch: dict[str, jax.Array], config: Config):
    """Mean loss over the batch (softmax or sigmoid cross-entropy), and the logits."""
    logits = model(**data_lib.model_kwargs(batch))
    return _loss(logits, batch["label"], config), logits


def _loss(logits: jax.Array, labels: jax.Array, config: Config) -> jax.Array:
    t = config.train
    targets = jax.nn.one_hot(labels, logits.shape[-1])
    if t.label_smoothing:
        targets = optax.smooth_labels(targets, t.label_smoothing)
    if t.loss == "sigmoid":
        return optax.sigmoid_binary_cross_entropy(logits, targets).sum(-1).mean()
    return optax.softmax_cross_entropy(logits, targets).mean()


# --------------------------------------------------------------------------- steps


class Steps:
    """The compiled train and eval steps over ``(model, optimizer)`` state.

    ``nnx.split`` once, then pure ``jax.jit`` functions of the state pytree: no NNX
    graph walk per step. The train step donates its state. ``traces`` counts how often
    Python traced each step (one each, for the whole run).
    """

    def __init__(self, graphdef: nnx.GraphDef, config: Config, lr_schedule: optax.Schedule):
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
                "accuracy": (logits.argmax(-1) == batch["label"]).mean(),
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
            targets = batch["label"]
            per_example = _per_example_loss(logits, targets, config)
            return {
                "loss": (per_example * weight).sum(),
                "correct": ((logits.argmax(-1) == targets) * weight).sum(),
                "count": weight.sum(),
            }

        self.train_step = jax.jit(train_step, donate_argnums=0)
        self.eval_step = jax.jit(eval_step)


def _per_example_loss(logits: jax.Array, labels: jax.Array, config: Config) -> jax.Array:
    targets = jax.nn.one_hot(labels, logits.shape[-1])
    if config.train.loss == "sigmoid":
        return optax.sigmoid_binary_cross_entropy(logits, targets).sum(-1)
    return optax.softmax_cross_entropy(logits, targets)


def evaluate(steps: Steps, state, ds: data_lib.Dataset, batch_size: int) -> dict[str, float]:
    """Loss and accuracy over the whole eval split (short last batch padded, weighted 0)."""
    totals = {"loss": 0.0, "correct": 0.0, "count": 0.0}
    for batch in data_lib.eval_batches(ds, batch_size):
        n = batch["label"].shape[0]
        weight = np.zeros(batch_size, np.float32)
        weight[:n] = 1.0
        if n < batch_size:
            batch = {k: np.concatenate([v, np.repeat(v[-1:], batch_size - n, axis=0)])
                     for k, v in batch.items()}
        out = jax.device_get(steps.eval_step(state, batch, weight))
        for k in totals:
            totals[k] += float(out[k])
    return {"eval/loss": totals["loss"] / totals["count"],
            "eval/accuracy": totals["correct"] / totals["count"]}


# ---------------------------------------------------------------------- the run folder


def _check_config(workdir: Path, config: Config) -> None:
    """Refuse a folder that holds a run of another config."""
    path = workdir / "config.json"
    if path.exists():
        try:
            existing = cfg_lib.from_dict(read_json(path))
        except (ValueError, SuiteError) as e:
            raise CheckpointError(f"{path}: unreadable config ({e}); move the folder away") \
                from None
        if existing != config:
            flat_old = cfg_lib.flatten(existing)
            flat_new = cfg_lib.flatten(config)
            diff = [k for k in flat_new if flat_old.get(k) != flat_new[k]]
            k = diff[0] if diff else "?"
            raise CheckpointError(
                f"{workdir} holds a run with another config ({k}={flat_old.get(k)!r} there, "
                f"{flat_new.get(k)!r} here); use another --workdir"
            )


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metric lines past the restored step, so a resume never duplicates lines."""
    rows = [r for r in read_jsonl(path) if r.get("step", 0) <= last_step]
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


class _Signals:
    """Turns SIGTERM / SIGINT into a flag the loop checks between steps."""

    def __init__(self):
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        if self.received is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


# ------------------------------------------------------------------------ the loop


def train_and_evaluate(
    config: Config,
    workdir: str | Path,
    *,
    retry_failed: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train ``config`` in ``workdir`` (resuming if it holds a checkpoint); the summary.

    A completed run is returned as is; a failed one too unless ``retry_failed``.
    """
    workdir = Path(workdir).absolute()
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    summary_path = workdir / "summary.json"
    _check_config(workdir, config)
    if summary_path.exists():
        summary = read_json(summary_path)
        if summary.get("status") == "completed" or not retry_failed:
            log(f"{workdir.name}: already {summary.get('status')}; not training again")
            return summary
        summary_path.unlink()

    t = config.train
    wall_start = time.perf_counter()
    ds = data_lib.load(config.data)  # user mistakes surface here, before anything is written
    model = build_model(config, rngs=nnx.Rngs(params=config.seed, dropout=config.seed + 1))
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / "config.json").exists():
        write_json_atomic(workdir / "config.json", cfg_lib.to_dict(config))
    params = count_params(model)
    opt = nnx.Optimizer(model, make_optimizer(t), wrt=nnx.Param)
    graphdef, state = nnx.split((model, opt))
    del model, opt
    steps = Steps(graphdef, config, make_schedule(t))
    train_iter = iter(data_lib.train_batches(ds, t.batch_size, seed=config.seed))

    ckpt = Checkpointer(workdir / "checkpoints", t.keep_checkpoints)
    metrics_path = workdir / "metrics.jsonl"
    step, acc, window, prior_wall = 0, None, 0, 0.0
    restored = ckpt.restore_latest(state)
    if restored is not None:
        step, state, data_state, meta = restored
        train_iter.set_state(data_state)
        window, prior_wall = meta["window"], meta["wall_seconds"]
        if meta["acc"] is not None:
            acc = {k: jnp.asarray(np.float32(v)) for k, v in meta["acc"].items()}
        log(f"{workdir.name}: resuming from step {step}")
    _truncate_metrics(metrics_path, step)

    batch = next(train_iter)
    compile_start = time.perf_counter()
    compiled = steps.train_step.lower(state, batch).compile()
    compile_seconds = time.perf_counter() - compile_start
    step_flops = cost_of(compiled)["flops"]
    mem = compiled.memory_analysis()
    xla_temp_bytes = int(getattr(mem, "temp_size_in_bytes", 0) or 0) if mem else 0

    def save(at_step: int) -> None:
        # Called between steps, when the iterator has yielded exactly the batches used.
        ckpt.save(at_step, state, train_iter.get_state(), {
            "step": at_step, "window": window, "wall_seconds": prior_wall + time.perf_counter()
            - wall_start, "acc": None if acc is None else
            {k: float(v) for k, v in jax.device_get(acc).items()},
        })

    def finish(status: str, reason: str | None, final: dict[str, float]) -> dict[str, Any]:
        timed = [r for r in read_jsonl(metrics_path) if "step_seconds" in r]
        step_seconds = float(np.median([r["step_seconds"] for r in timed])) if timed else None
        summary = {
            "status": status,
            **({"reason": reason} if reason else {}),
            "step": step,
            "metrics": final,
            "params": params,
            "flops_per_step_xla": step_flops,
            "flops_per_example_xla": step_flops / t.batch_size,
            "achieved_flops_per_s": step_flops / step_seconds if step_seconds else None,
            "step_seconds": step_seconds,
            "examples_per_s": t.batch_size / step_seconds if step_seconds else None,
            "compile_seconds": compile_seconds,
            "xla_temp_bytes": xla_temp_bytes,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "wall_seconds": prior_wall + time.perf_counter() - wall_start,
            "device": jax.devices()[0].device_kind,
            "machine": machine_description(),
            "flops_forward_analytic": analytic_flops(config)["total"],
        }
        write_json_atomic(summary_path, summary)
        ckpt.close()
        return summary

    log(f"{workdir.name}: training from step {step} to {t.steps}")
    bar = None
    use_bar = sys.stderr.isatty() if progress is None else progress
    if use_bar:
        from tqdm import tqdm

        bar = tqdm(total=t.steps, initial=step, desc=workdir.name[:30], unit="step",
                   dynamic_ncols=True, leave=True)
    last_train: dict[str, float] = {}
    for row in reversed(read_jsonl(metrics_path)):
        if "train/loss" in row:
            last_train = {k: row[k] for k in ("train/loss", "train/accuracy")}
            break
    window_start = time.perf_counter()
    with _Signals() as signals:
        while step < t.steps:
            if batch is None:
                batch = next(train_iter)
            state, m = compiled(state, batch)
            step += 1
            batch = None
            acc = m if acc is None else jax.tree.map(jnp.add, acc, m)
            window += 1
            log_now = step % t.log_every == 0 or step == t.steps
            ckpt_now = step % t.checkpoint_every == 0 or step == t.steps
            eval_now = (t.eval_every and step % t.eval_every == 0) or step == t.steps
            stop_now = signals.received is not None
            if not (log_now or ckpt_now or eval_now or stop_now):
                continue
            sums = jax.device_get(acc)
            if sums["nonfinite"] > 0 or not all(math.isfinite(float(sums[k])) for k in sums):
                if bar:
                    bar.close()
                good = ckpt.steps()
                return finish(
                    "failed",
                    f"non-finite loss within steps {step - window + 1}..{step}; the last good "
                    f"checkpoint is step {good[-1] if good else 'none'}",
                    last_train,
                )
            if log_now:
                now = time.perf_counter()
                step_seconds = (now - window_start) / window
                means = {f"train/{k}": float(sums[k]) / window for k in METRIC_KEYS}
                row = {"step": step, **means,
                       "learning_rate": float(m["learning_rate"]),
                       "step_seconds": step_seconds,
                       "examples_per_s": t.batch_size / step_seconds}
                append_jsonl(metrics_path, row)
                last_train = {k: means[k] for k in ("train/loss", "train/accuracy")}
                acc, window, window_start = None, 0, now
                eta = fmt.duration((t.steps - step) * step_seconds)
                if bar:
                    bar.set_postfix(loss=f"{means['train/loss']:.3f}",
                                    acc=f"{means['train/accuracy']:.3f}",
                                    ex_s=f"{row['examples_per_s']:.0f}", refresh=False)
                else:
                    log(f"{workdir.name}: step {step}/{t.steps} loss {means['train/loss']:.4f} "
                        f"acc {means['train/accuracy']:.3f} lr {row['learning_rate']:.2e} "
                        f"{row['examples_per_s']:.0f} ex/s eta {eta}")
            if eval_now:
                ev = evaluate(steps, state, ds, t.eval_batch_size)
                append_jsonl(metrics_path, {"step": step, **ev})
                if not bar:
                    log(f"{workdir.name}: step {step} eval loss {ev['eval/loss']:.4f} "
                        f"acc {ev['eval/accuracy']:.4f}")
            if ckpt_now or stop_now:
                save(step)
            if bar:
                bar.update(step - bar.n)
            if stop_now:
                if bar:
                    bar.close()
                ckpt.close()
                raise Preempted(signals.received, step)
    if bar:
        bar.close()
    final_eval = [r for r in read_jsonl(metrics_path) if "eval/accuracy" in r]
    final = {**last_train, **{k: final_eval[-1][k] for k in ("eval/loss", "eval/accuracy")}}
    return finish("completed", None, final)


def load_state(config: Config, workdir: str | Path) -> tuple[nnx.Module, int]:
    """The model from a run folder's newest good checkpoint, and its step."""
    model = build_model(config, rngs=nnx.Rngs(params=config.seed, dropout=config.seed + 1))
    opt = nnx.Optimizer(model, make_optimizer(config.train), wrt=nnx.Param)
    graphdef, state = nnx.split((model, opt))
    ckpt = Checkpointer(Path(workdir) / "checkpoints", config.train.keep_checkpoints)
    try:
        restored = ckpt.restore_latest(state)
    finally:
        ckpt.close()
    if restored is None:
        raise CheckpointError(f"{workdir}: no readable checkpoint")
    model, _ = nnx.merge(graphdef, restored[1])
    return model, restored[0]
