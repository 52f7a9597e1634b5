"""What each part of the accelerator check measures, in the process that runs it.

Every part is a function ``part(tiny, emit)``: it reports its figures (flat scalars) by
calling ``emit`` as soon as it has them, so a part that later fails or runs out of time
keeps what it measured, and raises :class:`PartFailed` with one line when its result is
not what it should be. ``tiny``: the same code path at CPU sizes (a few steps, a
scaled-down ImageNet at 32x32), which is no performance figure.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from suite import config as cfg_lib

Emit = Callable[..., None]
# A few steps of a preset, for the CPU path: evaluated and checkpointed once.
TINY_TRAIN = {"train.steps": "4", "train.eval_every": "4", "train.checkpoint_every": "4",
              "train.log_every": "2", "train.tensorboard": "false",
              "train.eval_batch_size": "32"}
# The ImageNet preset scaled down to compile and step in seconds on a CPU.
TINY_IMAGENET = {"data.index_dims": "32,32", "model.num_latents": "16", "model.latent_dim": "32",
                 "model.num_blocks": "2", "model.num_cross_attends": "2",
                 "model.self_attends_per_block": "1", "model.self_heads": "2",
                 "model.fourier_bands": "8"}
FULL_STEPS = {"first": 10, "largest": 5, "burn_in": 3, "batch": 16, "cap": 1024}
TINY_STEPS = {"first": 2, "largest": 2, "burn_in": 1, "batch": 2, "cap": 2}  # one compile
DEMO_SPEC = Path("ablations") / "demo.toml"
GRID_WORKERS = 2


class PartFailed(Exception):
    """A part ran but its result is wrong (a run failed, a batch does not fit): one line."""


def devices(tiny: bool, emit: Emit) -> None:
    """The ``devices`` command's facts, the platform's version and the NVIDIA driver."""
    import jax

    from suite.platform.doctor import doctor
    from suite.training.steps import smoke_test

    info = doctor(smoke_test)
    first = jax.local_devices()[0]
    memory = info["devices"][0].get("memory_bytes")
    emit(backend=info["backend"], device_kind=first.device_kind,
         device_count=len(info["devices"]), platform=first.platform,
         platform_version=str(getattr(first.client, "platform_version", "")),
         driver=nvidia_driver(), memory_bytes=memory,
         versions=", ".join(f"{k} {v}" for k, v in info["versions"].items()),
         peak_float32_TFLOP_per_s=round(info["peak_flops_per_s"] / 1e12, 3),
         smoke_compile_s=round(info["smoke_test"]["compile_seconds"], 2),
         smoke_ok=bool(info["smoke_test"]["ok"]))
    if not info["smoke_test"]["ok"]:
        raise PartFailed(f"the smoke-test step's loss is {info['smoke_test']['loss']}")


def nvidia_driver() -> str:
    """The NVIDIA kernel driver's version (``/proc/driver/nvidia/version``), or ''."""
    try:
        line = Path("/proc/driver/nvidia/version").read_text().splitlines()[0]
    except (OSError, IndexError):
        return ""
    words = line.split()
    return next((w for w in words if w[:1].isdigit() and "." in w), line.strip())


def digits(tiny: bool, emit: Emit) -> None:
    """The digits preset trained and evaluated end to end, as ``train`` does."""
    from suite.training.trainer import train_and_evaluate

    config = cfg_lib.build("digits", TINY_TRAIN if tiny else {})
    with tempfile.TemporaryDirectory() as tmp:
        s = train_and_evaluate(config, Path(tmp) / "digits", progress=False)
    emit(steps=config.train.steps, batch=config.train.batch_size,
         eval_accuracy=s["metrics"].get("eval/accuracy"),
         examples_per_s=s.get("examples_per_s"), step_ms=_ms(s.get("step_seconds")),
         compile_s=s.get("compile_seconds"), mfu=s.get("mfu"), wall_s=s.get("wall_seconds"))
    if s["status"] != "completed":
        raise PartFailed(f"the run {s['status']}: {s.get('reason', 'no reason given')}")


