"""``perceiver-suite bench --accelerator``: the check a GPU user runs. One command, at most
8 minutes on one GPU, writing ``OUT/accelerator.md`` and ``OUT/accelerator.csv`` with the
device named (JAX's device kind and count, the platform and driver, the host CPU).

Each part (``accelerator_parts.PARTS``) runs in a process of its own with a time limit
of its own: a hang, a crash or a wrong result there becomes a row with its reason, never
the end of the check, and a part that had the GPU hands it back whole to the next. This
process never starts JAX (it would take most of the device's memory for a process that
trains nothing). Parts report figures as they go, so one that fails or runs out of time
keeps what it had measured.

On an accelerator the limits add up to 450 s, and a part over its limit gets 4 s to stop
before it is killed: every part at its limit makes 7 min 54 s. On a CPU (or with
``tiny``) the parts run at tiny sizes: the code path, not a performance figure, and the
table says so.

For tests: ``$PERCEIVER_SUITE_ACCELERATOR_INJECT=PART=fail|hang|crash[,PART=...]`` makes
a part raise at its start, sleep past its limit, or exit without a result.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suite.benchmarks.accelerator_parts import PARTS, PartFailed
from suite.errors import SuiteError
from suite.files import read_json, write_json_atomic

# Seconds per part on an accelerator: the sum, plus GRACE_S per part, stays under 8 min.
LIMITS = {"devices": 60, "digits": 50, "demo_grid": 85, "imagenet_float32": 110,
          "imagenet_bfloat16": 110, "fashion_mnist": 35}
TINY_LIMIT = 300  # per part at tiny sizes: a loaded CPU compiles slowly
GRACE_S = 4.0  # from SIGTERM (checkpoint and exit) to SIGKILL
INJECT_ENV = "PERCEIVER_SUITE_ACCELERATOR_INJECT"
LOGS = "accelerator_logs"  # in OUT: what the parts that did not pass printed


@dataclass(frozen=True)
class Row:
    """One part's outcome: ``status`` is ok, failed or timed out; ``reason`` says why."""

    part: str
    status: str
    reason: str
    seconds: float
    limit: float
    figures: dict[str, Any] = field(default_factory=dict)


