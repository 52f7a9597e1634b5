"""Training learns, resumes bit-identically after kill -9, survives corrupt checkpoints,
and reports divergence as a failed run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from suite import config as C
from suite.files import read_jsonl
from suite.inference.predict import load_state
from suite.training.trainer import train_and_evaluate

SMALL = {
    "model.num_latents": 16, "model.latent_dim": 32, "model.self_heads": 2,
    "model.fourier_bands": 4, "train.batch_size": 32, "train.log_every": 10,
    "train.eval_every": 0, "train.checkpoint_every": 20, "train.keep_checkpoints": 3,
}


def small(**overrides):
    return C.build("digits", {**SMALL, **overrides})


def overrides_args(**overrides):
    return [f"{k}={v}" for k, v in {**SMALL, **overrides}.items()]


def params_of(config, workdir):
    model, step = load_state(config, workdir)
    return step, jax.tree.leaves(nnx.state(model, nnx.Param))


def train_lines(workdir):
    keys = ("step", "train/loss", "train/accuracy", "train/grad_norm", "learning_rate")
    return [{k: r[k] for k in keys} for r in read_jsonl(Path(workdir) / "metrics.jsonl")
            if "train/loss" in r]


def tensorboard_scalars(run_dir):
    """(step, tag, value) of every scalar in a run folder's TensorBoard event files."""
    import struct

    from tensorboardX.proto import event_pb2

    found = []
    for path in sorted(Path(run_dir).glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):  # TFRecords: length, its CRC, the event, its CRC
            n = struct.unpack("<Q", data[i:i + 8])[0]
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            found += [(event.step, v.tag, v.simple_value) for v in event.summary.value]
            i += 12 + n + 4
    return found


def test_digits_run_learns_well_above_chance_and_logs_to_tensorboard(tmp_path):
    config = C.build("digits", {"train.steps": 200, "train.eval_every": 0})
    summary = train_and_evaluate(config, tmp_path / "run", progress=False, log=lambda m: None)
    assert summary["status"] == "completed"
    assert summary["metrics"]["eval/accuracy"] > 0.6  # chance is 0.1
    for key in ("flops_per_step_analytic", "flops_per_step_xla", "achieved_flops_per_s",
                "peak_flops_per_s", "mfu", "compile_seconds", "peak_rss_bytes",
                "wall_seconds", "params"):
        assert summary[key] > 0
    assert summary["flops_per_step_analytic"] == pytest.approx(
        3 * config.train.batch_size * summary["flops_forward_analytic"])
    assert summary["device_peak_bytes"] is None  # the CPU has no device allocator
    assert "measured" in summary["peak_flops_source"]
    for name in ("config.json", "metrics.jsonl", "summary.json", "checkpoints"):
        assert (tmp_path / "run" / name).exists()
    scalars = tensorboard_scalars(tmp_path / "run")  # the same rows as metrics.jsonl
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    logged = [(s, v) for s, t, v in scalars if t == "train/loss"]
    expected = [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]
    assert [s for s, _ in logged] == [s for s, _ in expected]
    assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)
    assert (200, "eval/accuracy") in {(s, t) for s, t, _ in scalars}


def test_tensorboard_is_one_switch_away(tmp_path):
    train_and_evaluate(small(**{"train.steps": 10, "train.tensorboard": "false"}), tmp_path,
                       progress=False, log=lambda m: None)
    assert not list(tmp_path.glob("events.out.tfevents.*"))
    assert read_jsonl(tmp_path / "metrics.jsonl")  # the JSONL record is always written


def test_a_finished_run_is_not_trained_again(tmp_path):
    config = small(**{"train.steps": 20})
    first = train_and_evaluate(config, tmp_path, progress=False, log=lambda m: None)
    mtime = (tmp_path / "summary.json").stat().st_mtime
    again = train_and_evaluate(config, tmp_path, progress=False, log=lambda m: None)
    assert again == first and (tmp_path / "summary.json").stat().st_mtime == mtime


def test_the_train_step_traces_once(tmp_path, monkeypatch):
    from suite.training.steps import Steps

    seen = []
    original = Steps.__init__

    def spy(self, *a, **k):
        original(self, *a, **k)
        seen.append(self)

    monkeypatch.setattr(Steps, "__init__", spy)
    train_and_evaluate(small(**{"train.steps": 40, "train.eval_every": 20}), tmp_path,
                       progress=False, log=lambda m: None)
    assert seen[0].traces == {"train": 1, "eval": 1}


