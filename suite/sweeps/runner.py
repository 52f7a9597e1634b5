"""Run a grid: skip finished runs, resume partial ones, run N at a time, never twice.

Each run trains in its own process (``suite.sweeps.worker``) in its place (``placement``:
a share of the CPUs, or one accelerator); a thread pool of N threads starts them and
waits on them, one process per run. The run folder ``OUT/runs/<id>/`` is the unit of
work and of truth: its lock says who trains it, its summary whether it finished, its
checkpoints where to resume.

A worker that dies of a resource error (out of memory, a failed autotuning, killed by
a signal such as the OOM killer's) is *interrupted*, not failed, and retried once at
once from its checkpoint. If it dies again, its summary says ``interrupted`` with the
reason, the grid's exit status counts it, and the next runner resumes it without flags.

Stopping: the first SIGINT/SIGTERM asks every running worker to checkpoint and exit,
waits up to ``stop_timeout`` seconds, then kills what is left; a second one kills at
once.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from suite import config as cfg_lib
from suite import fmt
from suite.files import write_json_atomic
from suite.sweeps import placement
from suite.sweeps.placement import Devices, Slot
from suite.sweeps.results import config_changes, read_run, run_status, write_results_csv
from suite.sweeps.spec import Run
from suite.sweeps.worker import (
    EXIT_COMPLETED,
    EXIT_DOES_NOT_FIT,
    EXIT_ERROR,
    EXIT_LOCKED,
    EXIT_RESOURCE,
)


@dataclass
class GridOutcome:
    completed: list[str] = field(default_factory=list)  # finished now or before
    failed: list[str] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)  # locked by another runner
    interrupted: list[str] = field(default_factory=list)  # killed; the next runner resumes
    does_not_fit: list[str] = field(default_factory=list)  # too big for this machine
    changed: list[str] = field(default_factory=list)  # its folder holds another config now
    errors: dict[str, str] = field(default_factory=dict)  # run id -> the one-line reason
    stopped_by: int | None = None  # the signal that stopped the grid

    def summary(self) -> str:
        """``"3 completed, 1 failed, 1 interrupted (rerun to resume)"``."""
        parts = [f"{len(self.completed)} completed", f"{len(self.failed)} failed"]
        if self.interrupted:
            parts.append(f"{len(self.interrupted)} interrupted (rerun to resume)")
        if self.elsewhere:
            parts.append(f"{len(self.elsewhere)} running in another runner")
        if self.does_not_fit:
            parts.append(f"{len(self.does_not_fit)} do not fit this machine")
        if self.changed:
            parts.append(f"{len(self.changed)} changed since the grid ran (not the grid's)")
        if self.errors:
            parts.append(f"{len(self.errors)} could not start")
        return ", ".join(parts)

    @property
    def exit_code(self) -> int:
        if self.stopped_by:
            return 128 + self.stopped_by
        if self.errors:
            return 2
        return 1 if self.failed or self.interrupted or self.does_not_fit or self.changed \
            else 0


def classify(code: int) -> str:
    """A worker's exit status -> completed | failed | error | elsewhere | stopped | resource."""
    if code == EXIT_COMPLETED:
        return "completed"
    if code == EXIT_LOCKED:
        return "elsewhere"
    if code == EXIT_ERROR:
        return "error"
    if code == EXIT_DOES_NOT_FIT:
        return "does_not_fit"
    if code > 128 and code - 128 in (signal.SIGTERM, signal.SIGINT):
        return "stopped"  # checkpointed on request
    if code < 0 or code == EXIT_RESOURCE or code > 128:
        return "resource"  # killed (the OOM killer?) or out of memory: no summary, resumable
    return "failed"


def last_error_line(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no train.log)"
    line = next((ln for ln in reversed(lines) if ln.startswith("error: ")), lines[-1] if lines
                else "")
    return line.removeprefix("error: ")


def resource_reason(code: int, run_dir: Path) -> str:
    if code < 0:
        name = signal.Signals(-code).name
        return f"killed by {name}" + (" (the OOM killer?)" if -code == signal.SIGKILL else "")
    if code > 128:
        return f"exit status {code} (killed by signal {code - 128}?)"
    return last_error_line(run_dir / "train.log")


def changed_since(run: Run, run_dir: Path) -> str:
    """How the run folder's config.json differs from the grid's run (a run extended in
    place: ``train.steps 20 -> 60``), or "" where it does not (or there is none yet)."""
    row = read_run(run_dir) if (run_dir / "config.json").is_file() else None
    if row is None:
        return ""
    diff = config_changes(row, {"seed": run.config.seed, **cfg_lib.non_default(run.config)},
                          cfg_lib.DERIVED_KEYS)  # a default changed since is no change
    return ", ".join(f"{k} {a} -> {b}" for k, a, b in diff)


