"""Compute against input size: Perceiver O(MN + LN^2) vs Transformer O(LM^2).

For each model and input size M, the train step is compiled on abstract shapes (no data,
no weights) to read XLA's FLOPs, bytes accessed and predicted peak memory, beside the
analytic train FLOPs (3 x forward, the figure to trust: XLA's count misses GPU library
calls); then, where the prediction fits (90% of a device's memory on accelerators, 70%
of the host's available memory on CPUs), the step runs for real in a separate process
that reports its start-up, compile and step times and its peak memory. The time budget
bounds the timed steps only. Sizes that cannot run are recorded with the reason.
"""

from __future__ import annotations

import json
import math
import queue
import subprocess
import sys
import threading
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
    "perceiver_io": {  # the same encoder with one cross-attend and the query decoder
        "model.kind": "perceiver", "model.num_latents": 128, "model.latent_dim": 256,
        "model.num_blocks": 2, "model.self_attends_per_block": 3,
        "model.num_cross_attends": 1, "model.self_heads": 4, "model.fourier_bands": 16,
        "model.decoder": "query",
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
    from suite import extend

    kinds = [k for k in extend.names("model") if k not in MODELS]  # plugins' models too
    if model not in MODELS and model not in kinds:
        raise cfg_lib.ConfigError(f"--models: unknown model {model!r}; choose from "
                                  f"{', '.join([*MODELS, *kinds])}")
    dims = f"{side},{side}" if two_d else str(side)
    return cfg_lib.build("synthetic", {
        **MODELS.get(model, {"model.kind": model}), "data.index_dims": dims,
        "data.channels": 3, "data.num_classes": 10,
        **overrides,
    })


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
    from suite.models.flops import analytic_flops, cost_of, train_flops
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
        "flops_train_per_example_analytic": train_flops(config, 1),  # 3 x forward
        "flops_train_step_xla": cost["flops"],
        "flops_per_example_xla": cost["flops"] / batch,
        "bytes_accessed_xla": cost["bytes_accessed"],
        "flops_forward_analytic": analytic_flops(config)["total"],
        "predicted_memory_bytes": predicted,
        "compile_seconds": compile_seconds,
    }


def measure(config: Config, batch: int, steps: int, emit=print) -> None:
    """Run the train step for real (in a fresh process), emitting JSON lines as it goes:
    ``started`` (imports and model built), ``compiled``, then ``done`` with the median
    step time and peak memory (device where there is one, host RSS always)."""
    import jax
    from flax import nnx

    from suite.models.registry import build_model
    from suite.platform import devices
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
    emit(json.dumps({"event": "started"}))
    start = time.perf_counter()
    step = fns.train_step.lower(state, batch_data).compile()
    state, m = step(state, batch_data)  # burn-in (and autotuning, on GPUs)
    jax.block_until_ready(m)
    emit(json.dumps({"event": "compiled", "seconds": time.perf_counter() - start}))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, m = step(state, batch_data)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - start)
    emit(json.dumps({
        "event": "done",
        "step_seconds": float(np.median(times)),
        "peak_rss_bytes": devices.host_peak_rss_bytes(),
        "device_peak_bytes": devices.peak_device_bytes(),
        "loss_finite": bool(np.isfinite(float(m["loss"]))),
    }))


def _measure_in_subprocess(config: Config, batch: int, steps: int, budget_s: float,
                           setup_s: float = 900.0) -> dict[str, Any]:
    """Measure in a child process. ``budget_s`` bounds the timed steps only; process
    start (imports, model) and compilation are timed and reported apart, bounded by
    ``setup_s``."""
    payload = json.dumps({"config": cfg_lib.to_dict(config), "batch": batch, "steps": steps})
    proc = subprocess.Popen([sys.executable, "-m", "suite.benchmarks.scaling", payload],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout] + [lines.put(None)],
                     daemon=True).start()
    launched, row, deadline = time.perf_counter(), {}, time.perf_counter() + setup_s
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                phase = "the timed steps" if "compile_seconds_measured" in row else "setup"
                limit = budget_s if phase == "the timed steps" else setup_s
                return {**row, "status": f"measure timed out in {phase} (> {limit:.0f}s)"}
            if line is None:
                break
            event = json.loads(line) if line.startswith("{") else {}
            if event.get("event") == "started":
                row["startup_seconds"] = time.perf_counter() - launched
            elif event.get("event") == "compiled":
                row["compile_seconds_measured"] = event["seconds"]
                deadline = time.perf_counter() + budget_s  # the budget starts now
            elif event.get("event") == "done":
                row.update({k: v for k, v in event.items() if k != "event"})
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    if proc.returncode != 0 or "step_seconds" not in row:
        why = "killed (out of memory?)" if proc.returncode < 0 else "failed"
        last = (proc.stderr.read().strip().splitlines() or [""])[-1][:160]
        return {**row, "status": f"measure {why}: {last}"}
    return {**row, "status": "measured"}


