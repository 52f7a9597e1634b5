"""Runs never lose work: a restore tells corruption from mismatch, locks are loud,
signals are honoured from process start, killed workers resume, retries keep evidence."""

import errno
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest

from suite import config as C
from suite.cli import main
from suite.errors import CheckpointError
from suite.files import read_jsonl
from suite.sweeps import runner as runner_lib
from suite.sweeps import spec as spec_lib
from suite.sweeps.results import run_status
from suite.sweeps.runner import classify, run_grid
from suite.training import lock
from suite.training.checkpoint import structure_diff
from suite.training.trainer import Window, train_and_evaluate

SMALL = {
    "model.num_latents": 16, "model.latent_dim": 32, "model.self_heads": 2,
    "model.fourier_bands": 4, "train.batch_size": 32, "train.log_every": 10,
    "train.eval_every": 0, "train.checkpoint_every": 20, "train.keep_checkpoints": 3,
    "train.steps": 40,
}
QUIET = {"progress": False, "log": lambda m: None}
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def small(**overrides):
    return C.build("digits", {**SMALL, **overrides})


def cli_args(**overrides):
    return [f"{k}={v}" for k, v in {**SMALL, **overrides}.items()]


def train_cmd(workdir, **overrides):
    return [sys.executable, "-m", "suite", "train", "--preset", "digits", "--workdir",
            str(workdir), *cli_args(**overrides)]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under a folder and its bytes (the lock file aside)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != lock.LOCK_NAME}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """Two finished runs (latent width 32, and 16), trained once for this module."""
    root = tmp_path_factory.mktemp("finished")
    for name, width in (("run", 32), ("other", 16)):
        train_and_evaluate(small(**{"model.latent_dim": width}), root / name, **QUIET)
    return root


def interrupted_run(finished, tmp_path, name="run") -> Path:
    """A run folder as a crash after its last checkpoint leaves it: no summary."""
    run = tmp_path / name
    shutil.copytree(finished / name, run)
    (run / "summary.json").unlink()
    return run


def wait_for_line(proc, needle, timeout=120):
    """Read the process's stderr until a line contains ``needle``; the lines read."""
    lines, deadline = [], time.time() + timeout
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} never appeared; stderr: {''.join(lines)}")


# --------------------------------------------------------------------------- restore


def test_a_checkpoint_of_another_structure_stops_with_exit_2_and_moves_nothing(
        finished, tmp_path, capsys):
    other = interrupted_run(finished, tmp_path, "other")
    run = interrupted_run(finished, tmp_path)
    shutil.rmtree(run / "checkpoints")
    shutil.copytree(other / "checkpoints", run / "checkpoints")
    before = snapshot(run)
    assert main(["train", "--preset", "digits", "--workdir", str(run), *cli_args()]) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("perceiver")]
    assert len(errors) == 1
    assert str(run) in errors[0] and "step 40" in errors[0]
    assert "checkpoint [16] float32 vs model [32] float32" in errors[0]
    assert snapshot(run) == before  # every checkpoint and metric line where it was
    assert not (tmp_path / "run" / "checkpoints_corrupt").exists()


def test_a_restore_that_fails_without_corruption_moves_nothing(finished, tmp_path, monkeypatch):
    run = interrupted_run(finished, tmp_path)
    before = snapshot(run)

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate")

    monkeypatch.setattr(ocp.CheckpointManager, "restore", out_of_memory)
    with pytest.raises(CheckpointError, match="step 40: RuntimeError: RESOURCE_EXHAUSTED"):
        train_and_evaluate(small(), run, **QUIET)
    assert snapshot(run) == before


def test_metrics_are_kept_aside_not_truncated_to_0_when_every_checkpoint_is_corrupt(
        finished, tmp_path):
    run = interrupted_run(finished, tmp_path)
    old_rows = read_jsonl(run / "metrics.jsonl")
    for step in ("20", "40"):
        (run / "checkpoints" / step / "commit_success.txt").unlink()  # unfinished saves
    train_and_evaluate(small(), run, **QUIET)
    assert read_jsonl(run / "metrics_corrupt_1.jsonl") == old_rows
    assert sorted(p.name for p in (run / "checkpoints_corrupt").iterdir()) == ["20", "40"]