def test_a_run_in_a_folder_of_another_config_is_refused(tmp_path):
    from suite.errors import CheckpointError

    train_and_evaluate(small(**{"train.steps": 10}), tmp_path, progress=False,
                       log=lambda m: None)
    with pytest.raises(CheckpointError, match="another config"):
        train_and_evaluate(small(**{"train.steps": 20}), tmp_path, progress=False,
                           log=lambda m: None)


@pytest.mark.parametrize("mark", ["grid.json", "spec.toml", "results.csv", "runs"])
def test_a_results_folder_of_a_grid_is_refused_and_left_as_it_is(tmp_path, mark):
    from suite.errors import CheckpointError

    (tmp_path / mark).mkdir() if mark == "runs" else (tmp_path / mark).write_text("{}")
    with pytest.raises(CheckpointError) as err:
        train_and_evaluate(small(**{"train.steps": 10}), tmp_path, progress=False,
                           log=lambda m: None)
    assert str(err.value) == (f"{tmp_path} is a results folder of a grid (it holds {mark}); "
                              f"train one of its runs: {tmp_path}/runs/<id>")
    assert [p.name for p in tmp_path.iterdir()] == [mark]


def test_divergence_marks_the_run_failed_with_a_reason(tmp_path):
    config = small(**{"train.steps": 60, "train.optimizer": "sgd",
                      "train.learning_rate": 1e12})
    summary = train_and_evaluate(config, tmp_path, progress=False, log=lambda m: None)
    assert summary["status"] == "failed"
    assert "non-finite loss" in summary["reason"]
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "failed"


def _cli_train(workdir, **overrides):
    return [sys.executable, "-m", "suite", "train", "--preset", "digits",
            "--workdir", str(workdir), *overrides_args(**overrides)]


@pytest.mark.slow
def test_kill_9_and_rerun_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    steps = {"train.steps": 80, "train.eval_every": 40}
    config = small(**steps)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    subprocess.run(_cli_train(tmp_path / "a", **steps), check=True, env=env,
                   capture_output=True)
    proc = subprocess.Popen(_cli_train(tmp_path / "b", **steps), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (tmp_path / "b" / "checkpoints" / "20").exists():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "b" / "summary.json").exists()
    subprocess.run(_cli_train(tmp_path / "b", **steps), check=True, env=env,
                   capture_output=True)
    a = json.loads((tmp_path / "a" / "summary.json").read_text())
    b = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert a["metrics"] == b["metrics"]
    assert train_lines(tmp_path / "a") == train_lines(tmp_path / "b")  # no duplicates
    step_a, pa = params_of(config, tmp_path / "a")
    step_b, pb = params_of(config, tmp_path / "b")
    assert step_a == step_b == 80
    for x, y in zip(pa, pb, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_sigterm_saves_a_checkpoint_and_the_rerun_finishes(tmp_path):
    steps = {"train.steps": 200, "train.checkpoint_every": 100}
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen(_cli_train(tmp_path, **steps), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "metrics.jsonl").exists() or not read_jsonl(tmp_path / "metrics.jsonl"):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert saved and saved[-1] < 200  # stopped early, with a checkpoint
    done = subprocess.run(_cli_train(tmp_path, **steps), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"resuming from step {saved[-1]}" in done.stderr


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    config = small(**{"train.steps": 60})
    quiet = {"progress": False, "log": lambda m: None}
    reference = train_and_evaluate(config, tmp_path / "ref", **quiet)
    train_and_evaluate(config, tmp_path / "run", **quiet)
    run = tmp_path / "run"
    (run / "summary.json").unlink()  # as if killed right after the last save
    latest = run / "checkpoints" / "60"
    for f in latest.rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    summary = train_and_evaluate(config, run, **quiet)
    err = capsys.readouterr().err
    assert "checkpoint at step 60 is corrupt" in err
    assert (run / "checkpoints_corrupt" / "60").is_dir()  # only that step is moved
    assert (run / "checkpoints" / "40").is_dir()
    assert summary["status"] == "completed"
    assert summary["metrics"] == reference["metrics"]
