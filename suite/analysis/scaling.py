"""Compute against input size: Perceiver O(MN + LN^2) vs Transformer O(LM^2).

For each model and input size M, the train step is compiled on abstract shapes (no data,
no weights) to read XLA's FLOPs, bytes accessed and predicted peak memory; then, where
the prediction fits this machine and the time budget, the step runs for real in a
separate process that reports its step time and peak RSS. Sizes that cannot run are
recorded with the reason, never crashed on.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

from suite import config as cfg_lib
from suite.config import Config

# CPU-sized stand-ins for the paper's models (ImageNet: 512x1024 latents, 8x6 layers).
MODELS: dict[str, dict[str, Any]] = {
    "perceiver": {
        "model.kind": "perceiver", "model.num_latents": 128, "model.latent_dim": 256,
        "model.num_blocks": 2, "model.self_attends_per_block": 3,
        "model.num_cross_attends": 2, "model.self_heads": 4, "model.fourier_bands": 16,
    },
    "transformer": {
        "model.kind": "transformer", "model.hidden_dim": 128, "model.num_layers": 4,
        "model.self_heads": 4, "model.fourier_bands": 16,
    },
}
DEFAULT_SIDES = (16, 32, 64, 96, 128, 160, 224)  # M = 256 ... 50,176 (224 x 224)


def int_list(flag: str, text: str | None) -> list[int] | None:
    """``"64,256"`` -> ``[64, 256]`` (positive integers), naming the flag on a mistake."""
    if not text:
        return None
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise cfg_lib.ConfigError(f"{flag}={text!r} must be comma-separated integers") from None
    if any(v <= 0 for v in values):
        raise cfg_lib.ConfigError(f"{flag}={text!r} must be positive")
    return values


def sides_for(sizes: list[int] | None, two_d: bool) -> list[int]:
    """The grid sides to sweep: squares of ``sizes`` on 2-D grids, ``sizes`` items in 1-D."""
    if not sizes:
        return list(DEFAULT_SIDES)
    if not two_d:
        return sizes
    sides = [math.isqrt(s) for s in sizes]
    if any(s * s != m for s, m in zip(sides, sizes, strict=True)):
        raise cfg_lib.ConfigError(f"--sizes={','.join(map(str, sizes))}: 2-D grids need square "
                                  "sizes (e.g. 1024, 50176); use --grid 1d for others")
    return sides


def scaling_config(model: str, side: int, overrides: dict[str, Any], two_d: bool = True) -> Config:
    """The config of one point: synthetic RGB inputs, a square grid (or 1-D of M items)."""
    if model not in MODELS:
        raise cfg_lib.ConfigError(f"--models: unknown model {model!r}; choose from "
                                  f"{', '.join(MODELS)}")
    dims = f"{side},{side}" if two_d else str(side)
    return cfg_lib.build("synthetic", {
        **MODELS[model], "data.index_dims": dims, "data.channels": 3, "data.num_classes": 10,
        **overrides,
    })


def available_memory_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _abstract_step(config: Config, batch: int):
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from suite.models.registry import build_model
    from suite.training.optim import optimizer, schedule
    from suite.training.steps import Steps

    def make():
        model = build_model(config, rngs=nnx.Rngs(0))
        return model, nnx.Optimizer(model, optimizer(config.train), wrt=nnx.Param)

    graphdef, state = nnx.split(nnx.eval_shape(make))
    d = config.data
    batch_shapes = {
        "inputs": jax.ShapeDtypeStruct((batch, *d.index_dims, d.channels), jnp.float32),
        "label": jax.ShapeDtypeStruct((batch,), jnp.int32),
    }
    steps = Steps(graphdef, config, schedule(config.train))
    return steps, state, batch_shapes, graphdef


def analyse(config: Config, batch: int) -> dict[str, Any]:
    """Compile the train step on abstract shapes: FLOPs, bytes, predicted memory."""
    from suite.models.flops import analytic_flops, cost_of
    from suite.models.registry import abstract_model, count_params

    steps, state, batch_shapes, _ = _abstract_step(config, batch)
    start = time.perf_counter()
    compiled = steps.train_step.lower(state, batch_shapes).compile()
    compile_seconds = time.perf_counter() - start
    cost = cost_of(compiled)
    mem = compiled.memory_analysis()
    predicted = None
    if mem is not None:
        predicted = (mem.argument_size_in_bytes + mem.output_size_in_bytes
                     + mem.temp_size_in_bytes - mem.alias_size_in_bytes)
    return {
        "params": count_params(abstract_model(config)),
        "flops_train_step_xla": cost["flops"],
        "flops_per_example_xla": cost["flops"] / batch,
        "bytes_accessed_xla": cost["bytes_accessed"],
        "flops_forward_analytic": analytic_flops(config)["total"],
        "predicted_memory_bytes": predicted,
        "compile_seconds": compile_seconds,
    }


def measure(config: Config, batch: int, steps: int) -> dict[str, Any]:
    """Run the train step for real (call in a fresh process): median step time, peak RSS."""
    import resource

    import jax
    from flax import nnx

    from suite.models.registry import build_model
    from suite.training.optim import optimizer, schedule
    from suite.training.steps import Steps

    model = build_model(config, rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(model, optimizer(config.train), wrt=nnx.Param)
    graphdef, state = nnx.split((model, opt))
    fns = Steps(graphdef, config, schedule(config.train))
    d = config.data
    rng = np.random.default_rng(0)
    batch_data = {
        "inputs": rng.normal(size=(batch, *d.index_dims, d.channels)).astype(np.float32),
        "label": rng.integers(0, d.num_classes, batch).astype(np.int32),
    }
    step = fns.train_step.lower(state, batch_data).compile()
    state, m = step(state, batch_data)  # burn-in
    jax.block_until_ready(m)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, m = step(state, batch_data)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - start)
    return {
        "step_seconds": float(np.median(times)),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "loss_finite": bool(np.isfinite(float(m["loss"]))),
    }


def _measure_in_subprocess(config: Config, batch: int, steps: int, budget_s: float
                           ) -> dict[str, Any]:
    payload = json.dumps({"config": cfg_lib.to_dict(config), "batch": batch, "steps": steps})
    try:
        proc = subprocess.run([sys.executable, "-m", "suite.analysis.scaling", payload],
                              capture_output=True, text=True, timeout=budget_s)
    except subprocess.TimeoutExpired:
        return {"status": f"measure timed out (> {budget_s:.0f}s budget)"}
    if proc.returncode != 0:
        why = "killed (out of memory?)" if proc.returncode < 0 else "failed"
        last = (proc.stderr.strip().splitlines() or [""])[-1][:160]
        return {"status": f"measure {why}: {last}"}
    return {"status": "measured", **json.loads(proc.stdout.strip().splitlines()[-1])}


def sweep(models: list[str], sides: list[int], *, batch: int = 2, do_measure: bool = True,
          budget_s: float = 120.0, steps: int = 3, max_memory_bytes: int | None = None,
          overrides: dict[str, Any] | None = None, two_d: bool = True,
          latents: list[int] | None = None,
          log=lambda msg: print(msg, file=sys.stderr, flush=True)) -> list[dict[str, Any]]:
    """Every (model, size) point: compile analysis, then a measurement where it fits.

    ``latents`` varies the Perceiver's N: one line per value, labelled ``perceiver N=...``.
    """
    limit = max_memory_bytes or int(0.7 * available_memory_bytes())
    variants: list[tuple[str, str, dict[str, Any]]] = []
    for model in models:
        if model == "perceiver" and latents:
            variants += [(f"perceiver N={n}", model, {"model.num_latents": n}) for n in latents]
        else:
            variants.append((model, model, {}))
    rows = []
    for label, model, extra in variants:
        skip_rest = None
        for side in sides:
            config = scaling_config(model, side, {**(overrides or {}), **extra}, two_d)
            m_items = math.prod(config.data.index_dims)
            row: dict[str, Any] = {"model": label, "M": m_items,
                                   "index_dims": "x".join(map(str, config.data.index_dims)),
                                   "batch": batch}
            try:
                row.update(analyse(config, batch))
            except Exception as e:  # a size XLA cannot even compile is a result, too
                row["status"] = f"compile failed: {type(e).__name__}: {str(e)[:120]}"
                rows.append(row)
                continue
            predicted = row["predicted_memory_bytes"]
            if not do_measure:
                row["status"] = "analysed"
            elif predicted is not None and predicted > limit:
                row["status"] = (f"does not fit: predicted {predicted / 2**30:.1f} GiB > "
                                 f"{limit / 2**30:.1f} GiB usable")
            elif skip_rest:
                row["status"] = skip_rest
            else:
                row.update(_measure_in_subprocess(config, batch, steps, budget_s))
                if row["status"].startswith("measure timed out"):
                    skip_rest = f"not measured: a smaller size exceeded the {budget_s:.0f}s budget"
            log(f"{label:<12} M={m_items:>7,}  {row['flops_per_example_xla'] / 1e9:9.3f} "
                f"GFLOPs/ex  mem {0 if predicted is None else predicted / 2**30:7.2f} GiB  "
                f"{row['status']}" + (f"  {row['step_seconds']:.3f}s/step"
                                      if "step_seconds" in row else ""))
            rows.append(row)
    return rows


def fit_slope(ms: np.ndarray, ys: np.ndarray, min_m: int = 4096) -> float | None:
    """Slope of log y against log M for M >= min_m (1: linear, 2: quadratic)."""
    keep = (ms >= min_m) & np.isfinite(ys) & (ys > 0)
    if keep.sum() < 2:
        return None
    return float(np.polyfit(np.log(ms[keep]), np.log(ys[keep]), 1)[0])


def crossover(frame, column: str, perceiver: str = "perceiver") -> float | None:
    """The input size where the Transformer's cost passes the Perceiver's (log-interpolated)."""
    p = frame[frame.model == perceiver].set_index("M")[column]
    t = frame[frame.model == "transformer"].set_index("M")[column]
    common = sorted(set(p.dropna().index) & set(t.dropna().index))
    prev = None
    for m in common:
        diff = math.log(t[m]) - math.log(p[m])
        if diff > 0:
            if prev is None:
                return float(m)
            m0, d0 = prev
            frac = -d0 / (diff - d0)
            return float(math.exp(math.log(m0) + frac * (math.log(m) - math.log(m0))))
        prev = (m, diff)
    return None


if __name__ == "__main__":  # measurement worker: python -m suite.analysis.scaling '<json>'
    args = json.loads(sys.argv[1])
    result = measure(cfg_lib.from_dict(args["config"]), args["batch"], args["steps"])
    print(json.dumps(result))
