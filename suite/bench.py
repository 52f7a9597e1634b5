"""Benchmarks: does the input pipeline keep up with the train step? (CSV + Markdown)

For each task, measure the grain pipeline's training-batch throughput and the compiled
train step's throughput for the task's small preset, both in examples/s, after a
burn-in. The pipeline should be many times faster than the step, so the step never
waits for data.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jax
from flax import nnx

from suite import config as cfg_lib
from suite import data as data_lib
from suite.errors import DataError
from suite.files import write_text_atomic
from suite.model import build_model
from suite.optim import optimizer as make_optimizer
from suite.optim import schedule as make_schedule
from suite.train import Steps, machine_description


def pipeline_throughput(ds: data_lib.Dataset, batch_size: int, batches: int) -> float:
    it = iter(data_lib.train_batches(ds, batch_size, seed=0))
    for _ in range(3):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - start)


def step_throughput(config: cfg_lib.Config, ds: data_lib.Dataset, steps: int) -> float:
    model = build_model(config, rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(model, make_optimizer(config.train), wrt=nnx.Param)
    graphdef, state = nnx.split((model, opt))
    fns = Steps(graphdef, config, make_schedule(config.train))
    it = iter(data_lib.train_batches(ds, config.train.batch_size, seed=0))
    batch = next(it)
    step = fns.train_step.lower(state, batch).compile()
    for _ in range(3):  # burn-in
        state, m = step(state, batch)
    jax.block_until_ready(m)
    start = time.perf_counter()
    for _ in range(steps):
        state, m = step(state, batch)
    jax.block_until_ready(m)
    return steps * config.train.batch_size / (time.perf_counter() - start)


def pipeline_vs_step(tasks: list[str], steps: int = 20, batches: int = 50) -> list[dict[str, Any]]:
    rows = []
    for task in tasks:
        preset = task if task in cfg_lib.PRESETS else cfg_lib.DEFAULT_PRESET
        config = cfg_lib.build(preset, {"data.task": task})
        try:
            ds = data_lib.load(config.data)
        except DataError as e:
            rows.append({"task": task, "status": f"skipped: {e}"})
            continue
        bs = config.train.batch_size
        pipe = pipeline_throughput(ds, bs, batches)
        step = step_throughput(config, ds, steps)
        rows.append({"task": task, "status": "ok", "batch_size": bs,
                     "pipeline_examples_per_s": round(pipe, 1),
                     "train_step_examples_per_s": round(step, 1),
                     "headroom": round(pipe / step, 1)})
    return rows


def write(rows: list[dict[str, Any]], out: Path, command: str) -> Path:
    import pandas as pd

    frame = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "pipeline.csv", frame.to_csv(index=False))
    md = ["# Input pipeline vs train step (examples/s)", "",
          frame.to_markdown(index=False), "",
          f"- command: `{command}`", f"- machine: {machine_description()}", "",
          "headroom = pipeline throughput / train-step throughput (single process loader).", ""]
    write_text_atomic(out / "pipeline.md", "\n".join(md))
    return out / "pipeline.md"
