"""Beyond one device: a data-parallel (and FSDP) mesh follows the single-device run, its
checkpoints restore onto other device counts, two jax.distributed processes agree with
one, and grids launch through submitit as locally, each run once."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from suite import config as C
from suite.data import load, train_batches
from suite.errors import ConfigError, SpecError
from suite.sweeps import spec as spec_lib
from suite.sweeps.launchers import shard_from_environment, submit
from suite.sweeps.results import read_runs
from suite.sweeps.runner import run_grid

SMALL = {"model.num_latents": 16, "model.latent_dim": 32, "model.self_heads": 2,
         "train.batch_size": 32, "train.log_every": 10, "train.steps": 40,
         "train.checkpoint_every": 20, "train.keep_checkpoints": 3, "train.tensorboard": "false"}


def train(workdir, devices=1, extra=(), env=None, **overrides):
    """``perceiver-suite train`` in a process that sees ``devices`` CPU devices."""
    args = [f"{k}={v}" for k, v in {**SMALL, **overrides}.items()]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {}),
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    return subprocess.Popen([sys.executable, "-m", "suite", "train", "--preset", "digits",
                             "--workdir", str(workdir), *args, *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc):
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return err


def losses(workdir):
    rows = [json.loads(ln) for ln in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    return [r["train/loss"] for r in rows if "train/loss" in r]


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("single") / "run"
    finish(train(workdir, 1, **{"train.mesh": "data=-1"}))
    return workdir


@pytest.mark.slow
@pytest.mark.parametrize("mesh", ["data=-1", "data=-1,fsdp=2"])
def test_a_four_device_mesh_follows_the_single_device_loss_curve(one_device, tmp_path, mesh):
    finish(train(tmp_path / "run", 4, **{"train.mesh": mesh}))
    np.testing.assert_allclose(losses(tmp_path / "run"), losses(one_device), rtol=1e-4)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["devices"] == 4 and summary["per_device_batch"] == 8
    single = json.loads((one_device / "summary.json").read_text())
    # XLA's count is of all four devices' work, not one device's share of it ...
    assert summary["flops_per_step_xla"] == pytest.approx(single["flops_per_step_xla"], rel=0.1)
    # ... and forced CPU devices share the host's cores: its peak, not 4 x it.
    assert summary["peak_flops_per_s"] == pytest.approx(single["peak_flops_per_s"], rel=0.5)
    assert "shared by its 4 CPU devices" in summary["peak_flops_source"]


@pytest.mark.slow
def test_a_checkpoint_restores_onto_two_devices_and_onto_one(one_device, tmp_path):
    four = tmp_path / "four"
    finish(train(four, 4, **{"train.mesh": "data=-1"}))
    resumed = tmp_path / "resumed"
    shutil.copytree(four, resumed)
    (resumed / "summary.json").unlink()
    shutil.rmtree(resumed / "checkpoints" / "40")  # as if stopped after step 20
    err = finish(train(resumed, 2, **{"train.mesh": "data=-1"}))
    assert "resuming from step 20" in err
    np.testing.assert_allclose(losses(resumed), losses(four), rtol=1e-4)
    code = ("import json, sys, jax; from suite import config as C; "
            "from suite.inference.predict import load_state; "
            "c = C.from_dict(json.load(open(sys.argv[1] + '/config.json'))); "
            "m, step = load_state(c, sys.argv[1]); print(step, len(jax.devices()))")
    done = subprocess.run([sys.executable, "-c", code, str(four)], capture_output=True,
                          text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=300)
    assert done.stdout.split() == ["40", "1"], done.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_distributed_processes_train_as_one(one_device, tmp_path):
    procs = two_processes(tmp_path)
    for proc in procs:
        finish(proc)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["devices"] == 2
    np.testing.assert_allclose(losses(tmp_path / "run"), losses(one_device), rtol=1e-4)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["20", "40"]


def two_processes(tmp_path, per_process=({}, {}), **overrides):
    port = free_port()
    return [train(tmp_path / "run", 1, extra=["--coordinator", f"localhost:{port}",
                                              "--num-processes", "2", "--process-id", str(i)],
                  **{"train.mesh": "data=-1", **overrides, **per_process[i]}) for i in range(2)]


@pytest.mark.slow
def test_hosts_with_different_configs_all_stop_naming_the_key(tmp_path):
    procs = two_processes(tmp_path, ({}, {"train.steps": 41}))
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 2
        assert "config differs" in err and "train.steps=40 vs 41" in err
        assert "Traceback" not in err


@pytest.mark.slow
def test_a_host_that_dies_stops_the_others_with_one_line(tmp_path):
    procs = two_processes(tmp_path)  # neither can step without the other
    for line in procs[1].stderr:  # wait until both are in the training loop
        if "training from step" in line:
            break
    procs[1].kill()
    _, err = procs[0].communicate(timeout=300)
    assert procs[0].returncode == 1
    assert "process 0: lost another process" in err and "Traceback" not in err


def test_each_process_loads_its_share_of_every_global_batch():
    ds = load(C.build("digits", {}).data)
    whole = next(iter(train_batches(ds, 8, seed=3)))
    shares = [next(iter(train_batches(ds, 8, seed=3, process=p, processes=2))) for p in (0, 1)]
    assert all(len(s["label"]) == 4 for s in shares)
    assert sorted(np.concatenate([s["label"] for s in shares])) == sorted(whole["label"])
    together = np.concatenate([s["inputs"] for s in shares]).reshape(8, -1)
    assert sorted(map(bytes, together)) == sorted(map(bytes, whole["inputs"].reshape(8, -1)))


@pytest.mark.parametrize("mesh,message", [
    ("model=2", "expected axes data and fsdp"), ("data=-1,fsdp=-1", "only one axis may be -1"),
    ("data=0", "expected axes"), ("data", "expected axes"),
])
def test_a_bad_mesh_is_named(mesh, message):
    with pytest.raises(ConfigError, match=message):
        C.build("digits", {"train.mesh": mesh})


def grid(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text('name = "g"\npreset = "synthetic"\nseeds = [0]\n[fixed]\n'
                    '"train.steps" = 10\n"train.log_every" = 5\n"train.tensorboard" = false\n'
                    '[grid]\n"model.num_latents" = [4, 8]\n')
    return spec_lib.expand(spec_lib.load(path))


def test_submitit_and_the_local_runner_train_the_same_runs_once_each(tmp_path):
    runs = grid(tmp_path)
    local = run_grid(runs, tmp_path / "local", progress=False)
    launched = submit(runs, tmp_path / "submitit", spec_name="g", kind="submitit-local",
                      log=lambda m: None)
    assert sorted(local.completed) == sorted(launched.completed) == sorted(r.id for r in runs)
    for out in ("local", "submitit"):
        for run in runs:
            log = (tmp_path / out / "runs" / run.id / "train.log").read_text()
            assert log.count("training from step 0") == 1
    assert {r["run_id"] for r in read_runs(tmp_path / "submitit")} == {r.id for r in runs}
    again = submit(runs, tmp_path / "submitit", spec_name="g", kind="submitit-local",
                   log=lambda m: None)  # resubmitting trains nothing again
    assert sorted(again.completed) == sorted(r.id for r in runs)


def test_shard_auto_reads_the_array_task(monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    assert shard_from_environment() == (3, 4)
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    with pytest.raises(SpecError, match="SLURM_ARRAY_TASK_ID"):
        shard_from_environment()
