"""``run --dry-run``: what a grid would train, what it costs, and whether it fits here,
without training or writing anything.

Per run: unique parameters, analytic train FLOPs for all its steps, XLA's predicted
memory of its train and eval steps, whether that fits this machine, and the wall time
where a step time is known: from a completed run of the same config in the results
folder, or measured with ``--measure`` (a few real steps on random inputs).

Memory is the pre-flight's figure (XLA's memory analysis of the steps compiled on
abstract shapes), found cheaply: configs that differ only in their seed share one
estimate, programs that differ only in constants (a learning rate, a weight decay)
share one compile, and the compile skips LLVM's optimisations, which change the
machine code but not XLA's buffer assignment, so not the prediction. A config that
does not fit, or trains on a mesh, gets the pre-flight's full plan, which says why and
finds the eval batch that fits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from suite import fmt
from suite.config import Config
from suite.models import count_params
from suite.models.flops import train_flops
from suite.platform.devices import cpu_count
from suite.sweeps.results import read_run
from suite.sweeps.spec import Run, Spec

# LLVM unoptimised: the code is never run, and buffer assignment happens before it
FAST_COMPILE = {"xla_backend_optimization_level": 0}
_CONSTANT = re.compile(r"dense<[^>]*>")


def cost(run: Run, *, measure: bool = False) -> dict[str, Any]:
    """Params, predicted memory, fit, and (if ``measure``) seconds per step of one run,
    from the pre-flight's full plan (the steps compiled as training compiles them)."""
    import jax
    from flax import nnx

    from suite.training import preflight

    config = run.config
    graphdef, state = preflight.abstract_state(config)
    plan = preflight.plan(config, graphdef, state,
                          preflight.batch_spec(config, config.train.batch_size), check=False)
    row = {"params": count_params(nnx.merge(graphdef, state)[0]),
           "train_memory": plan.train_memory.total,
           "eval_memory": plan.eval_memory.total if plan.eval_memory else None,
           "eval_batch": plan.eval_batch_size, "budget": plan.budget,
           "budget_source": plan.budget_source, "problem": plan.problem}
    if measure and plan.problem is None:
        real = nnx.state(nnx.merge(graphdef, jax.tree.map(
            lambda s: np.zeros(s.shape, s.dtype) if not jax.dtypes.issubdtype(
                s.dtype, jax.dtypes.prng_key) else jax.random.key(0), state)))
        rng = np.random.default_rng(0)
        batch = {k: (rng.integers(0, config.data.num_classes, v.shape) if k == "label"
                     else rng.normal(size=v.shape)).astype(v.dtype)
                 for k, v in preflight.batch_spec(config, config.train.batch_size).items()}
        real, m = plan.train(real, batch)  # burn-in
        jax.block_until_ready(m)
        start = time.perf_counter()
        for _ in range(3):
            real, m = plan.train(real, batch)
        jax.block_until_ready(m)
        row["step_seconds"] = (time.perf_counter() - start) / 3
    return row


def _compile(lowered: Any) -> Any:
    try:
        return lowered.compile(FAST_COMPILE)
    except Exception:  # a backend that refuses the option compiles as training does
        return lowered.compile()


def program_signature(lowered: Any) -> str:
    """A digest of a lowered program with its constants' values blanked: two programs
    with one signature have the same shapes and operations, so the same memory."""
    return hashlib.sha256(_CONSTANT.sub("dense<>", lowered.as_text()).encode()).hexdigest()


class Estimates:
    """Cost of a grid's runs, each distinct config planned once, each program compiled once.

    Compiles run on worker threads, one per core up to 4 (XLA's compiler releases the
    GIL), so compiles overlap each other and the tracing of the next config: :meth:`submit`
    every run first, then read each with :meth:`of`. ``compiles``: how many programs were
    compiled.
    """

    def __init__(self, *, measure: bool = False, log: Callable[[str], None] = lambda m: None):
        self.measure, self.log = measure, log
        self.by_config: dict[str, dict[str, Any]] = {}
        self.by_program: dict[str, Future] = {}
        self.compiles = 0
        self.pool = ThreadPoolExecutor(max(1, min(4, cpu_count())))

    def __enter__(self) -> Estimates:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(cancel_futures=True)

    @staticmethod
    def key(run: Run) -> str:
        return repr(dataclasses.replace(run.config, seed=0))  # the seed changes no shape

    def submit(self, run: Run) -> None:
        """Trace ``run``'s steps and queue their compile, unless a twin's is queued."""
        key = self.key(run)
        if key in self.by_config:
            return
        if self.measure or run.config.train.mesh:  # the pre-flight's full plan, here
            self.log(f"compiling {run.id} on abstract shapes ...")
            self.compiles += 1
            self.by_config[key] = cost(run, measure=self.measure)
            return
        from flax import nnx

        from suite.training import preflight
        from suite.training.optim import schedule
        from suite.training.steps import Steps

        config = run.config
        graphdef, state = preflight.abstract_state(config)
        steps = Steps(graphdef, config, schedule(config.train))
        lowered = steps.train_step.lower(
            state, preflight.batch_spec(config, config.train.batch_size))
        program = program_signature(lowered)
        if program not in self.by_program:
            self.log(f"compiling {run.id} on abstract shapes ...")
            self.compiles += 1
            size = config.train.eval_batch_size or preflight.MAX_EVAL_BATCH
            self.by_program[program] = self.pool.submit(
                _memory, lowered, _lower_eval(steps, state, config, size), size)
        self.by_config[key] = {"params": count_params(nnx.merge(graphdef, state)[0]),
                               "pending": self.by_program[program]}

    def of(self, run: Run) -> dict[str, Any]:
        """Params, memory, the budget, and why it does not fit (``problem``) or None."""
        self.submit(run)
        found = self.by_config[self.key(run)]
        if "pending" in found:
            from suite.training import preflight

            memory = found.pop("pending").result()
            have, source = preflight.budget()
            if memory["train_memory"] > have or memory["eval_memory"] > have:
                memory = cost(run)  # the pre-flight says why, and finds an eval batch
            found.update({"budget": have, "budget_source": source, "problem": None, **memory})
        return found


