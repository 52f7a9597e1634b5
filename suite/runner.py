"""Run a grid: skip finished runs, resume partial ones, run N at a time, never twice.

Each run trains in its own process (``suite.worker``) pinned to its share of the CPUs.
The run folder ``OUT/runs/<id>/`` is the unit of work and of truth: its lock says who
trains it, its summary whether it finished, its checkpoints where to resume.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from suite import config as cfg_lib
from suite import fmt
from suite.files import write_json_atomic
from suite.results import run_status, write_results_csv
from suite.spec import Run
from suite.worker import EXIT_COMPLETED, EXIT_LOCKED


@dataclass
class GridOutcome:
    completed: list[str] = field(default_factory=list)  # finished now or before
    failed: list[str] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)  # locked by another runner
    interrupted: int | None = None  # the signal that stopped the grid

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 128 + self.interrupted
        return 1 if self.failed else 0


def cpu_shares(workers: int) -> list[set[int]]:
    """Split this process's CPUs into ``workers`` disjoint sets (round-robin)."""
    cpus = sorted(os.sched_getaffinity(0))
    workers = max(1, min(workers, len(cpus)))
    return [set(cpus[i::workers]) for i in range(workers)]


def run_grid(
    runs: list[Run],
    out: Path,
    *,
    spec_name: str = "",
    workers: int = 1,
    retry_failed: bool = False,
    progress: bool | None = None,
) -> GridOutcome:
    """Train every run not yet completed; rebuild ``out/results.csv`` at the end."""
    out = Path(out).absolute()
    outcome = GridOutcome()
    queue: list[Run] = []
    for run in runs:
        status = run_status(out / "runs" / run.id)
        if status == "completed":
            outcome.completed.append(run.id)
        elif status == "failed" and not retry_failed:
            outcome.failed.append(run.id)
        else:
            queue.append(run)
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    skipped = (f", {len(outcome.failed)} failed before (skipped; --retry-failed reruns them)"
               if outcome.failed else "")
    say(f"{len(runs)} runs: {len(outcome.completed)} already completed{skipped}, "
        f"{len(queue)} to run with {workers} worker(s)")

    shares = cpu_shares(workers)
    free = list(range(len(shares)))
    active: dict[subprocess.Popen, tuple[Run, int, float]] = {}
    durations: list[float] = []
    total = len(queue)
    bar = None
    if (sys.stderr.isatty() if progress is None else progress) and total:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=spec_name or "grid", unit="run", dynamic_ncols=True)

    stop: list[int] = []
    old = {s: signal.signal(s, lambda signum, frame: stop.append(signum))
           for s in (signal.SIGINT, signal.SIGTERM)}

    def launch(run: Run, slot: int) -> None:
        run_dir = out / "runs" / run.id
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / "run.json", {
            "id": run.id, "spec": spec_name, "varied": run.varied,
            "config": cfg_lib.to_dict(run.config),
        })
        cmd = [sys.executable, "-m", "suite.worker", str(run_dir),
               "--cpus", ",".join(map(str, sorted(shares[slot]))),
               "--parent", str(os.getpid())]
        if retry_failed:
            cmd.append("--retry-failed")
        with open(run_dir / "train.log", "ab") as log:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True,  # the terminal's Ctrl-C reaches the runner only
            )
        active[proc] = (run, slot, time.perf_counter())

    try:
        while (queue or active) and not stop:
            while queue and free and not stop:
                launch(queue.pop(0), free.pop(0))
            time.sleep(0.2)
            for proc in [p for p in active if p.poll() is not None]:
                run, slot, started = active.pop(proc)
                free.append(slot)
                code = proc.returncode
                if code == EXIT_LOCKED:
                    outcome.elsewhere.append(run.id)
                    note = "in progress in another runner"
                elif code == EXIT_COMPLETED:
                    outcome.completed.append(run.id)
                    durations.append(time.perf_counter() - started)
                    note = "completed"
                elif code > 128 and code - 128 in (signal.SIGTERM, signal.SIGINT):
                    queue.insert(0, run)  # stopped from outside: resumable
                    note = "stopped (will resume)"
                else:
                    outcome.failed.append(run.id)
                    note = f"FAILED (see {out / 'runs' / run.id / 'train.log'})"
                left = len(queue) + len(active)
                eta = (sum(durations) / len(durations)) * left / len(shares) if durations else 0
                if bar:
                    bar.update(1)
                    bar.set_postfix(running=len(active), failed=len(outcome.failed),
                                    refresh=True)
                else:
                    say(f"[{total - left}/{total}] {run.id}: {note}; {len(active)} running, "
                        f"{len(outcome.failed)} failed" + (f", eta {fmt.duration(eta)}" if durations
                                                           else ""))
        if stop:
            outcome.interrupted = stop[0]
            say("stopping: asking running trainings to checkpoint and exit ...")
            for proc in active:
                proc.send_signal(signal.SIGTERM)
            for proc in active:
                proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if bar:
            bar.close()
        write_results_csv(out)
    return outcome
