"""What a finished run cost and what it ran on: the cost half of its ``summary.json``.

FLOPs two ways (analytic, 3 x the paper's forward count, the figure to trust; and XLA's
count of the compiled step, every loop at its trip count), the FLOP/s achieved and the
MFU against the peak of the devices the run computed on at its compute precision,
compile times, XLA's memory plan, the measured peaks, the machine and the code.
"""

from __future__ import annotations

from typing import Any

import jax

from suite import provenance
from suite.config import Config
from suite.models.flops import analytic_flops, flops_source, train_flops
from suite.platform import devices


def run_figures(config: Config, step_flops_xla: float, step_seconds: float | None, plan: Any,
                place: Any) -> dict[str, Any]:
    """The summary's cost, memory, machine and provenance fields.

    ``step_flops_xla``: XLA's FLOPs of one train step on all devices; ``step_seconds``:
    the median logged step time (None if no step was timed); ``plan``: the run's
    ``preflight.Plan``; ``place``: its ``sharding.Placement``.
    """
    batch = config.train.batch_size
    source = flops_source(config)  # None: analytic; else XLA's count of this step stands in
    analytic = train_flops(config, batch) if source is None else step_flops_xla
    achieved = analytic / step_seconds if step_seconds else None
    precision = config.model.precision  # the matmuls' compute dtype
    mesh = place.mesh
    peak, peak_source = devices.peak_flops(
        precision, devices=None if mesh is None else list(mesh.devices.flat))
    return {
        "flops_per_step_analytic": analytic,  # 3 x forward x batch: the figure to trust
        "flops_per_step_xla": step_flops_xla,  # XLA's count (low on GPUs: custom calls)
        "flops_per_example_analytic": analytic / batch,
        "flops_per_example_xla": step_flops_xla / batch,
        "flops_forward_analytic": analytic_flops(config)["total"] if source is None
        else analytic / (3.0 * batch),
        "flops_count": "analytic" if source is None else f"XLA's count: {source}",
        "achieved_flops_per_s": achieved,
        "achieved_flops_per_s_xla": step_flops_xla / step_seconds if step_seconds else None,
        "peak_flops_per_s": peak,  # of every device the run computes on
        "peak_flops_source": peak_source,
        "peak_precision": precision,
        "mfu": achieved / peak if achieved else None,
        "step_seconds": step_seconds,
        "examples_per_s": batch / step_seconds if step_seconds else None,
        "compile_seconds": plan.compile_seconds,  # XLA's compile of the train step
        "trace_seconds": plan.trace_seconds,  # tracing and lowering it
        "memory_predicted_bytes": plan.train_memory.total,  # XLA, train step
        "xla_temp_bytes": plan.train_memory.temporaries,
        "eval_batch_size": plan.eval_batch_size,
        "eval_memory_predicted_bytes": plan.eval_memory.total,
        "memory_budget_bytes": plan.budget,
        "device_peak_bytes": devices.peak_device_bytes(),  # None on CPU
        "device_bytes_limit": devices.device_memory_bytes(),
        "peak_rss_bytes": devices.host_peak_rss_bytes(),  # the host process
        "device": jax.devices()[0].device_kind,
        "machine": devices.machine_description(),
        **place.describe(),
        "per_device_batch": batch // place.devices,
        "provenance": provenance.record(),
    }
