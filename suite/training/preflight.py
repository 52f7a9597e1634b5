"""Before a run trains: compile its steps on abstract shapes, predict their memory, and
compare it with what there is, so a run that cannot fit stops before its first step.

Nothing is allocated here: the model and optimizer are traced with ``nnx.eval_shape``
and the steps lowered on ``ShapeDtypeStruct``s, so a 326M-parameter config is planned on
a laptop. XLA's prediction of a step is arguments + outputs + temporaries - the bytes
the donated state shares with the outputs. The train step runs at ``train.batch_size``;
the eval step at ``train.eval_batch_size`` or, if that is unset, at the largest power of
two up to 256 that fits. What there is: the device's memory on accelerators, 60% of the
host's available memory on CPUs, or ``$PERCEIVER_SUITE_MEMORY_BYTES`` to plan for
another machine.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from suite.config import Config
from suite.config.layout import layouts
from suite.errors import ConfigError, SuiteError
from suite.models import build_model
from suite.platform import devices, sharding
from suite.tasks import TASKS
from suite.training.optim import optimizer, schedule
from suite.training.steps import Steps

BUDGET_ENV = "PERCEIVER_SUITE_MEMORY_BYTES"
MAX_EVAL_BATCH = 256
HOST_SHARE = 0.6  # of the host's available memory: the data, Python, XLA's own use need some
KNOBS = ("train.batch_size", "train.eval_batch_size", "model.cross_attention_chunk",
         "model.remat", "model.precision")


class DoesNotFit(SuiteError):
    """A step's predicted memory exceeds what the device (or host) has."""


@dataclasses.dataclass(frozen=True)
class Memory:
    """XLA's memory analysis of one compiled step, in bytes."""

    arguments: int
    outputs: int
    temporaries: int
    aliased: int  # donated arguments reused for outputs

    @property
    def total(self) -> int:
        return self.arguments + self.outputs + self.temporaries - self.aliased

    @classmethod
    def of(cls, compiled: Any) -> Memory:
        m = compiled.memory_analysis()
        if m is None:
            return cls(0, 0, 0, 0)
        return cls(int(m.argument_size_in_bytes), int(m.output_size_in_bytes),
                   int(m.temp_size_in_bytes), int(m.alias_size_in_bytes))


@dataclasses.dataclass
class Plan:
    """The compiled steps of a run and what they need."""

    steps: Steps
    train: Any  # the compiled train step
    eval: Any | None  # the compiled eval step
    train_memory: Memory
    eval_memory: Memory | None
    eval_batch_size: int
    compile_seconds: float  # XLA's compile of the train step (a cache hit: loading it)
    trace_seconds: float  # tracing and lowering it (Python; never cached)
    budget: int
    budget_source: str
    problem: str | None = None  # why it does not fit (when not checked)
    mesh: Any = None  # the device mesh (train.mesh), or None
    state_sharding: Any = None  # a sharding per state leaf on that mesh


def abstract_state(config: Config) -> tuple[nnx.GraphDef, Any]:
    """The (model, optimizer) graph and its state as shapes only."""
    def make():
        model = build_model(config, rngs=nnx.Rngs(params=config.seed, dropout=config.seed + 1))
        return model, nnx.Optimizer(model, optimizer(config.train), wrt=nnx.Param)

    return nnx.split(nnx.eval_shape(make))


def batch_spec(config: Config, batch: int, *, label: bool = True,
               training: bool = True) -> dict[str, Any]:
    """The abstract batch the data pipeline yields for this config."""
    d = config.data
    m = math.prod(d.index_dims)
    permuted = d.permutation == "fixed"
    shape = (batch, m, d.channels) if permuted else (batch, *d.index_dims, d.channels)
    spec: dict[str, Any] = {"inputs": jax.ShapeDtypeStruct(shape, jnp.float32)}
    if d.modalities:  # one array per modality, and in training which ones each example keeps
        spec["inputs"] = {lay.name: jax.ShapeDtypeStruct((batch, *lay.dims, lay.channels),
                                                         jnp.float32) for lay in layouts(config)}
        if training and d.modality_dropout:
            spec["keep"] = {name: jax.ShapeDtypeStruct((batch,), jnp.float32)
                            for name in sorted(d.modalities)}
    if d.pos_dim is not None:
        spec["positions"] = jax.ShapeDtypeStruct((batch, m, d.pos_dim), jnp.float32)
    elif permuted:
        spec["index"] = jax.ShapeDtypeStruct((batch, m), jnp.int32)
    if label and TASKS[d.task].multi_label:  # multi-hot vectors
        spec["label"] = jax.ShapeDtypeStruct((batch, d.num_classes), jnp.float32)
    elif label:
        spec["label"] = jax.ShapeDtypeStruct((batch,), jnp.int32)
    if label and training and (d.mixup or d.cutmix):  # the partner's label, the share
        spec["mix_label"] = spec["label"]
        spec["mix_ratio"] = jax.ShapeDtypeStruct((batch,), jnp.float32)
    return spec


def like(batch: dict[str, Any]) -> dict[str, Any]:
    """Abstract shapes of a concrete batch (nested for several modalities)."""
    return jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), batch)


