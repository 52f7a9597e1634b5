"""What a run executes on: the machine, the JAX backend and its devices, their memory,
and the peak FLOP/s that model-FLOP utilisation (MFU) is measured against.

Peaks come from a table of published dense figures by device kind (accelerators), or
are measured in-process with a float32 matmul (CPUs, and any device the table does not
know); a measured CPU peak is cached per machine in the user cache folder.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from pathlib import Path
from typing import Any

import jax

# Published dense peaks of one device, FLOP/s, by (device-kind substring, compute dtype).
# On NVIDIA GPUs JAX's default float32 matmul runs on TF32 tensor cores, on TPUs as one
# bfloat16 pass: their float32 peaks are those.
PEAKS: dict[tuple[str, str], float] = {
    ("H200", "bfloat16"): 989e12, ("H200", "float32"): 494.7e12,
    ("H100", "bfloat16"): 989e12, ("H100", "float32"): 494.7e12,
    ("A100", "bfloat16"): 312e12, ("A100", "float32"): 156e12,
    ("L4", "bfloat16"): 121e12, ("L4", "float32"): 60e12,
    ("TPU v4", "bfloat16"): 275e12, ("TPU v4", "float32"): 275e12,
    ("TPU v5 lite", "bfloat16"): 197e12, ("TPU v5 lite", "float32"): 197e12,
    ("TPU v5p", "bfloat16"): 459e12, ("TPU v5p", "float32"): 459e12,
    ("TPU v6", "bfloat16"): 918e12, ("TPU v6", "float32"): 918e12,
}
PEAK_NOTES = {("gpu", "float32"): "TF32", ("tpu", "float32"): "one bfloat16 pass"}

def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else the platform's processor string."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                        cpu)
    except OSError:
        return cpu


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def machine_description() -> str:
    """CPU, core count, JAX backend and accelerator kind, for the record in every summary."""
    backend = jax.default_backend()
    text = f"{cpu_model()}, {cpu_count()} cores, jax {jax.__version__} on {backend}"
    if backend != "cpu":
        devices = jax.local_devices()
        text += f" ({len(devices)} x {devices[0].device_kind})"
    return text


def memory_stats(device: Any = None) -> dict[str, int] | None:
    """The device's allocator statistics (GPU/TPU), or None where there are none (CPU)."""
    device = device or jax.local_devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # some backends raise instead of returning None
        return None
    return dict(stats) if stats else None


def device_memory_bytes() -> int | None:
    """What one device can hold (its allocator's limit), or None on CPU."""
    stats = memory_stats()
    return int(stats["bytes_limit"]) if stats and "bytes_limit" in stats else None


def peak_device_bytes() -> int | None:
    """The most one device has held so far in this process, or None on CPU."""
    stats = memory_stats()
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def host_peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def available_host_bytes() -> int:
    """Memory the host can still give (``MemAvailable``), else its physical size."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def peak_flops(dtype: str = "float32", fresh: bool = False,
               devices: list[Any] | None = None) -> tuple[float, str]:
    """Peak FLOP/s of the devices a run computes on (default: one local device) at its
    compute precision ``dtype``, and where the figure comes from.

    Accelerators: the published dense peak of one device times the device count. CPU
    devices (``--xla_force_host_platform_device_count`` makes several) share the host's
    cores, so there the peak is the host's measured one, once per process, whatever the
    device count.
    """
    devices = list(devices) if devices else [jax.local_devices()[0]]
    kind, platform = devices[0].device_kind, devices[0].platform
    if platform == "cpu":
        hosts = len({getattr(d, "process_index", 0) for d in devices})
        per_host = measured_peak(dtype, fresh=fresh)
        shared = f", shared by its {len(devices)} CPU devices" if len(devices) > hosts else ""
        return per_host * hosts, (f"measured: {dtype} matmul on this host ({cpu_model()}, "
                                  f"{cpu_count()} cores){shared}"
                                  + (f", x {hosts} processes" if hosts > 1 else ""))
    one = published_peak(kind, dtype)
    if one is None:
        one, what = measured_peak(dtype, fresh=fresh), f"measured: {dtype} matmul on {kind}"
    else:
        note = PEAK_NOTES.get((platform, dtype))
        what = f"published dense {dtype}{f' ({note})' if note else ''} peak of {kind}"
    n = len(devices)
    return one * n, (what if n == 1 else f"{n} x {what} ({one / 1e12:.1f} TFLOP/s each)")


def published_peak(device_kind: str, dtype: str) -> float | None:
    """One device's published dense peak for ``dtype`` compute, or None if unknown."""
    for (kind, peak_dtype), flops in PEAKS.items():
        if kind.lower() in device_kind.lower() and peak_dtype == dtype:
            return flops
    return None


def measured_peak(dtype: str = "float32", seconds: float = 0.5, fresh: bool = False) -> float:
    """A jitted square matmul's best FLOP/s on the default device.

    Cached per machine in the user cache folder; a ``fresh`` measurement (``perceiver-suite
    devices``) replaces the cached figure only if it is higher, since a busy machine can
    only measure low.
    """
    key = f"{machine_description()} {dtype}"
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / \
        "perceiver-suite" / "peak_flops.json"
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known and not fresh:
        return float(known[key])
    n = 1024 if jax.default_backend() == "cpu" else 8192
    x = jax.numpy.ones((n, n), dtype=dtype)
    # float32 accumulation: the form the mixed-precision model's matmuls take
    f = jax.jit(lambda a: jax.lax.dot(a, a, preferred_element_type=jax.numpy.float32))
    f(x).block_until_ready()
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        f(x).block_until_ready()
        best = min(best, time.perf_counter() - start)
    peak = max(2.0 * n**3 / best, float(known.get(key, 0.0)))
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({**known, key: peak}, indent=1))
    except OSError:
        pass
    return peak


CACHE_ENV = "PERCEIVER_SUITE_COMPILE_CACHE"


def compile_cache_dir() -> Path | None:
    """Where compiled steps are cached across processes (``$PERCEIVER_SUITE_COMPILE_CACHE``,
    else the user cache folder; ``off`` disables it)."""
    setting = os.environ.get(CACHE_ENV, "").strip()
    if setting.lower() in ("off", "0", "false", "none"):
        return None
    if setting:
        return Path(setting).expanduser().absolute()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "perceiver-suite" / "xla"


def compile_cache_plan() -> tuple[Path | None, str]:
    """The persistent compilation cache a run in this process would use, and why, without
    turning it on: the one decision :func:`enable_compile_cache` acts on and ``devices``
    reports, so the report cannot disagree with training."""
    if not jax.config.jax_enable_compilation_cache:
        return None, "off (jax_enable_compilation_cache is false)"
    if jax.config.jax_compilation_cache_dir:
        return (Path(jax.config.jax_compilation_cache_dir),
                "set by JAX (JAX_COMPILATION_CACHE_DIR or jax.config)")
    setting = os.environ.get(CACHE_ENV, "").strip()
    folder = compile_cache_dir()
    if folder is None:
        return None, f"off (${CACHE_ENV}={setting})"
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        return None, f"off ({folder} cannot be created or written)"
    where = f"${CACHE_ENV}" if setting else f"default; ${CACHE_ENV} sets it, 'off' disables it"
    return folder, f"{where}; steps that compile in 0.5s or more"


def enable_compile_cache() -> Path | None:
    """Turn on JAX's persistent compilation cache: a grid's second seed (same shapes, same
    program) loads its steps instead of compiling them. Leaves a cache the user set alone."""
    folder, _ = compile_cache_plan()
    if folder is None or jax.config.jax_compilation_cache_dir:
        return folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return folder
