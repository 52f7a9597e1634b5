"""Accelerators first-class, tested on the CPU: where each worker runs, what a resource
error does to a run, what `devices` reports, and the figures every summary carries."""

import json
import os
import subprocess
import sys

import pytest

from suite.sweeps import runner as runner_lib
from suite.sweeps import spec as spec_lib
from suite.sweeps.placement import Devices, default_workers, plan
from suite.sweeps.runner import run_grid

GPUS = Devices("gpu", (0, 1), "NVIDIA H100 80GB HBM3", 80 * 2**30)


def test_on_a_gpu_host_each_worker_sees_its_own_gpu_and_no_cpu_pinning():
    slots = plan(GPUS, default_workers(GPUS))
    assert default_workers(GPUS) == 2
    assert [s.env for s in slots] == [{"CUDA_VISIBLE_DEVICES": "0"},
                                      {"CUDA_VISIBLE_DEVICES": "1"}]
    assert all(s.cpus is None for s in slots)


def test_more_workers_than_gpus_share_them_without_preallocation():
    envs = [s.env for s in plan(GPUS, 3)]
    assert envs[0] == {"CUDA_VISIBLE_DEVICES": "0", "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
                       "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.450"}  # GPU 0 holds 2 workers
    assert envs[1] == {"CUDA_VISIBLE_DEVICES": "1"}  # GPU 1 holds 1: it may preallocate
    assert envs[2] == envs[0]
    one_gpu = Devices("gpu", (0,), "H100")
    assert [s.env["XLA_PYTHON_CLIENT_MEM_FRACTION"] for s in plan(one_gpu, 2)] == ["0.450"] * 2


def test_tpu_chips_are_never_shared_and_cpus_are_split_and_pinned():
    tpus = plan(Devices("tpu", (0, 1, 2, 3), "TPU v5 lite"), 8)
    assert [s.env["TPU_VISIBLE_CHIPS"] for s in tpus] == ["0", "1", "2", "3"]
    assert len({s.env["TPU_PROCESS_PORT"] for s in tpus}) == 4
    cpus = plan(Devices("cpu"), 2, cpus=[0, 1, 2, 3])
    assert [s.cpus for s in cpus] == [(0, 2), (1, 3)] and all(not s.env for s in cpus)
    assert default_workers(Devices("cpu")) == 1


def grid(tmp_path, n=2):
    path = tmp_path / "g.toml"
    values = ", ".join(str(4 * (i + 1)) for i in range(n))
    path.write_text(f'preset = "synthetic"\n[grid]\n"model.num_latents" = [{values}]\n')
    return spec_lib.expand(spec_lib.load(path))


def fake_worker(script):
    """Replace the worker process by a Python snippet that gets the run folder as argv[1]."""
    def command(self, run_dir, slot):
        return [sys.executable, "-c", script, str(run_dir)]
    return command


ENV_RECORDER = ("import json, os, sys, pathlib; pathlib.Path(sys.argv[1], 'env.json').write_text("
                "json.dumps({k: v for k, v in os.environ.items() if k.startswith(('CUDA', 'XLA'))"
                "}))")


def test_the_runner_gives_each_worker_the_environment_of_its_place(tmp_path, monkeypatch):
    monkeypatch.setattr(runner_lib._Grid, "command", fake_worker(ENV_RECORDER))
    runs = grid(tmp_path, 4)
    outcome = run_grid(runs, tmp_path / "out", devices=GPUS, workers=4, progress=False)
    assert len(outcome.completed) == 4
    envs = [json.loads((tmp_path / "out" / "runs" / r.id / "env.json").read_text())
            for r in runs]
    assert sorted(e["CUDA_VISIBLE_DEVICES"] for e in envs) == ["0", "0", "1", "1"]
    assert all(e["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.450" for e in envs)


OOM_ONCE = ("import sys, pathlib; mark = pathlib.Path(sys.argv[1], 'attempts'); "
            "n = int(mark.read_text()) if mark.exists() else 0; mark.write_text(str(n + 1)); "
            "print('error: out of resources: XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory "
            "allocating 28261023760 bytes'); sys.exit(4 if n == 0 else 0)")
OOM_ALWAYS = OOM_ONCE.replace("sys.exit(4 if n == 0 else 0)", "sys.exit(4)")


def test_a_run_that_runs_out_of_memory_is_retried_once_on_its_own(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner_lib._Grid, "command", fake_worker(OOM_ONCE))
    runs = grid(tmp_path, 1)
    outcome = run_grid(runs, tmp_path / "out", progress=False)
    assert outcome.completed == [runs[0].id] and outcome.exit_code == 0
    assert (tmp_path / "out" / "runs" / runs[0].id / "attempts").read_text() == "2"
    assert "interrupted (out of resources: XlaRuntimeError: RESOURCE_EXHAUSTED" in \
        capsys.readouterr().err


def test_a_second_resource_error_keeps_the_reason_and_the_next_runner_resumes(
        tmp_path, monkeypatch):
    monkeypatch.setattr(runner_lib._Grid, "command", fake_worker(OOM_ALWAYS))
    runs = grid(tmp_path, 1)
    run_dir = tmp_path / "out" / "runs" / runs[0].id
    outcome = run_grid(runs, tmp_path / "out", progress=False)
    assert outcome.interrupted == [runs[0].id] and outcome.exit_code == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["failure"] == "resource"
    assert "RESOURCE_EXHAUSTED" in summary["reason"] and "twice" in summary["reason"]
    monkeypatch.setattr(runner_lib._Grid, "command", fake_worker(OOM_ONCE))
    again = run_grid(runs, tmp_path / "out", progress=False)  # no --retry-failed needed
    assert again.completed == [runs[0].id]


def test_devices_prints_the_cpu_backend_and_exits_0():
    done = subprocess.run([sys.executable, "-m", "suite", "devices", "--json"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["backend"] == "cpu" and info["devices"][0]["platform"] == "cpu"
    assert info["smoke_test"]["ok"] and info["peak_flops_per_s"] > 0
    assert {"jax", "jaxlib"} <= set(info["versions"])


def test_devices_names_a_missing_accelerator_in_one_line():
    done = subprocess.run([sys.executable, "-m", "suite", "devices"], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cuda"})
    if done.returncode == 0:
        pytest.skip("this machine has a CUDA GPU")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "JAX_PLATFORMS='cuda'" in done.stderr and ".[cuda]" in done.stderr


@pytest.mark.gpu
def test_on_an_accelerator_the_summary_reports_device_memory(tmp_path):
    from suite import config as C
    from suite.training.trainer import train_and_evaluate

    summary = train_and_evaluate(C.build("synthetic", {"train.steps": 5}), tmp_path,
                                 progress=False, log=lambda m: None)
    assert summary["device_peak_bytes"] > 0 and summary["device_bytes_limit"] > 0