def parse_parts(text: str) -> list[str]:
    """``"devices,digits"`` -> the parts in the check's order; unknown names refused."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in PARTS]
    if unknown or not names:
        raise SuiteError(f"--accelerator {text!r}: unknown part(s) {', '.join(unknown) or '-'}; "
                         f"choose from {', '.join(PARTS)}")
    return [n for n in PARTS if n in names]


def parse_limits(items: list[str] | None) -> dict[str, float]:
    """``["imagenet_float32=300"]`` -> ``{"imagenet_float32": 300.0}``."""
    limits = {}
    for item in items or []:
        name, _, value = item.partition("=")
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if name not in PARTS or seconds <= 0:
            raise SuiteError(f"--part-timeout {item!r}: expected PART=SECONDS (SECONDS > 0) "
                             f"with PART one of {', '.join(PARTS)}")
        limits[name] = seconds
    return limits


def check(parts: list[str], out: Path, *, tiny: bool, limits: dict[str, float],
          command: str, log: Callable[[str], None]) -> tuple[str, bool]:
    """Run ``parts`` (``devices`` first, whose facts decide the sizes), write the table;
    its Markdown and whether every part is ok."""
    from suite.platform.devices import cpu_count, cpu_model

    start, rows = time.monotonic(), []
    cpu = tiny or os.environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu"
    if "devices" in parts:
        limit = limits.get("devices", TINY_LIMIT if cpu else LIMITS["devices"])
        rows.append(run_part("devices", tiny=tiny, limit=limit, logs=out / LOGS, log=log))
    device = rows[0].figures if rows and rows[0].figures.get("backend") else probe()
    tiny = tiny or device.get("backend") not in ("gpu", "tpu")
    for name in parts:
        if name != "devices":
            limit = limits.get(name, TINY_LIMIT if tiny else LIMITS[name])
            rows.append(run_part(name, tiny=tiny, limit=limit, logs=out / LOGS, log=log))
    host = f"{cpu_model()}, {cpu_count()} cores"
    text = write(rows, out, device=device, host=host, tiny=tiny, command=command,
                 wall=time.monotonic() - start)
    return text, all(r.status == "ok" for r in rows)


def probe() -> dict[str, Any]:
    """The backend and devices from a short-lived process, when ``devices`` did not say."""
    from suite.sweeps import placement

    try:
        found = placement.probe()
    except SuiteError:
        return {"backend": "unknown"}
    return {"backend": found.backend, "device_kind": found.kind,
            "device_count": max(1, len(found.ids)), "memory_bytes": found.memory_bytes}


def run_part(name: str, *, tiny: bool, limit: float, logs: Path,
             log: Callable[[str], None]) -> Row:
    """``name`` in its own process, stopped after ``limit`` seconds; its row. What it
    printed is kept as ``logs/<name>.log`` if it did not pass (and removed if it did)."""
    log(f"accelerator check: {name} (limit {limit:g} s) ...")
    with tempfile.TemporaryDirectory() as tmp:
        result, messages = Path(tmp) / "result.json", Path(tmp) / "part.log"
        cmd = [sys.executable, "-m", "suite.benchmarks.accelerator", name, "--result",
               str(result), *(["--tiny"] if tiny else [])]
        start = time.monotonic()
        with open(messages, "wb") as sink:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
                                    start_new_session=True,  # its workers too, on a timeout
                                    env={"TF_CPP_MIN_LOG_LEVEL": "2", **os.environ})
            try:
                code: int | None = proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                code = None
                stop(proc)
        seconds = time.monotonic() - start
        got = _read(result)
        if code is None:
            status, reason = "timed out", f"after {limit:g} s"
        elif code == 0 and "error" not in got:
            status, reason = "ok", ""
        else:
            status = "failed"
            reason = got.get("error") or f"exit status {code}: {last_line(messages)}"
        (logs / f"{name}.log").unlink(missing_ok=True)  # an earlier check's
        if status != "ok":
            logs.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(messages, logs / f"{name}.log")
    row = Row(name, status, reason, round(seconds, 1), limit, got.get("figures", {}))
    log(f"accelerator check: {name}: {status}{f' ({reason})' if reason else ''} "
        f"in {seconds:.1f} s")
    return row


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the part's process group (trainings checkpoint and exit), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _read(path: Path) -> dict[str, Any]:
    try:
        return read_json(path)
    except (OSError, ValueError):
        return {}


def last_line(path: Path) -> str:
    """The last non-empty line a part printed (its error, usually), shortened."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines()]
    except OSError:
        return "no output"
    line = next((ln for ln in reversed(lines) if ln), "no output")
    return line if len(line) <= 300 else line[:300] + "..."


def one_line(e: BaseException) -> str:
    """An exception as one line: the message of ours, else its type and first line."""
    first = (str(e).strip().splitlines() or [""])[0]
    first = first if len(first) <= 300 else first[:300] + "..."
    return first if isinstance(e, PartFailed | SuiteError) else f"{type(e).__name__}: {first}"


def inject(part: str) -> None:
    """Make ``part`` fail, hang or crash if ``$PERCEIVER_SUITE_ACCELERATOR_INJECT`` says so."""
    wanted = dict(item.strip().partition("=")[::2]
                  for item in os.environ.get(INJECT_ENV, "").split(",") if "=" in item)
    what = wanted.get(part, "").strip()
    if what == "fail":
        raise PartFailed(f"injected failure (${INJECT_ENV})")
    if what == "hang":
        time.sleep(10**6)
    if what == "crash":
        print(f"injected crash (${INJECT_ENV})", file=sys.stderr, flush=True)
        os._exit(3)


# --------------------------------------------------------------------------- the table

GOALS = {"step_ms": 110.0, "mfu": 0.40, "batch": 64}  # the bfloat16 ImageNet step, an H100
NOTES = [
    "- imagenet_*: the preset's train step on synthetic 224x224 inputs (tiny: 32x32 and a "
    "scaled-down model), at batch 16 (tiny: 2) and at the largest batch the pre-flight "
    "predicts to fit the device; memory: that prediction against the allocator's peak.",
    "- FLOPs per step: analytic (3 x forward) and XLA's count of the compiled step (on GPUs "
    "it misses cuBLAS/cuDNN calls); MFU: analytic FLOP/s over the peak of the precision.",
    "- demo_grid: ablations/demo.toml with --workers 2 on one device "
    "(XLA_PYTHON_CLIENT_MEM_FRACTION: the share each worker is given when they share a GPU).",
]