def _lower_eval(steps: Any, state: Any, config: Config, size: int) -> Any:
    import jax
    import jax.numpy as jnp

    from suite.training import preflight

    return steps.eval_step.lower(state, preflight.batch_spec(config, size, training=False),
                                 jax.ShapeDtypeStruct((size,), jnp.float32))


def _memory(train: Any, evaluation: Any, size: int) -> dict[str, Any]:
    """XLA's predicted bytes of the lowered train and eval steps (the pre-flight's figure)."""
    from suite.training import preflight

    return {"train_memory": preflight.Memory.of(_compile(train)).total,
            "eval_memory": preflight.Memory.of(_compile(evaluation)).total, "eval_batch": size}


def known_step_seconds(out: Path, run: Run) -> float | None:
    """Seconds per step of this run if it completed before in ``out``."""
    row = read_run(out / "runs" / run.id)
    seconds = row.get("step_seconds") if row else None
    return float(seconds) if seconds else None


def flops_text(n: float) -> str:
    """``3.27e12`` -> ``3.27 TFLOP``: three figures in the unit that keeps them."""
    for unit, scale in (("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9),
                        ("MFLOP", 1e6)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} FLOP"


def _size(n: float | None) -> str:
    if n is None:
        return "—"
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def wall_time_line(seconds: float, known: dict[str, int], unknown: int) -> str:
    """The grid's wall-time estimate, saying what it rests on, or that it is unknown.
    ``known``: how many runs' step times came from each source."""
    how = "pass --measure to time a few steps of each config"
    if not any(known.values()):
        return f"estimated wall time: unknown: no step time is known for these runs ({how})"
    sources = ", ".join(f"{n} {what}" for what, n in known.items() if n)
    basis = f"steps x seconds per step ({sources}); compiles and evals not included"
    if not unknown:
        return f"estimated wall time: {fmt.duration(seconds)}: {basis}"
    return (f"estimated wall time: more than {fmt.duration(seconds)}: {basis}; unknown for "
            f"the other {unknown} run(s) ({how})")


def dry_run_table(spec: Spec, runs: list[Run], out: Path, *, measure: bool = False,
                  log: Callable[[str], None] = lambda msg: None) -> str:
    """One line per run, then the grid's totals."""
    with Estimates(measure=measure, log=log) as estimates:
        for run in runs:
            estimates.submit(run)
        return _table(spec, runs, out, estimates)


def _table(spec: Spec, runs: list[Run], out: Path, estimates: Estimates) -> str:
    lines = [f"{spec.path}: {spec.description}".rstrip(": "),
             f"{'run id':<58} {'params':>9} {'train FLOPs':>11} {'train mem':>10} "
             f"{'eval mem':>9} {'fits':>4} {'est. time':>9}"]
    total_flops, total_seconds, unknown, misfits = 0.0, 0.0, 0, []
    known = {"from completed runs": 0, "measured": 0}
    for run in runs:
        c = estimates.of(run)
        flops = train_flops(run.config, run.config.train.batch_size) * run.config.train.steps
        total_flops += flops
        seconds = known_step_seconds(out, run)
        if seconds:
            known["from completed runs"] += 1
        elif c.get("step_seconds"):
            seconds = c["step_seconds"]
            known["measured"] += 1
        if seconds:
            total_seconds += seconds * run.config.train.steps
        else:
            unknown += 1
        fits = c["problem"] is None
        if not fits:
            misfits.append(f"  {run.id}: {c['problem']}")
        wall = fmt.duration(seconds * run.config.train.steps) if seconds else "—"
        lines.append(f"{run.id:<58} {c['params']:>9,} {flops_text(flops):>11} "
                     f"{_size(c['train_memory']):>10} {_size(c['eval_memory']):>9} "
                     f"{'yes' if fits else 'NO':>4} {wall:>9}")
    first = next(iter(estimates.by_config.values()), None)
    lines.append(f"{len(runs)} runs ({len(spec.seeds)} seeds) -> {out}/runs/<id>/; "
                 f"train FLOPs in all: {flops_text(total_flops)} (analytic: 3 x forward "
                 "x batch x steps)")
    if first:
        lines.append(f"memory: {first['budget_source']} is {_size(first['budget'])}; "
                     f"{len(misfits)} run(s) do not fit (XLA's prediction, "
                     f"{estimates.compiles} program(s) compiled on abstract shapes)")
    lines.append(wall_time_line(total_seconds, known, unknown))
    lines += misfits
    lines.append("nothing written (dry run)")
    return "\n".join(lines)