def test_structure_diff_names_each_leaf_that_differs():
    saved = {0: {"rng": np.zeros(2, np.uint32), "kernel": np.zeros((64, 32), np.float32)}}
    model = {0: {"kernel": np.zeros((64, 16), np.float32)}, 1: {"step": np.zeros((), np.int32)}}
    assert structure_diff(saved, model) == [
        "model/rng: in the checkpoint, not in the model",
        "optimizer/step: in the model, not in the checkpoint",
        "model/kernel: checkpoint [64, 32] float32 vs model [64, 16] float32",
    ]


# ----------------------------------------------------------------------------- locks


def test_only_eagain_and_eacces_mean_busy(tmp_path, monkeypatch):
    def fail(code):
        def lockf(fd, op):
            raise OSError(code, os.strerror(code))
        return lockf

    for code in (errno.EAGAIN, errno.EACCES):
        monkeypatch.setattr(fcntl, "lockf", fail(code))
        with pytest.raises(lock.RunBusy, match="is busy"):
            lock.acquire(tmp_path / "run")
    monkeypatch.setattr(fcntl, "lockf", fail(errno.ENOLCK))
    with pytest.raises(lock.LockError, match=r"cannot lock it \(ENOLCK.*POSIX locks"):
        lock.acquire(tmp_path / "run")


def grid_spec(tmp_path, steps=30, grid='"model.num_latents" = [4, 8]'):
    path = tmp_path / "g.toml"
    path.write_text(f'''name = "g"
preset = "synthetic"
[fixed]
"train.steps" = {steps}
"train.log_every" = 10
"train.checkpoint_every" = 10
[grid]
{grid}
''')
    return spec_lib.expand(spec_lib.load(path)), path


def test_a_grid_whose_locks_fail_trains_nothing_and_exits_2(tmp_path):
    runs, _ = grid_spec(tmp_path)
    out = tmp_path / "out"
    for run in runs:  # a lock "file" that cannot be opened as a file
        (out / "runs" / run.id / lock.LOCK_NAME).mkdir(parents=True)
    outcome = run_grid(runs, out, progress=False)
    assert outcome.exit_code == 2 and not outcome.completed and not outcome.elsewhere
    assert sorted(outcome.errors) == sorted(r.id for r in runs)
    assert all("cannot open the lock file" in why for why in outcome.errors.values())
    assert not list(out.rglob("summary.json"))