def write(rows: list[Row], out: Path, *, device: dict[str, Any], host: str, tiny: bool,
          command: str, wall: float) -> str:
    """``OUT/accelerator.md`` (the device, the host, a row per part) and ``.csv``."""
    import pandas as pd

    from suite.files import write_text_atomic

    kind = str(device.get("device_kind", ""))
    lines = ["# Accelerator check", ""]
    if tiny:
        backend = str(device.get("backend", "unknown"))
        lines += [f"**{'CPU' if backend == 'cpu' else backend.upper()}, tiny sizes: not a "
                  "performance figure.**", ""]
    lines += [f"- device: {device_line(device)}", f"- host: {host}",
              *([f"- versions: {device['versions']}"] if device.get("versions") else []),
              f"- command: `{command}`",
              f"- wall: {wall:.0f} s (the parts' limits: {sum(r.limit for r in rows):g} s)", ""]
    marks = {r.part: goals(r.figures, kind) for r in rows
             if r.part == "imagenet_bfloat16" and not tiny}
    table = pd.DataFrame({
        "part": [r.part for r in rows], "status": [status_text(r) for r in rows],
        "key figures": [headline(r.part, r.figures) + (f"; {marks[r.part][0]}"
                                                       if r.part in marks else "")
                        for r in rows]})
    lines += [table.to_markdown(index=False), "", *NOTES]
    if any(r.status != "ok" for r in rows):
        lines.append(f"- what the parts that did not pass printed: {LOGS}/PART.log")
    lines.append("")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "accelerator.md", "\n".join(lines))
    frame = pd.DataFrame([{"part": r.part, "status": r.status, "reason": r.reason,
                           "seconds": r.seconds, "limit_s": r.limit,
                           "sizes": "tiny" if tiny else "full", "device": device_line(device),
                           "host": host, **r.figures, **(marks[r.part][1] if r.part in marks
                                                        else {})} for r in rows])
    write_text_atomic(out / "accelerator.csv", frame.convert_dtypes().to_csv(index=False))
    return "\n".join(lines)


def status_text(row: Row) -> str:
    reason = " ".join(row.reason.replace("|", "/").split())
    return "ok" if row.status == "ok" else f"{row.status}: {reason}" if row.status == "failed" \
        else f"{row.status} {reason}"


def device_line(d: dict[str, Any]) -> str:
    """``1 x NVIDIA H100 80GB HBM3 (gpu, cuda 12080, driver 580.65.06), 79.1 GiB each``."""
    if d.get("backend") in (None, "unknown"):
        return "unknown (JAX could not list its devices)"
    about = [str(d["backend"])] + [str(d[k]) for k in ("platform_version",) if d.get(k)
                                   and d[k] != d["backend"]]
    about += [f"driver {d['driver']}"] if d.get("driver") else []
    memory = f", {_gib(d['memory_bytes'])} each" if d.get("memory_bytes") else ""
    return f"{d.get('device_count', '?')} x {d.get('device_kind', '?')} ({', '.join(about)})" \
        + memory


def headline(part: str, f: dict[str, Any]) -> str:
    """A part's key figures in words; what it did not measure reads n/a."""
    g = lambda key, spec="{}": "n/a" if f.get(key) in (None, "") else spec.format(f[key])
    if not f:
        return "-"
    if part == "devices":
        return (f"{g('backend')}: {g('device_count')} x {g('device_kind')}; peak "
                f"{g('peak_float32_TFLOP_per_s', '{:.3f}')} TFLOP/s float32; one train step "
                f"{'ok' if f.get('smoke_ok') else 'not ok'} (compiled in "
                f"{g('smoke_compile_s', '{:.1f}')} s)")
    if part == "digits":
        return (f"{g('steps')} steps at batch {g('batch')}: eval accuracy "
                f"{g('eval_accuracy', '{:.1%}')}, {g('examples_per_s', '{:,.0f}')} examples/s, "
                f"step {g('step_ms', '{:.2f}')} ms, compile {g('compile_s', '{:.1f}')} s, "
                f"MFU {g('mfu', '{:.1%}')}")
    if part == "demo_grid":
        limit = _gib(f["worker_bytes_limit"]) if f.get("worker_bytes_limit") else "n/a (CPU)"
        return (f"{g('completed')}/{g('runs')} runs completed by {g('workers')} workers "
                f"({g('slots')}); XLA_PYTHON_CLIENT_MEM_FRACTION {g('mem_fraction')}; "
                f"allocator limit per worker {limit}; {g('examples_per_s_per_run', '{:,.0f}')} "
                "examples/s per run")
    if part.startswith("imagenet"):
        return f"{stage(f, 'first')}; largest {stage(f, 'largest')}"
    return (f"{g('examples_per_s', '{:,.0f}')} examples/s at batch {g('batch')} "
            f"({g('precision')}), MFU {g('mfu', '{:.1%}')}; data: {g('data')}")


