"""Training: one run in one folder, resumable bit-identically, never losing work.

A run folder holds ``config.json``, ``metrics.jsonl`` (one line per logged step),
``summary.json`` (written once, at the end) and ``checkpoints/``. Rerunning in the same
folder resumes from the newest intact checkpoint and gives bit-identical results to an
uninterrupted run: model, optimizer, RNG and data-iterator state are all restored, and
partially accumulated metrics too. The folder is locked while a process trains it.

The loop is one compiled step plus periodic actions (log, evaluate, checkpoint) that
run only when due; the host waits for the device only then.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from suite import data as data_lib
from suite import fmt
from suite.config import Config, flatten
from suite.data.skips import BadData, SkipLog
from suite.models.flops import cost_of
from suite.models.registry import build_model, count_params
from suite.platform import devices, hosts
from suite.platform.sharding import Placement
from suite.training import lock, preflight, stop, warm_start
from suite.training.checkpoint import FRESH_DATA, Checkpointer
from suite.training.figures import run_figures
from suite.training.optim import optimizer as make_optimizer
from suite.training.periodic import Every, Window
from suite.training.run_folder import (
    CHECKPOINTS,
    MetricsLog,
    check_config,
    plugin_changes,
    prepare_retry,
    read_extensions,
    read_summary,
    set_aside_summary,
    write_config,
    write_summary,
)
from suite.training.steps import METRIC_KEYS, evaluate
from suite.training.writers import JsonlWriter, TensorBoardWriter, Writers, hparams


class EvaluationFailed(Exception):
    """An evaluation at ``step`` raised; the run is failed, its checkpoints kept."""

    def __init__(self, step: int, error: BaseException):
        first = (str(error).strip().splitlines() or [""])[0][:300]
        super().__init__(f"the evaluation at step {step} failed: {type(error).__name__}: "
                         f"{first}")


class Diverged(Exception):
    """The loss (or a metric) went non-finite within steps ``first_step`` .. now."""

    def __init__(self, first_step: int):
        super().__init__(first_step)
        self.first_step = first_step


class Trainer:
    """Train ``config`` in ``workdir``: setup, a short loop of periodic actions, a summary."""

    def __init__(self, config: Config, workdir: Path, *, progress: bool,
                 log: Callable[[str], None]):
        self.config, self.t = config, config.train
        self.workdir, self.name = workdir, workdir.name
        self.progress, self.log = progress, log
        self.metrics = MetricsLog(workdir)
        self.wall_start = time.perf_counter()
        self.step, self.prior_wall, self.bar = 0, 0.0, None
        self.last_train: dict[str, float] = {}
        self.init_from: dict[str, Any] | None = None  # where a warm start began

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        """Data, a memory check on abstract shapes, model, optimizer, restore. A stop signal
        here leaves no trace; a run that cannot fit raises ``DoesNotFit`` before any step."""
        t, config = self.t, self.config
        if t.init_from and not any((self.workdir / CHECKPOINTS).glob("[0-9]*")):
            warm_start.check_source(config)  # a wrong source is one line before compiling
        devices.enable_compile_cache()
        self.ds = data_lib.load(config.data, config.seed)  # user mistakes surface here
        self.train_eval = data_lib.train_eval_split(self.ds, t.eval_train_examples, config.seed)
        self.log(f"{self.name}: compiling the train step")
        graphdef, abstract = preflight.abstract_state(config)
        spec = preflight.batch_spec(config, t.batch_size)
        self.plan = preflight.plan(config, graphdef, abstract, spec)
        self.steps, self.compiled = self.plan.steps, self.plan.train
        self.compile_seconds = self.plan.compile_seconds
        self.place = Placement(self.plan.mesh, self.plan.state_sharding)
        if self.place.primary:
            write_config(self.workdir, config)
        model = build_model(config, rngs=nnx.Rngs(params=config.seed, dropout=config.seed + 1))
        self.params = count_params(model)
        self.state = self.place.state(
            nnx.state((model, nnx.Optimizer(model, make_optimizer(t), wrt=nnx.Param))))
        del model
        self.train_iter = iter(data_lib.train_batches(
            self.ds, t.batch_size, seed=config.seed, process=self.place.process,
            processes=self.place.processes))
        self.ckpt = Checkpointer(self.workdir / CHECKPOINTS, t.keep_checkpoints)
        self.window = Window()
        self.skips = SkipLog(config.data, lambda msg: self.log(f"{self.name}: {msg}"))
        if self.place.primary and (torn := self.metrics.drop_torn()):
            self.log(f"{self.name}: metrics.jsonl ended in a torn line ({torn} bytes, a kill "
                     "mid-write); dropped it")
        self._restore()
        last = self.metrics.last("train/loss")
        if last:
            self.last_train = {k: last[k] for k in ("train/loss", "train/accuracy")}
        writers = [JsonlWriter(self.metrics)] if self.place.primary else []
        if t.tensorboard and self.place.primary:
            writers.append(TensorBoardWriter(self.workdir, self.step, hparams(config)))
        self.writer = Writers(*writers)  # only process 0 writes the run folder's files
        self.skips.dropped(self.ds.train, "train")
        self.skips.dropped(self.ds.eval, "eval")
        self.pending = self._next_batch()
        if preflight.like(self.pending) != spec:  # the pipeline's batch is the truth
            self.compiled, _, _ = preflight.compile_train(self.steps, self.state, self.pending)
        self.step_flops = cost_of(self.compiled)["flops"]

    def _restore(self) -> None:
        """Resume from the run's own newest checkpoint; without one, start afresh, from
        ``train.init_from``'s weights if set (a resumed warm start never reads them again:
        its checkpoints carry the record of where it started)."""
        restored = self.ckpt.restore_latest(self.state)
        if restored is None:
            if self.place.primary:
                self._start_metrics_afresh()
            if self.t.init_from:
                self.state, source = warm_start.initial_state(self.config, self.state, self.log)
                self.init_from = source.record()
                self.log(f"{self.name}: starting from {source.path} (step {source.step}, "
                         f"weights sha256 {source.weights_sha256[:12]}), optimizer "
                         f"{source.optimizer}")
            return
        self.step, self.state = restored.step, restored.state
        if restored.data != FRESH_DATA:  # imported weights start the data stream afresh
            self.train_iter.set_state(restored.data)
        self.prior_wall = restored.meta["wall_seconds"]
        acc = restored.meta["acc"]
        self.window = Window(None if acc is None else
                             {k: jnp.asarray(np.float32(v)) for k, v in acc.items()},
                             restored.meta["window"])
        self.skips.restore(restored.meta.get("skipped"))
        self.init_from = restored.meta.get("init_from")
        if self.place.primary:
            self.metrics.truncate_to(self.step)
        self.log(f"{self.name}: resuming from step {self.step}")
        plugin_changes(self.workdir, lambda line: self.log(f"{self.name}: {line}"))

    def _start_metrics_afresh(self) -> None:
        """No checkpoint to resume: old metric lines are kept aside if checkpoints were."""
        if not self.metrics.rows():
            return
        if self.ckpt.moved_aside:  # every checkpoint was corrupt: keep the lines as evidence
            k = 1
            while (self.workdir / f"metrics_corrupt_{k}.jsonl").exists():
                k += 1
            kept = self.metrics.set_aside(f"metrics_corrupt_{k}.jsonl")
            self.log(f"{self.name}: no intact checkpoint; starting from step 0, earlier metric "
                     f"lines kept in {kept}")
        else:  # killed before its first checkpoint: those steps are recomputed identically
            self.metrics.truncate_to(0)

    # ------------------------------------------------------------------- loop

    def loop(self) -> dict[str, Any]:
        t = self.t
        evaluating = Every(t.eval_every, t.steps)  # after the checkpoint: a failed
        actions = [(Every(t.log_every, t.steps), self._log),  # evaluation costs no steps
                   (Every(t.checkpoint_every, t.steps), self._checkpoint),
                   (evaluating, self._evaluate)]
        if self.step and evaluating(self.step) and not any(  # killed while evaluating
                r.get("step") == self.step and "eval/accuracy" in r for r in self.metrics.rows()):
            self._evaluate()
        self.log(f"{self.name}: training from step {self.step} to {t.steps}")
        self._open_bar()
        self.window.resume()
        with stop.deferred():
            while self.step < t.steps:
                batch = self._next_batch() if self.pending is None else self.pending
                self.pending = None
                self.state, metrics = self.compiled(self.state, batch)
                self.step += 1
                self.window.add(metrics)
                if self.bar:
                    self.bar.update(1)
                due = [act for every, act in actions if every(self.step)]
                signum = stop.requested()
                if not due and signum is None:
                    continue
                self.sums = self.window.host_sums()  # waits for the device
                self.window.pause()
                if not all(math.isfinite(v) for v in self.sums.values()) or self.sums["nonfinite"]:
                    raise Diverged(self.step - self.window.count + 1)
                for act in due:
                    act()
                if signum is not None:
                    if self._checkpoint not in due:
                        self._checkpoint()
                    raise stop.Stopped(signum, self.step, saved=True)
                self.window.resume()
        final_eval = self.metrics.last("eval/accuracy") or {}
        final = {**self.last_train, **{k: v for k, v in final_eval.items()
                                       if k.startswith(("eval/", "train_eval/"))}}
        return self.finish("completed", final)

    def _log(self) -> None:
        n, sums, seconds = self.window.count, self.sums, self.window.seconds_per_step()
        means = {f"train/{k}": sums[k] / n for k in METRIC_KEYS}
        row = {"step": self.step, **means,
               "learning_rate": float(self.window.last["learning_rate"])}
        if seconds:  # a window of restored steps only has no timing of its own
            row.update(step_seconds=seconds, examples_per_s=self.t.batch_size / seconds)
        self.writer.write(row)
        self.last_train = {k: means[k] for k in ("train/loss", "train/accuracy")}
        self.window = Window()
        self.sums = None
        ex_s = f"{row['examples_per_s']:.0f}" if seconds else "-"
        if self.bar:
            self.bar.set_postfix(loss=f"{means['train/loss']:.3f}",
                                 acc=f"{means['train/accuracy']:.3f}", ex_s=ex_s, refresh=False)
        else:
            eta = fmt.duration((self.t.steps - self.step) * seconds) if seconds else "-"
            self.log(f"{self.name}: step {self.step}/{self.t.steps} loss "
                     f"{means['train/loss']:.4f} acc {means['train/accuracy']:.3f} lr "
                     f"{row['learning_rate']:.2e} {ex_s} ex/s eta {eta}")

    def _evaluate(self) -> None:
        """The eval split, and the fixed training subset the same way (``train_eval/``):
        what the model fits, not the augmented, dropped-out training batches. A failure
        here is the run's (``EvaluationFailed``); its checkpoints stay."""
        place, skips = self.place, self.skips

        def step(st, b, w):
            return self.plan.eval(st, place.eval_batch(b), place.eval_batch(w))

        try:
            ev = evaluate(step, self.state, self.ds, self.plan.eval_batch_size,
                          on_bad=lambda bad: skips.note(self.ds.eval, bad, "eval"))
            if self.train_eval is not None:
                ev.update(evaluate(step, self.state, self.ds, self.plan.eval_batch_size,
                                   split=self.train_eval, prefix="train_eval",
                                   on_bad=lambda bad: skips.note(self.train_eval, bad, "train")))
        except BadData:
            raise
        except Exception as e:
            raise EvaluationFailed(self.step, e) from e
        self.writer.write({"step": self.step, **ev})
        if not self.bar:
            fit = (f", train_eval acc {ev['train_eval/accuracy']:.4f}"
                   if "train_eval/accuracy" in ev else "")
            self.log(f"{self.name}: step {self.step} eval loss {ev['eval/loss']:.4f} "
                     f"acc {ev['eval/accuracy']:.4f}{fit}")

    def _next_batch(self) -> dict[str, Any]:
        """The next training batch on its devices; unreadable files it met are counted."""
        batch = next(self.train_iter)
        self.skips.note(self.ds.train, data_lib.pop_bad(batch), "train")
        return self.place.train_batch(batch)

    def _checkpoint(self) -> None:
        # Between steps, when the iterator has yielded exactly the batches used.
        sums = self.sums if self.window.count else None
        self.ckpt.save(self.step, self.state, self.train_iter.get_state(), {
            "step": self.step, "window": self.window.count, "acc": sums,
            "wall_seconds": self.prior_wall + time.perf_counter() - self.wall_start,
            "skipped": self.skips.state(),
            **({"init_from": self.init_from} if self.init_from else {}),
        })

    def _open_bar(self) -> None:
        if self.progress:
            from tqdm import tqdm

            self.bar = tqdm(total=self.t.steps, initial=self.step, desc=self.name[:30],
                            unit="step", dynamic_ncols=True, leave=True)

    def close(self) -> None:
        if getattr(self, "writer", None) is not None:
            self.writer.close()
        if self.bar:
            self.bar.close()
            self.bar = None
        if getattr(self, "ckpt", None) is not None:
            self.ckpt.close()

    # ---------------------------------------------------------------- summary

    def finish(self, status: str, final: dict[str, float], reason: str | None = None,
               failure: str | None = None) -> dict[str, Any]:
        timed = [r["step_seconds"] for r in self.metrics.rows() if r.get("step_seconds")]
        summary = {
            "status": status,
            **({"reason": reason} if reason else {}),
            **({"failure": failure} if failure else {}),
            "step": self.step,
            "metrics": final,
            "params": self.params,
            **run_figures(self.config, self.step_flops, float(np.median(timed)) if timed else None,
                          self.plan, self.place),
            "wall_seconds": self.prior_wall + time.perf_counter() - self.wall_start,
            "data_skipped": self.skips.summary(),
            **({"plugins_changed": c} if (c := plugin_changes(self.workdir)) else {}),
            **({"init_from": self.init_from} if self.init_from else {}),
            **({"extended": ext} if (ext := read_extensions(self.workdir)) else {}),
        }
        self.writer.end(status)
        if self.place.primary:
            write_summary(self.workdir, summary)
        return summary

    def failed(self, reason: str, failure: str) -> dict[str, Any]:
        """Failed after setup (figures known) or in it (the reason alone); every
        checkpoint stays, and the reason says where a retry resumes."""
        saved = self.ckpt.steps() if getattr(self, "ckpt", None) is not None else []
        reason += (f"; fix it and rerun with --retry-failed: it resumes from the checkpoint of "
                   f"step {saved[-1]}" + (" and evaluates" if saved[-1] == self.t.steps else "")
                   if saved else "")
        if hasattr(self, "step_flops"):
            return self.finish("failed", self.last_train, reason=reason, failure=failure)
        summary = {"status": "failed", "failure": failure, "reason": reason, "metrics": {}}
        if getattr(self, "place", None) is None or self.place.primary:
            write_summary(self.workdir, summary)
        return summary

    def diverged(self, first_step: int) -> dict[str, Any]:
        good = self.ckpt.steps()
        return self.finish(
            "failed", self.last_train,
            reason=f"non-finite loss within steps {first_step}..{self.step}; the last good "
                   f"checkpoint is step {good[-1] if good else 'none'}",
            failure="diverged")