def demo_grid(tiny: bool, emit: Emit) -> None:
    """ablations/demo.toml with two workers on one device (two of its runs when tiny):
    did every run complete, and what share of the device's memory did each worker get."""
    from suite.files import read_json
    from suite.sweeps import placement
    from suite.sweeps import spec as spec_lib
    from suite.sweeps.runner import run_grid

    spec = spec_lib.load(demo_spec())
    runs = spec_lib.expand(spec, TINY_TRAIN if tiny else {})
    runs = runs[:GRID_WORKERS] if tiny else runs  # one round of two workers
    found = placement.probe()
    found = dataclasses.replace(found, ids=found.ids[:1])  # both workers on the first device
    slots = placement.plan(found, GRID_WORKERS)
    fractions = sorted({s.env.get("XLA_PYTHON_CLIENT_MEM_FRACTION", "") for s in slots})
    emit(runs=len(runs), workers=len(slots), slots="; ".join(s.label for s in slots),
         mem_fraction=",".join(fractions) or "none (not shared)")
    with tempfile.TemporaryDirectory() as tmp:
        outcome = run_grid(runs, Path(tmp) / spec.name, spec_name=spec.name,
                           workers=GRID_WORKERS, progress=False, stop_timeout=3.0,
                           devices=found)
        summaries = [read_json(p) for p in sorted(Path(tmp).glob(f"{spec.name}/runs/*/"
                                                                 "summary.json"))]
    limits = {s.get("device_bytes_limit") for s in summaries} - {None}
    speeds = [s["examples_per_s"] for s in summaries if s.get("examples_per_s")]
    emit(completed=len(outcome.completed),
         worker_bytes_limit=max(limits) if limits else None,
         examples_per_s_per_run=round(sum(speeds) / len(speeds), 1) if speeds else None)
    if len(outcome.completed) != len(runs):
        first = next(iter(outcome.errors.values()), "see the runs' train.log")
        raise PartFailed(f"{len(outcome.completed)} of {len(runs)} runs completed: {first}")