def triage(runs: list[Run], out: Path, retry_failed: bool,
           say=lambda msg: None) -> tuple[GridOutcome, list[Run]]:
    """Runs already settled (completed; failed or too big unless retried; changed since
    the grid ran, never trained over) and those to train, seed by seed: every cell's
    first seed before any cell's second, so a grid stopped part-way has whole seeds."""
    outcome, todo = GridOutcome(), []
    for run in runs:
        status = run_status(out / "runs" / run.id)
        if changed := changed_since(run, out / "runs" / run.id):
            outcome.changed.append(run.id)
            say(f"{run.id}: changed since the grid ran ({changed}): not the grid's run, "
                f"left as it is; move {out / 'runs' / run.id} elsewhere to train the grid's")
        elif status == "completed":
            outcome.completed.append(run.id)
        elif status == "failed" and not retry_failed:
            outcome.failed.append(run.id)
        elif status == "does_not_fit" and not retry_failed:
            outcome.does_not_fit.append(run.id)
        else:
            todo.append(run)
    rank = {seed: i for i, seed in reversed(list(enumerate(r.config.seed for r in runs)))}
    return outcome, sorted(todo, key=lambda r: rank[r.config.seed])  # seed by seed


def prepare_run(out: Path, run: Run, spec_name: str) -> Path:
    """The run folder with its ``run.json`` (what the worker trains)."""
    run_dir = out / "runs" / run.id
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "run.json", {
        "id": run.id, "spec": spec_name, "varied": run.varied,
        "config": cfg_lib.to_dict(run.config)})
    return run_dir


class _Grid:
    """The state of one grid invocation: workers, their processes, the event queue."""

    def __init__(self, out: Path, spec_name: str, slots: list[Slot], retry_failed: bool,
                 stop_timeout: float):
        self.out, self.spec_name, self.retry_failed = out, spec_name, retry_failed
        self.places = slots
        self.free: queue.Queue[int] = queue.Queue()
        for i in range(len(slots)):
            self.free.put(i)
        self.events: queue.Queue[tuple] = queue.Queue()
        self.active: dict[str, subprocess.Popen] = {}
        self.lock = threading.Lock()
        self.stopping: int | None = None
        self.stop_timeout = stop_timeout

    def train(self, run: Run) -> None:
        """Pool thread: one run in its own process, retried once after a resource error;
        reports ``("done", run, status, seconds, detail)``."""
        slot = self.free.get()
        try:
            run_dir = prepare_run(self.out, run, self.spec_name)
            started = time.perf_counter()
            for attempt in (1, 2):
                code = self._launch(run, run_dir, slot)
                status = "not started" if code is None else classify(code)
                if status != "resource":
                    break
                reason = resource_reason(code, run_dir)
                if attempt == 1 and not self.stopping:
                    self.events.put(("note", f"{run.id}: interrupted ({reason}); retrying once"))
                    continue
                write_json_atomic(run_dir / "summary.json", {  # resumable: not 'failed'
                    "status": "interrupted", "failure": "resource", "metrics": {},
                    "reason": f"{reason}" + (", twice" if attempt == 2 else "")
                    + " (see train.log)"})
                code = reason
                break
            self.events.put(("done", run, status, time.perf_counter() - started, code))
        except BaseException as e:  # never leave the runner waiting for this run
            self.events.put(("done", run, "error", 0.0, f"runner: {type(e).__name__}: {e}"))
        finally:
            self.free.put(slot)

    def _launch(self, run: Run, run_dir: Path, slot: int) -> int | None:
        """Start the worker and wait for it; its exit status (None if the grid stopped)."""
        with self.lock, open(run_dir / "train.log", "ab") as log:
            if self.stopping:
                return None
            proc = subprocess.Popen(
                self.command(run_dir, slot), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env={**os.environ, **self.places[slot].env},
                start_new_session=True)  # the terminal's Ctrl-C reaches the runner only
            self.active[run.id] = proc
        code = proc.wait()
        with self.lock:
            self.active.pop(run.id, None)
        return code

    def command(self, run_dir: Path, slot: int) -> list[str]:
        cmd = [sys.executable, "-m", "suite.sweeps.worker", str(run_dir),
               "--parent", str(os.getpid())]
        cpus = self.places[slot].cpus
        if cpus:
            cmd += ["--cpus", ",".join(map(str, cpus))]
        return cmd + (["--retry-failed"] if self.retry_failed else [])

    def signal_all(self, sig: int) -> None:
        with self.lock:
            for proc in self.active.values():
                if proc.poll() is None:
                    proc.send_signal(sig)