def train_and_evaluate(
    config: Config,
    workdir: str | Path,
    *,
    retry_failed: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train ``config`` in ``workdir`` (resuming if it holds a checkpoint); the summary.

    A completed run is returned as is; a failed one too unless ``retry_failed``: a run
    that diverged then starts again from step 0 (its attempt renamed ``*_failed_K``,
    since resuming its checkpoint with the same data diverges again); any other failed
    run resumes from its newest checkpoint. Raises :class:`lock.RunBusy` if another
    process trains the folder, :class:`stop.Stopped` on SIGTERM/SIGINT.
    """
    workdir = Path(workdir).absolute()
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    check_config(workdir, config, primary=False)  # a refusal before the lock writes nothing
    owner = lock.holding(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
    with stop.guard(), owner:  # the folder is locked by process 0 of a multi-host run
        stop.reset()
        hosts.agree(flatten(config), workdir.name)
        if extended := check_config(workdir, config, primary=jax.process_index() == 0):
            log(f"{workdir.name}: {extended}")
        summary = read_summary(workdir)
        if summary is not None and summary.get("status") == "interrupted":
            set_aside_summary(workdir, "interrupted")  # resumable: the reason is kept
            summary = None
        if summary is not None:
            if summary.get("status") == "completed" or not retry_failed:
                log(f"{workdir.name}: already {summary.get('status')}; not training again")
                return summary
            log(f"{workdir.name}: {prepare_retry(workdir, summary)}")
        trainer = Trainer(config, workdir, log=log,
                          progress=sys.stderr.isatty() if progress is None else progress)
        try:
            trainer.setup()
            return trainer.loop()
        except Diverged as e:
            return trainer.diverged(e.first_step)
        except (EvaluationFailed, BadData) as e:
            return trainer.failed(str(e), "evaluation" if isinstance(e, EvaluationFailed)
                                  else "bad_data")
        except preflight.DoesNotFit as e:  # before any step: the reason is all that is written
            write_summary(workdir, {"status": "does_not_fit", "reason": str(e), "metrics": {}})
            raise preflight.DoesNotFit(f"{workdir}: does not fit: {e}") from None
        finally:
            trainer.close()
