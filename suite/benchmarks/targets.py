"""The fast-step targets, measured: memory, compile time, the compilation cache, bf16.

- memory: XLA's temporaries of the ImageNet train step at batch 16, plain against
  chunked cross-attention + rematerialisation (abstract shapes: nothing allocated);
- compile: the ImageNet train step with weight-shared repeats scanned against unrolled;
- cache: a grid's second seed against its first, each a fresh ``train`` process;
- bfloat16: the digits preset trained in bf16 and in float32, eval accuracy.

The compilation cache is off for the first two (a cached compile is not a compile).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from suite import config as cfg_lib
from suite.errors import SuiteError

TARGETS = ("memory", "compile", "cache", "bfloat16")  # what --targets names, in table order
IMAGENET_16 = {"train.batch_size": 16}
LEAN = {"model.cross_attention_chunk": 2048, "model.remat": True}


def _train_step(overrides: dict[str, Any]) -> dict[str, Any]:
    from suite.analysis.describe import train_step

    return train_step(cfg_lib.build("imagenet", overrides))


def memory() -> dict[str, Any]:
    plain, lean = _train_step(IMAGENET_16), _train_step({**IMAGENET_16, **LEAN})
    return {"target": "temporaries, chunk 2048 + remat vs plain (ImageNet, batch 16)",
            "plain": plain["temporaries_bytes"], "fast": lean["temporaries_bytes"],
            "ratio": lean["temporaries_bytes"] / plain["temporaries_bytes"], "goal": 0.25}


def compile_time() -> dict[str, Any]:
    unrolled = _train_step({"model.scan_repeats": False, "train.batch_size": 2})
    scanned = _train_step({"model.scan_repeats": True, "train.batch_size": 2})
    return {"target": "XLA compile seconds, scanned vs unrolled repeats (ImageNet train step)",
            "plain": unrolled["compile_seconds"], "fast": scanned["compile_seconds"],
            "ratio": scanned["compile_seconds"] / unrolled["compile_seconds"], "goal": 0.30}


def _train(workdir: Path, overrides: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "suite", "train", "--preset", "digits", "--workdir",
           str(workdir), *[f"{k}={v}" for k, v in overrides.items()]]
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return json.loads((workdir / "summary.json").read_text())


def cache() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PERCEIVER_SUITE_COMPILE_CACHE": str(Path(tmp) / "cache")}
        quick = {"train.steps": 5, "train.log_every": 5, "train.tensorboard": "false"}
        first = _train(Path(tmp) / "seed0", {**quick, "seed": 0}, env)
        second = _train(Path(tmp) / "seed1", {**quick, "seed": 1}, env)
    return {"target": "XLA compile seconds of the train step, second seed vs first (digits)",
            "plain": first["compile_seconds"], "fast": second["compile_seconds"],
            "ratio": second["compile_seconds"] / first["compile_seconds"], "goal": 0.20}


def bfloat16() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PERCEIVER_SUITE_COMPILE_CACHE": "off"}
        f32 = _train(Path(tmp) / "f32", {"train.tensorboard": "false"}, env)
        bf16 = _train(Path(tmp) / "bf16", {"model.precision": "bfloat16",
                                          "train.tensorboard": "false"}, env)
    return {"target": "digits preset eval accuracy, bfloat16 (float32 as 'plain')",
            "plain": f32["metrics"]["eval/accuracy"], "fast": bf16["metrics"]["eval/accuracy"],
            "ratio": bf16["metrics"]["eval/accuracy"], "goal": 0.90}


def measure(which: list[str], log) -> list[dict[str, Any]]:
    jobs = {"memory": memory, "compile": compile_time, "cache": cache, "bfloat16": bfloat16}
    unknown = [name for name in which if name not in jobs]
    if unknown:
        raise SuiteError(f"--targets: unknown target {unknown[0]!r}; choose from "
                         f"{', '.join(TARGETS)}")
    os.environ["PERCEIVER_SUITE_COMPILE_CACHE"] = "off"  # for the in-process compiles
    rows = []
    for name in which:
        log(f"measuring {name} ...")
        row = {"name": name, **jobs[name]()}
        row["met"] = row["ratio"] >= row["goal"] if name == "bfloat16" else \
            row["ratio"] <= row["goal"]
        log(f"  {row['target']}: {row['ratio']:.3f} (goal {row['goal']})")
        rows.append(row)
    return rows