def run_grid(
    runs: list[Run],
    out: Path,
    *,
    spec_name: str = "",
    workers: int | None = None,
    retry_failed: bool = False,
    progress: bool | None = None,
    stop_timeout: float = 120.0,
    devices: Devices | None = None,
) -> GridOutcome:
    """Train every run not yet completed; rebuild ``out/results.csv`` at the end.

    ``workers`` defaults to one per accelerator (one on a CPU host); ``devices`` to what
    a probe process finds.
    """
    out = Path(out).absolute()
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    outcome, todo = triage(runs, out, retry_failed, say)
    devices = devices or (placement.probe() if todo else placement.Devices("cpu"))
    slots = placement.plan(devices, workers or placement.default_workers(devices))
    skipped = (f", {len(outcome.failed)} failed before (skipped; --retry-failed reruns them)"
               if outcome.failed else "")
    say(f"{len(runs)} runs: {len(outcome.completed)} already completed{skipped}, "
        f"{len(todo)} to run with {len(slots)} worker(s): " + "; ".join(s.label for s in slots))
    grid = _Grid(out, spec_name, slots, retry_failed, stop_timeout)
    bar = None
    if (sys.stderr.isatty() if progress is None else progress) and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=spec_name or "grid", unit="run", dynamic_ncols=True)
    old = {s: signal.signal(s, lambda signum, frame: grid.events.put(("signal", signum)))
           for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with ThreadPoolExecutor(max_workers=len(slots)) as pool:
            for run in todo:
                pool.submit(grid.train, run)
            _collect(grid, outcome, len(todo), bar, say)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if bar:
            bar.close()
        write_results_csv(out)
    return outcome


def _collect(grid: _Grid, outcome: GridOutcome, total: int, bar, say) -> None:
    """Main thread: wait for workers' reports and stop requests until every run reported."""
    pending, durations, deadline = total, [], None
    while pending:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            event = grid.events.get(timeout=timeout)
        except queue.Empty:  # the stop timeout passed: kill what is still running
            say(f"stopping: workers still running after {grid.stop_timeout:.0f}s; killing them")
            grid.signal_all(signal.SIGKILL)
            deadline = None
            continue
        if event[0] == "signal":
            if grid.stopping is None:
                grid.stopping = outcome.stopped_by = event[1]
                say("stopping: asking running trainings to checkpoint and exit (again to kill "
                    "them at once) ...")
                grid.signal_all(signal.SIGTERM)
                deadline = time.monotonic() + grid.stop_timeout
            else:
                say("stopping now: killing running trainings")
                grid.signal_all(signal.SIGKILL)
            continue
        if event[0] == "note":
            say(event[1])
            continue
        _, run, status, seconds, *detail = event
        pending -= 1
        run_dir = grid.out / "runs" / run.id
        if status == "not started":
            continue
        note = record(outcome, run.id, status, detail[0] if detail else None, run_dir)
        if status == "completed":
            durations.append(seconds)
            write_results_csv(grid.out)  # as it grows: a killed runner loses no table rows
        left = pending
        eta = (sum(durations) / len(durations)) * left / len(grid.places) if durations else 0
        if bar:  # counts settled runs: a stopped run is not done, and Ctrl-C shows so
            if status not in ("stopped", "resource"):
                bar.update(1)
            bar.set_postfix(failed=len(outcome.failed), **(
                {"interrupted": len(outcome.interrupted)} if outcome.interrupted else {}),
                refresh=True)
        else:
            say(f"[{total - left}/{total}] {run.id}: {note}" + (
                f"; eta {fmt.duration(eta)}" if durations and left else ""))


def record(outcome: GridOutcome, run_id: str, status: str, code, run_dir: Path) -> str:
    """Count a run's outcome; the note for the log."""
    if status == "completed":
        outcome.completed.append(run_id)
        return "completed"
    if status == "elsewhere":
        outcome.elsewhere.append(run_id)
        return "in progress in another runner"
    if status == "error":
        reason = code if isinstance(code, str) else last_error_line(run_dir / "train.log")
        outcome.errors[run_id] = reason
        return f"ERROR: {reason}"
    if status == "does_not_fit":
        outcome.does_not_fit.append(run_id)
        return f"DOES NOT FIT: {last_error_line(run_dir / 'train.log')}"
    if status == "stopped":
        outcome.interrupted.append(run_id)
        return "stopped; checkpointed, the next run resumes it"
    if status == "resource":
        outcome.interrupted.append(run_id)
        return f"interrupted again ({code}); the next run resumes it from its last checkpoint"
    outcome.failed.append(run_id)
    return f"FAILED (see {run_dir / 'train.log'})"