def budget() -> tuple[int, str]:
    """Bytes one run may use, and what the figure is."""
    if os.environ.get(BUDGET_ENV):
        return int(float(os.environ[BUDGET_ENV])), f"${BUDGET_ENV}"
    device = devices.device_memory_bytes()
    if device:  # the allocator's limit: already a share of the device
        return device, f"{jax.local_devices()[0].device_kind} memory"
    return int(HOST_SHARE * devices.available_host_bytes()), \
        f"{HOST_SHARE:.0%} of the available host memory"


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def compile_train(steps: Steps, state: Any, batch: dict[str, Any]) -> tuple[Any, float, float]:
    """The compiled train step, the seconds to trace and lower it, and to compile it."""
    start = time.perf_counter()
    lowered = steps.train_step.lower(state, batch)
    traced = time.perf_counter()
    compiled = lowered.compile()
    return compiled, traced - start, time.perf_counter() - traced


def compile_eval(steps: Steps, state: Any, config: Config, size: int) -> Any:
    weight = jax.ShapeDtypeStruct((size,), jnp.float32)
    return steps.eval_step.lower(state, batch_spec(config, size, training=False),
                                 weight).compile()


def plan(config: Config, graphdef: nnx.GraphDef, state: Any, batch: dict[str, Any],
         *, evaluate: bool = True, check: bool = True) -> Plan:
    """Compile both steps on abstract shapes (on ``train.mesh`` if one is set); raise
    :class:`DoesNotFit` if either cannot fit (unless ``check`` is off). Memory is per
    device."""
    mesh = sharding.make_mesh(config.train.mesh)
    shardings = state_sharding = None
    if mesh is not None:
        sharding.check_batch(config.train.batch_size, mesh)
        state_sharding = sharding.state_shardings(mesh, state)
        shardings = (state_sharding, sharding.batch_sharding(mesh), sharding.replicated(mesh))
    steps = Steps(graphdef, config, schedule(config.train), shardings)
    have, source = budget()
    train, trace_seconds, seconds = compile_train(steps, state, like(batch))
    need = Memory.of(train)
    result = Plan(steps, train, None, need, None, 0, seconds, trace_seconds, have, source,
                  mesh=mesh, state_sharding=state_sharding)
    try:
        _check_train(config, need, have, source)
        if evaluate:
            result.eval, result.eval_memory, result.eval_batch_size = _eval_plan(
                steps, state, config, have, source)
    except DoesNotFit as e:
        if check:
            raise
        result.problem = str(e)
    return result


def _multiple(size: int, devices: int) -> int:
    """``size`` rounded down to a multiple of the mesh's devices (at least one each)."""
    return max(devices, size - size % devices)


def _check_train(config: Config, need: Memory, have: int, source: str) -> None:
    if need.total > have:
        raise DoesNotFit(
            f"the train step needs {_gib(need.total)} at train.batch_size="
            f"{config.train.batch_size} (arguments {_gib(need.arguments)}, temporaries "
            f"{_gib(need.temporaries)}), {source} is {_gib(have)}; lower train.batch_size, "
            "or set model.cross_attention_chunk, model.remat=true or model.precision=bfloat16")


def _eval_plan(steps: Steps, state: Any, config: Config, have: int,
               source: str) -> tuple[Any, Memory, int]:
    """The eval step at the configured size, or the largest power of two <= 256 that fits."""
    size = config.train.eval_batch_size
    devices = sharding.make_mesh(config.train.mesh).devices.size if config.train.mesh else 1
    if size is not None:
        if size % devices:
            raise ConfigError(f"train.eval_batch_size={size} must be a multiple of the "
                              f"{devices} devices of train.mesh={config.train.mesh!r}")
        compiled = compile_eval(steps, state, config, size)
        if Memory.of(compiled).total > have:
            raise DoesNotFit(
                f"the eval step needs {_gib(Memory.of(compiled).total)} at "
                f"train.eval_batch_size={size}, {source} is {_gib(have)}; lower "
                "train.eval_batch_size or leave it unset to choose one that fits")
        return compiled, Memory.of(compiled), size
    size = _multiple(max(MAX_EVAL_BATCH, devices), devices)  # every device an equal share
    compiled = compile_eval(steps, state, config, size)
    need = Memory.of(compiled)
    if need.total > have:  # the state, plus memory per example: jump to the size that fits
        fixed = sum(math.prod(x.shape) * getattr(x.dtype, "itemsize", 4)
                    for x in jax.tree.leaves(state))
        per_example = max(1.0, (need.total - fixed) / size)
        guess = int((have - fixed) // per_example)
        size = _multiple(min(size // 2, 2 ** int(math.log2(guess))) if guess >= 1 else 1,
                         devices)
        while True:
            compiled = compile_eval(steps, state, config, size)
            need = Memory.of(compiled)
            if need.total <= have or size <= devices:
                break
            size = _multiple(size // 2, devices)
    if need.total > have:
        raise DoesNotFit(f"the eval step needs {_gib(need.total)} even at batch 1, {source} is "
                         f"{_gib(have)}; set model.cross_attention_chunk or "
                         "model.precision=bfloat16")
    return compiled, need, size
