"""``perceiver-suite devices``: what JAX sees here, and one train step to prove it works.

Reports the backend, every local device and its memory, the versions of jax, jaxlib and
any accelerator plugin, whether the persistent compilation cache is on, the peak FLOP/s
that MFU is measured against, and the time and loss of one train step of a tiny
Perceiver on the default device. If ``JAX_PLATFORMS`` asks for an accelerator that is
not there, a :class:`SuiteError` says so in one line.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Callable
from typing import Any

from suite.errors import SuiteError


def _versions() -> dict[str, str]:
    found = {}
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name in ("jax", "jaxlib", "libtpu", "flax") or name.startswith(("jax-cuda", "jax_cuda",
                                                                           "jax-rocm")):
            found[name] = dist.version
    return dict(sorted(found.items()))


def backend_or_error() -> str:
    """The default backend; a one-line error if the requested platform is missing."""
    import jax

    wanted = os.environ.get("JAX_PLATFORMS", "")
    try:
        return jax.default_backend()
    except Exception as e:  # RuntimeError, or an assertion deep in backend start-up
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise SuiteError(f"JAX_PLATFORMS={wanted!r} asks for a backend JAX cannot start here "
                         f"({first}); install the matching extra (pip install -e '.[cuda]' or "
                         f"'.[tpu]') or unset JAX_PLATFORMS") from None


def doctor(smoke_test: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The facts above, and ``smoke_test()``'s one train step (the trainer's own step,
    passed in: this module sits below training)."""
    backend = backend_or_error()
    import jax

    from suite.platform import devices as dev

    local = []
    for d in jax.local_devices():
        stats = dev.memory_stats(d) or {}
        local.append({"id": d.id, "kind": d.device_kind, "platform": d.platform,
                      "memory_bytes": stats.get("bytes_limit")})
    peak, source = dev.peak_flops("float32", fresh=True)
    cache, cache_source = dev.compile_cache_plan()  # what training will use, not what is on now
    return {
        "backend": backend,
        "machine": dev.machine_description(),
        "devices": local,
        "process_count": jax.process_count(),
        "versions": _versions(),
        "compilation_cache": str(cache) if cache else None,
        "compilation_cache_source": cache_source,
        "peak_flops_per_s": peak, "peak_flops_source": source,
        "smoke_test": smoke_test(),
    }


def render(info: dict[str, Any]) -> str:
    lines = [f"backend       {info['backend']}  ({info['machine']})"]
    for d in info["devices"]:
        mem = f"{d['memory_bytes'] / 2**30:.1f} GiB" if d["memory_bytes"] else "host memory"
        lines.append(f"device {d['id']:<6} {d['kind']} ({d['platform']}), {mem}")
    lines.append("versions      " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    cache, why = info["compilation_cache"], info["compilation_cache_source"]
    lines.append(f"compile cache {f'{cache} ({why})' if cache else why}")
    lines.append(f"peak          {info['peak_flops_per_s'] / 1e12:.3f} TFLOP/s float32 "
                 f"({info['peak_flops_source']})")
    s = info["smoke_test"]
    lines.append(f"smoke test    one train step of a tiny Perceiver: compiled in "
                 f"{s['compile_seconds']:.1f}s, ran in {s['step_seconds'] * 1e3:.1f} ms, loss "
                 f"{s['loss']:.4f} ({'ok' if s['ok'] else 'NOT FINITE'})")
    return "\n".join(lines)