@pytest.mark.slow
def test_two_train_commands_on_one_folder_one_trains_the_other_is_busy(tmp_path):
    first = subprocess.Popen(train_cmd(tmp_path, **{"train.steps": 2000}), env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_line(first, "training from step 0")
        second = subprocess.run(train_cmd(tmp_path, **{"train.steps": 2000}), env=ENV,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 3
        assert f"{tmp_path} is busy" in second.stderr and str(first.pid) in second.stderr
        assert first.poll() is None  # the first goes on training
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM


# --------------------------------------------------------------------------- signals


def test_sigterm_during_compilation_exits_cleanly_and_the_rerun_starts_normally(tmp_path):
    proc = subprocess.Popen(train_cmd(tmp_path), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_line(proc, "compiling the train step")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines()[-1] == (
        "perceiver-suite: stopped by SIGTERM before the first step; rerun to start")
    assert "Traceback" not in err
    assert not (tmp_path / "summary.json").exists()
    assert not list((tmp_path / "checkpoints").glob("[0-9]*"))
    again = subprocess.run(train_cmd(tmp_path), env=ENV,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "training from step 0 to 40" in again.stderr


def test_exit_statuses_of_workers_are_classified():
    assert classify(0) == "completed" and classify(1) == "failed"
    assert classify(2) == "error" and classify(3) == "elsewhere"
    assert classify(4) == "resource"  # out of memory: retried once, then interrupted
    assert classify(128 + signal.SIGTERM) == "stopped"
    assert classify(-signal.SIGKILL) == "resource"  # the OOM killer, kill -9
    assert classify(128 + signal.SIGKILL) == "resource"  # the same, seen through a shell


def kill_the_worker(run_dir, checkpoint, proc, not_pid=None):
    """SIGKILL the process training ``run_dir`` once it has saved ``checkpoint``; its pid."""
    deadline = time.time() + 120
    while True:
        assert time.time() < deadline and proc.poll() is None
        holder = lock.holder(run_dir).split()
        if (run_dir / "checkpoints" / str(checkpoint)).exists() and len(holder) == 2 \
                and int(holder[1]) != not_pid:
            break
        time.sleep(0.02)
    os.kill(int(holder[1]), signal.SIGKILL)
    return int(holder[1])


@pytest.mark.slow
def test_a_worker_killed_by_sigkill_is_retried_then_resumed_by_the_next_runner(tmp_path):
    runs, path = grid_spec(tmp_path, steps=2000, grid='"model.num_latents" = [4]')
    path.write_text(path.read_text().replace('"train.checkpoint_every" = 10',
                                             '"train.checkpoint_every" = 100'))
    runs = spec_lib.expand(spec_lib.load(path))
    out = tmp_path / "out"
    run_dir = out / "runs" / runs[0].id
    proc = subprocess.Popen([sys.executable, "-m", "suite", "run", str(path), "--out", str(out)],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = kill_the_worker(run_dir, 100, proc)  # the runner retries it once, at once ...
    kill_the_worker(run_dir, 100, proc, not_pid=first)  # ... and once more is too many
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "interrupted (killed by SIGKILL (the OOM killer?)); retrying once" in err
    assert run_status(run_dir) == "interrupted"
    outcome = run_grid(runs, out, progress=False)  # no --retry-failed
    assert outcome.completed == [runs[0].id] and outcome.exit_code == 0
    assert "resuming from step 100" in (run_dir / "train.log").read_text()
    assert (run_dir / "summary_interrupted_1.json").exists()  # the reason, kept


def stuck_worker(self, run_dir, slot):
    """A worker that ignores SIGTERM (as a hung process would)."""
    return [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
            "signal.SIG_IGN); time.sleep(600)"]


def ctrl_c_after(*delays):
    for d in delays:
        threading.Timer(d, os.kill, (os.getpid(), signal.SIGINT)).start()


def test_on_stop_the_runner_kills_a_stuck_worker_after_the_timeout(tmp_path, monkeypatch):
    monkeypatch.setattr(runner_lib._Grid, "command", stuck_worker)
    runs, _ = grid_spec(tmp_path, grid='"model.num_latents" = [4]')
    ctrl_c_after(1.0)
    start = time.monotonic()
    outcome = run_grid(runs, tmp_path / "out", progress=False, stop_timeout=2.0)
    assert time.monotonic() - start < 30
    assert outcome.stopped_by == signal.SIGINT and outcome.exit_code == 128 + signal.SIGINT
    assert outcome.interrupted == [runs[0].id]


def test_a_second_ctrl_c_stops_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(runner_lib._Grid, "command", stuck_worker)
    runs, _ = grid_spec(tmp_path, grid='"model.num_latents" = [4, 8]')
    ctrl_c_after(1.0, 2.0)
    start = time.monotonic()
    outcome = run_grid(runs, tmp_path / "out", workers=2, progress=False, stop_timeout=600)
    assert time.monotonic() - start < 30
    assert sorted(outcome.interrupted) == sorted(r.id for r in runs)


# ----------------------------------------------------------------- retries and timing


def test_retrying_a_diverged_run_starts_over_and_keeps_the_failed_attempt(tmp_path):
    config = small(**{"train.optimizer": "sgd", "train.learning_rate": 1e12,
                      "train.log_every": 1})
    first = train_and_evaluate(config, tmp_path, **QUIET)
    assert first["status"] == "failed" and first["failure"] == "diverged"
    failed_metrics = (tmp_path / "metrics.jsonl").read_bytes()
    logs = []
    train_and_evaluate(config, tmp_path, retry_failed=True, progress=False, log=logs.append)
    assert any("starting again from step 0" in m for m in logs)
    assert any("training from step 0" in m for m in logs)
    assert (tmp_path / "metrics_failed_1.jsonl").read_bytes() == failed_metrics
    assert (tmp_path / "summary_failed_1.json").exists()
    assert (tmp_path / "checkpoints_failed_1").is_dir()


def test_a_resumed_window_averages_all_its_steps_but_times_only_the_new_ones():
    restored = {"loss": np.float32(7.0)}  # 7 steps of loss 1.0 summed before the restart
    window = Window(restored, count=7)
    for _ in range(3):
        window.add({"loss": np.float32(1.0)})
    window.elapsed = 6.0  # seconds spent on the 3 steps run since the restart
    assert window.count == 10 and window.host_sums() == {"loss": 10.0}
    assert window.seconds_per_step() == 2.0  # 6 s / 3 steps, not 6 s / 10 steps
