"""How long ``report`` takes on a large results folder: N generated run folders (a spec
of two knobs x seeds, each run with its config, summary and a metrics.jsonl of a few
dozen lines, as the trainer writes them), then the whole report, plots included.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from suite import config as cfg_lib
from suite.sweeps import record
from suite.sweeps import spec as spec_lib

SPEC = '''name = "report_bench"
description = "Generated run folders: {cells} cells x {seeds} seeds, for timing report."
preset = "digits"
seeds = {seed_list}
[grid]
"model.num_latents" = {latents}
"model.fourier_bands" = {bands}
[report]
x = "model.num_latents"
hue = "model.fourier_bands"
'''


def generate(out: Path, runs: int = 1000, seeds: int = 5, lines: int = 40) -> Path:
    """A results folder of ``runs`` completed run folders with a recorded run set."""
    cells = max(1, runs // seeds)
    bands = [1, 2, 4, 8]
    latents = [4 * (i + 1) for i in range(math.ceil(cells / len(bands)))]
    path = out / "report_bench.toml"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(SPEC.format(cells=len(latents) * len(bands), seeds=seeds,
                                seed_list=list(range(seeds)), latents=latents, bands=bands))
    spec = spec_lib.load(path, max_runs=None)
    expanded = spec_lib.expand(spec)
    record.claim(out, spec, expanded, {}, f"perceiver-suite bench --report {runs}")
    rng = np.random.default_rng(0)
    for run in expanded:
        write_run(out / "runs" / run.id, run.config, rng, lines)
    return out


def write_run(run_dir: Path, config: Any, rng: np.random.Generator, lines: int) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(cfg_lib.to_dict(config)))
    acc = float(np.clip(0.5 + 0.02 * np.log2(config.model.num_latents) + rng.normal(0, 0.02),
                        0, 1))
    steps = np.linspace(0, config.train.steps, lines + 1)[1:].astype(int)
    rows = [{"step": int(s), "train/loss": float(2 - acc * s / steps[-1]),
             "train/accuracy": float(acc * s / steps[-1])} for s in steps]
    rows += [{"step": int(steps[-1]), "eval/loss": 1 - acc, "eval/accuracy": acc,
              "train_eval/loss": 1 - acc, "train_eval/accuracy": acc}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run_dir / "summary.json").write_text(json.dumps({
        "status": "completed", "step": config.train.steps,
        "metrics": {"eval/accuracy": acc, "eval/loss": 1 - acc, "train_eval/accuracy": acc},
        "params": 1000 * config.model.num_latents, "wall_seconds": 60.0,
        "flops_forward_analytic": 1e6 * config.model.num_latents,
        "flops_per_example_analytic": 3e6 * config.model.num_latents,
        "memory_predicted_bytes": 2**20 * config.model.num_latents,
        "machine": "generated"}))


def measure(out: Path, runs: int) -> dict[str, Any]:
    """Generate the folder (untimed), then time the report on it."""
    from suite.analysis.report import write_report

    generate(out, runs)
    start = time.perf_counter()
    written = write_report(out)
    seconds = time.perf_counter() - start
    return {"run_folders": runs, "report_seconds": round(seconds, 2),
            "files_written": len(written), "goal_seconds": 30, "met": seconds < 30}