def stage(f: dict[str, Any], at: str) -> str:
    """One ImageNet batch size: step, compile, FLOPs, MFU, predicted and measured memory."""
    g = lambda key, spec="{}": "n/a" if f.get(f"{at}_{key}") is None else spec.format(
        f[f"{at}_{key}"])
    measured = f.get(f"{at}_measured_peak_bytes")
    return (f"batch {g('batch')}: {g('step_ms', '{:.1f}')} ms/step "
            f"({g('examples_per_s', '{:,.1f}')} ex/s), compile {g('compile_s', '{:.1f}')} s, "
            f"{_flops(f.get(f'{at}_flops_analytic'))} analytic / "
            f"{_flops(f.get(f'{at}_flops_xla'))} XLA, MFU {g('mfu', '{:.1%}')} of "
            f"{g('peak_TFLOP_per_s')} TFLOP/s, memory {_gib(f.get(f'{at}_predicted_bytes'))} "
            f"predicted / {_gib(measured) if measured else 'n/a'} peak")


def goals(f: dict[str, Any], kind: str) -> tuple[str, dict[str, Any]]:
    """The bfloat16 ImageNet goals (an H100): step time and MFU at batch 16, batch 64."""
    step, mfu, largest = f.get("first_step_ms"), f.get("first_mfu"), f.get("largest_batch")
    met = {"goal_step_met": None if step is None else step <= GOALS["step_ms"],
           "goal_mfu_met": None if mfu is None else mfu >= GOALS["mfu"],
           "goal_batch64_met": None if largest is None else (
               largest >= GOALS["batch"] and f.get("largest_step_ms") is not None)}
    word = lambda v: "n/a" if v is None else "yes" if v else "no"
    text = (f"goals (an H100): step <= {GOALS['step_ms']:g} ms at batch 16: "
            f"{word(met['goal_step_met'])}; MFU >= {GOALS['mfu']:.0%}: "
            f"{word(met['goal_mfu_met'])}; batch {GOALS['batch']} fits: "
            f"{word(met['goal_batch64_met'])}")
    return text + ("" if "H100" in kind else f" (measured on {kind or 'another device'})"), met


def _gib(n: float | None) -> str:
    if n is None:
        return "n/a"
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _flops(x: float | None) -> str:
    if x is None or x != x:
        return "n/a"
    unit, scale = next(((u, s) for u, s in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6))
                        if x >= s), ("FLOP", 1.0))
    return f"{x / scale:.2f} {unit}"


def main(argv: list[str] | None = None) -> int:
    """One part, in the process ``run_part`` starts: figures to ``--result`` as it goes."""
    parser = argparse.ArgumentParser(prog="python -m suite.benchmarks.accelerator")
    parser.add_argument("part", choices=list(PARTS))
    parser.add_argument("--result", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--tiny", action="store_true", help="CPU sizes")
    args = parser.parse_args(argv)
    figures: dict[str, Any] = {}

    def emit(**values: Any) -> None:
        figures.update(values)
        write_json_atomic(args.result, {"figures": figures})

    try:
        inject(args.part)
        PARTS[args.part](args.tiny, emit)
    except Exception as e:  # the row says why; the traceback goes to the part's log
        traceback.print_exc()
        write_json_atomic(args.result, {"figures": figures, "error": one_line(e)})
        return 1
    write_json_atomic(args.result, {"figures": figures})
    return 0


if __name__ == "__main__":
    sys.exit(main())
