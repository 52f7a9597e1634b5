"""``run --dry-run``: what a grid would train, what it costs, and whether it fits here,
without training or writing anything.

Per run: unique parameters, analytic train FLOPs for all its steps, XLA's predicted
memory of its train and eval steps (compiled on abstract shapes, once per distinct
model/data/batch), whether that fits this machine, and the wall time where a step time
is known: from a completed run of the same config in the results folder, or measured
with ``--measure`` (a few real steps on random inputs).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from suite import fmt
from suite.models import count_params
from suite.models.flops import train_flops
from suite.sweeps.results import read_run
from suite.sweeps.spec import Run, Spec


def _key(run: Run) -> str:
    c = run.config
    return repr((c.model, c.data, c.train.batch_size, c.train.eval_batch_size))


def cost(run: Run, *, measure: bool = False) -> dict[str, Any]:
    """Params, predicted memory, fit, and (if ``measure``) seconds per step of one run."""
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


def known_step_seconds(out: Path, run: Run) -> float | None:
    """Seconds per step of this run if it completed before in ``out``."""
    row = read_run(out / "runs" / run.id)
    seconds = row.get("step_seconds") if row else None
    return float(seconds) if seconds else None


def _size(n: float | None) -> str:
    if n is None:
        return "—"
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def dry_run_table(spec: Spec, runs: list[Run], out: Path, *, measure: bool = False,
                  log=lambda msg: None) -> str:
    """One line per run, then the grid's totals."""
    costs: dict[str, dict[str, Any]] = {}
    lines = [f"{spec.path}: {spec.description}".rstrip(": "),
             f"{'run id':<58} {'params':>9} {'train TFLOP':>11} {'train mem':>10} "
             f"{'eval mem':>9} {'fits':>4} {'est. time':>9}"]
    total_flops, total_seconds, unknown, misfits = 0.0, 0.0, 0, []
    for run in runs:
        key = _key(run)
        if key not in costs:
            log(f"compiling {run.id} on abstract shapes ...")
            costs[key] = cost(run, measure=measure)
        c = costs[key]
        flops = train_flops(run.config, run.config.train.batch_size) * run.config.train.steps
        total_flops += flops
        seconds = known_step_seconds(out, run) or c.get("step_seconds")
        if seconds:
            total_seconds += seconds * run.config.train.steps
        else:
            unknown += 1
        fits = c["problem"] is None
        if not fits:
            misfits.append(f"  {run.id}: {c['problem']}")
        wall = fmt.duration(seconds * run.config.train.steps) if seconds else "—"
        lines.append(f"{run.id:<58} {c['params']:>9,} {flops / 1e12:>11.3f} "
                     f"{_size(c['train_memory']):>10} {_size(c['eval_memory']):>9} "
                     f"{'yes' if fits else 'NO':>4} {wall:>9}")
    budget = next(iter(costs.values())) if costs else None
    lines.append(f"{len(runs)} runs ({len(spec.seeds)} seeds) -> {out}/runs/<id>/; "
                 f"train FLOPs in all: {total_flops / 1e15:.3f} PFLOP (analytic, 3 x forward)")
    if budget:
        lines.append(f"memory: {budget['budget_source']} is {_size(budget['budget'])}; "
                     f"{len(misfits)} run(s) do not fit")
    lines.append(f"estimated wall time: {fmt.duration(total_seconds)}" + (
        f" for the {len(runs) - unknown} runs with a known step time ({unknown} without: "
        "pass --measure to time a few steps of each config)" if unknown else ""))
    lines += misfits
    lines.append("nothing written (dry run)")
    return "\n".join(lines)
