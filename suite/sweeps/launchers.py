"""Grids on a cluster: the runs as a SLURM job array through submitit.

Each array task is one run, trained by the same worker as a local grid (under the
run folder's lock, so resubmitting a grid, or running it locally at the same time,
never trains a run twice). ``submitit-local`` runs the same jobs through submitit's
local executor, to try a launch on a laptop. For hand-written ``sbatch`` scripts,
``run --shard auto`` takes shard ``$SLURM_ARRAY_TASK_ID`` of ``$SLURM_ARRAY_TASK_COUNT``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from suite.errors import SpecError, SuiteError
from suite.sweeps.results import write_results_csv
from suite.sweeps.runner import GridOutcome, classify, prepare_run, record, triage
from suite.sweeps.spec import Run


def train_in_job(run_dir: str, retry_failed: bool) -> int:
    """One array task: the grid worker in this (submitit's) process, its output appended to
    ``train.log`` in the run folder as a local grid's is."""
    import sys

    from suite.sweeps.worker import main

    sys.stdout.flush()
    sys.stderr.flush()
    with open(Path(run_dir) / "train.log", "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    return main([run_dir, *(["--retry-failed"] if retry_failed else [])])


def executor(kind: str, folder: Path, options: dict[str, Any]):
    try:
        import submitit
    except ImportError:
        raise SuiteError("--launcher slurm needs submitit: pip install -e '.[slurm]'") from None
    if kind == "submitit-local":
        return submitit.LocalExecutor(folder=folder)
    try:
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    except RuntimeError as e:  # not on a SLURM cluster
        raise SuiteError(f"--launcher slurm: {e} (use --launcher local here)") from None
    params = {"timeout_min": options.get("time_min", 60 * 24),
              "slurm_array_parallelism": options.get("parallelism", 64)}
    if options.get("partition"):
        params["slurm_partition"] = options["partition"]
    if options.get("gpus"):
        params["gpus_per_node"] = options["gpus"]
    ex.update_parameters(**params)
    return ex


def submit(runs: list[Run], out: Path, *, spec_name: str, kind: str = "slurm",
           retry_failed: bool = False, options: dict[str, Any] | None = None,
           wait: bool = True, log=print) -> GridOutcome:
    """Submit the runs not yet settled as one job array; wait for it if ``wait``."""
    out = Path(out).absolute()
    outcome, todo = triage(runs, out, retry_failed, log)
    if not todo:
        log(f"{len(runs)} runs: nothing to submit")
        return outcome
    ex = executor(kind, out / "submitit", options or {})
    run_dirs = [str(prepare_run(out, run, spec_name)) for run in todo]
    try:
        jobs = ex.map_array(train_in_job, run_dirs, [retry_failed] * len(run_dirs))
    except Exception as e:  # no sbatch here, a rejected partition ...
        raise SuiteError(f"submitting {len(todo)} runs failed: {type(e).__name__}: {e}") from None
    log(f"{len(runs)} runs: submitted {len(todo)} as {kind} job(s) "
        f"{jobs[0].job_id.split('_')[0] if jobs else ''}; logs in {out / 'submitit'}")
    if not wait:
        return outcome
    for run, job in zip(todo, jobs, strict=True):
        try:
            code = int(job.result())
        except Exception:  # the task died (killed, preempted): resumable, as in a local grid
            code = -9
        status = classify(code)
        log(f"{run.id}: {record(outcome, run.id, status, code, out / 'runs' / run.id)}")
    write_results_csv(out)
    return outcome


def shard_from_environment() -> tuple[int, int]:
    """``--shard auto``: this SLURM array task's shard (index from 0, count)."""
    try:
        index = int(os.environ["SLURM_ARRAY_TASK_ID"]) - int(os.environ.get(
            "SLURM_ARRAY_TASK_MIN", "0"))
        count = int(os.environ.get("SLURM_ARRAY_TASK_COUNT") or int(os.environ[
            "SLURM_ARRAY_TASK_MAX"]) - int(os.environ.get("SLURM_ARRAY_TASK_MIN", "0")) + 1)
    except (KeyError, ValueError):
        raise SpecError("--shard auto needs SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT "
                        "(run it inside an sbatch --array job)") from None
    return index, count