def memory_limit() -> int:
    """Memory one point may use: 90% of one device's on accelerators, else 70% of the
    host's available memory."""
    from suite.platform import devices

    device = devices.device_memory_bytes()
    return int(0.9 * device) if device else int(0.7 * devices.available_host_bytes())


def sweep(models: list[str], sides: list[int], *, batch: int = 2, do_measure: bool = True,
          budget_s: float = 120.0, steps: int = 3, max_memory_bytes: int | None = None,
          overrides: dict[str, Any] | None = None, two_d: bool = True,
          latents: list[int] | None = None,
          log=lambda msg: print(msg, file=sys.stderr, flush=True)) -> list[dict[str, Any]]:
    """Every (model, size) point: compile analysis, then a measurement where it fits.

    ``latents`` varies the Perceiver's N: one line per value, labelled ``perceiver N=...``.
    After a size times out, the larger sizes of that model are not measured.
    """
    limit = max_memory_bytes or memory_limit()
    variants: list[tuple[str, str, dict[str, Any]]] = []
    for model in models:
        if model == "perceiver" and latents:
            variants += [(f"perceiver N={n}", model, {"model.num_latents": n}) for n in latents]
        else:
            variants.append((model, model, {}))
    for _, model, extra in variants:  # a bad model or override: one line, before any compile
        scaling_config(model, sides[0], {**(overrides or {}), **extra}, two_d)
    rows, total = [], len(variants) * len(sides)
    log(f"{total} points ({len(variants)} models x {len(sides)} sizes): each compiled on "
        "abstract shapes" + (", then run in a fresh process where it fits" if do_measure
                             else "") + "; a line as each starts and ends")
    for label, model, extra in variants:
        skip_rest = None
        for side in sides:
            log(f"[{len(rows) + 1}/{total}] {label} M={side ** 2 if two_d else side:,}: "
                + ("compiling, then measuring ..." if do_measure else "compiling ..."))
            config = scaling_config(model, side, {**(overrides or {}), **extra}, two_d)
            row = point(config, label, batch, measure_it=do_measure, skip=skip_rest,
                        limit=limit, budget_s=budget_s, steps=steps)
            if row["status"].startswith("measure timed out in the timed steps"):
                skip_rest = f"not measured: a smaller size exceeded the {budget_s:.0f}s budget"
            predicted = row.get("predicted_memory_bytes") or 0
            log(f"{label:<12} M={row['M']:>7,}  "
                f"{row.get('flops_train_per_example_analytic', 0) / 1e9:9.3f} GFLOPs/ex  "
                f"mem {predicted / 2**30:7.2f} GiB  {row['status']}"
                + (f"  {row['step_seconds']:.3f}s/step" if "step_seconds" in row else ""))
            rows.append(row)
    return rows


def point(config: Config, label: str, batch: int, *, measure_it: bool, skip: str | None,
          limit: int, budget_s: float, steps: int) -> dict[str, Any]:
    """One (model, size) row: analysis, then a measurement if it fits and is wanted."""
    row: dict[str, Any] = {"model": label, "M": math.prod(config.data.index_dims),
                           "index_dims": "x".join(map(str, config.data.index_dims)),
                           "batch": batch}
    try:
        row.update(analyse(config, batch))
    except Exception as e:  # a size XLA cannot even compile is a result, too
        return {**row, "status": f"compile failed: {type(e).__name__}: {str(e)[:120]}"}
    predicted = row["predicted_memory_bytes"]
    if not measure_it:
        return {**row, "status": "analysed"}
    if predicted is not None and predicted > limit:
        return {**row, "status": f"does not fit: predicted {predicted / 2**30:.1f} GiB > "
                                 f"{limit / 2**30:.1f} GiB usable"}
    if skip:
        return {**row, "status": skip}
    return {**row, **_measure_in_subprocess(config, batch, steps, budget_s)}


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


if __name__ == "__main__":  # measurement worker: python -m suite.benchmarks.scaling '<json>'
    args = json.loads(sys.argv[1])
    measure(cfg_lib.from_dict(args["config"]), args["batch"], args["steps"],
            emit=lambda line: print(line, flush=True))