def demo_spec() -> Path:
    """ablations/demo.toml from the working folder, else beside the installed package."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (root / DEMO_SPEC).is_file():
            return root / DEMO_SPEC
    raise PartFailed(f"{DEMO_SPEC} not found; run the check from the repository root")


def fashion_mnist(tiny: bool, emit: Emit) -> None:
    """The Fashion-MNIST preset's train step in examples/s, on the data set if it is
    there, else on synthetic inputs of its shape (the step's speed does not depend on
    the pixels)."""
    from suite import data as data_lib
    from suite.benchmarks.bench import step_throughput, utilisation
    from suite.errors import DataError

    config = cfg_lib.build("fashion_mnist", {})
    try:
        ds, source = data_lib.load(config.data), "Fashion-MNIST IDX files"
    except DataError as e:
        d = config.data
        config = cfg_lib.build("fashion_mnist", {
            "data.task": "synthetic", "data.channels": str(d.channels),
            "data.index_dims": ",".join(map(str, d.index_dims)),
            "data.num_classes": str(d.num_classes)})
        ds = data_lib.load(config.data)
        source = f"synthetic {'x'.join(map(str, (*d.index_dims, d.channels)))} inputs ({e})"
    batch = config.train.batch_size
    speed = step_throughput(config, ds, steps=3 if tiny else 50)
    util = utilisation(config, batch, batch / speed)
    emit(data=source, batch=batch, examples_per_s=round(speed, 1), mfu=util["mfu"],
         precision=util["precision"])


def imagenet(precision: str, tiny: bool, emit: Emit) -> None:
    """The ImageNet preset's train step in ``precision`` on synthetic 224x224 inputs:
    batch 16, then the largest batch the pre-flight predicts to fit, each compiled (its
    compile seconds), timed (step time, MFU against the precision's peak), counted
    (analytic and XLA FLOPs) and its predicted memory set against the device's peak."""
    from suite.training import preflight

    sizes = TINY_STEPS if tiny else FULL_STEPS
    base = {**(TINY_IMAGENET if tiny else {}), "model.precision": precision}
    config = cfg_lib.build("imagenet", {**base, "train.batch_size": str(sizes["batch"])})
    graphdef, abstract = preflight.abstract_state(config)
    first = preflight.plan(config, graphdef, abstract,
                           preflight.batch_spec(config, sizes["batch"]), evaluate=False,
                           check=False)
    state = concrete_state(config)
    emit(precision=precision, budget_bytes=first.budget, budget_source=first.budget_source)
    if first.problem is None:
        state, figures = measure(config, first, state, sizes["first"], sizes["burn_in"])
        emit(**{f"first_{k}": v for k, v in figures.items()})
    else:
        emit(first_batch=sizes["batch"], first_predicted_bytes=first.train_memory.total)
    size, plan = largest_batch(base, graphdef, abstract, first, sizes["batch"], sizes["cap"])
    emit(largest_batch=size, largest_predicted_bytes=plan.train_memory.total)
    config = cfg_lib.build("imagenet", {**base, "train.batch_size": str(size)})
    _, figures = measure(config, plan, state, sizes["largest"], sizes["burn_in"])
    emit(**{f"largest_{k}": v for k, v in figures.items()})
    if first.problem is not None:
        raise PartFailed(f"batch {sizes['batch']} does not fit: {first.problem}")


def concrete_state(config: cfg_lib.Config) -> Any:
    """The (model, optimizer) state, allocated, as the trainer builds it."""
    from flax import nnx

    from suite.models import build_model
    from suite.training.optim import optimizer

    model = build_model(config, rngs=nnx.Rngs(params=config.seed, dropout=config.seed + 1))
    return nnx.state((model, nnx.Optimizer(model, optimizer(config.train), wrt=nnx.Param)))


def synthetic_batch(config: cfg_lib.Config, size: int) -> Any:
    """A batch of the config's shapes on the device: normal inputs, labels < classes."""
    import jax
    import numpy as np

    from suite.training import preflight

    rng = np.random.default_rng(0)
    classes = config.data.num_classes

    def fill(spec: Any) -> Any:
        if np.issubdtype(spec.dtype, np.integer):
            return rng.integers(0, classes, spec.shape, dtype=spec.dtype)
        return rng.normal(size=spec.shape).astype(spec.dtype)

    return jax.device_put(jax.tree.map(fill, preflight.batch_spec(config, size)))


def measure(config: cfg_lib.Config, plan: Any, state: Any, steps: int, burn_in: int
            ) -> tuple[Any, dict[str, Any]]:
    """Time a planned train step; its FLOPs, MFU, predicted and measured memory."""
    from suite.benchmarks.bench import time_step, utilisation
    from suite.models.flops import cost_of, train_flops
    from suite.platform.devices import peak_device_bytes

    size = config.train.batch_size
    batch = synthetic_batch(config, size)
    state, seconds = time_step(plan.train, state, batch, steps, burn_in=burn_in)
    util = utilisation(config, size, seconds)
    return state, {
        "batch": size, "step_ms": _ms(seconds), "examples_per_s": round(size / seconds, 1),
        "compile_s": round(plan.compile_seconds, 2),
        "flops_analytic": train_flops(config, size), "flops_xla": cost_of(plan.train)["flops"],
        "mfu": util["mfu"], "peak_TFLOP_per_s": round(util["peak_GFLOP_per_s"] / 1e3, 1),
        "peak_source": util["peak_source"], "predicted_bytes": plan.train_memory.total,
        "measured_peak_bytes": peak_device_bytes()}


def largest_batch(base: dict[str, str], graphdef: Any, abstract: Any, first: Any,
                  batch: int, cap: int) -> tuple[int, Any]:
    """The largest batch (a multiple of 8 from 16 on, at most ``cap``) whose compiled step
    the pre-flight predicts to fit: memory taken as the state plus a share per example
    measured at ``batch``, then checked by compiling, stepping down until it fits.
    ``base``: the overrides of the ImageNet preset being measured."""
    import jax

    from suite.training import preflight

    state_bytes = sum(math.prod(x.shape) * getattr(x.dtype, "itemsize", 4)
                      for x in jax.tree.leaves(abstract))
    per_example = max(1.0, (first.train_memory.total - state_bytes) / batch)
    size = min(cap, int((first.budget - state_bytes) // per_example))
    for _ in range(4):
        size = size - size % 8 if size >= 16 else max(1, size)
        if size == batch and first.problem is None:
            return size, first  # compiled already
        trial = cfg_lib.build("imagenet", {**base, "train.batch_size": str(size)})
        plan = preflight.plan(trial, graphdef, abstract, preflight.batch_spec(trial, size),
                              evaluate=False, check=False)
        if plan.problem is None:
            return size, plan
        if size == 1:
            break
        size = int(size * 0.85)
    raise PartFailed(f"no batch fits: {plan.problem}")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 2)


PARTS: dict[str, Callable[[bool, Emit], None]] = {
    "devices": devices, "digits": digits, "demo_grid": demo_grid,
    "imagenet_float32": partial(imagenet, "float32"),
    "imagenet_bfloat16": partial(imagenet, "bfloat16"),
    "fashion_mnist": fashion_mnist,
}
