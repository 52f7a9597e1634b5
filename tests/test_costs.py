"""Cost figures are right: XLA's FLOPs count every loop at its trip count and every
device of a partitioned program; MFU is against the peak of the run's precision and
of every device it ran on; subsets keep every class; train accuracy is an evaluation."""

import json
import subprocess
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from suite import config as C
from suite import provenance
from suite.analysis.describe import describe
from suite.data import load
from suite.data.sources import Split, stratified
from suite.models.flops import compiled_forward, cost_of
from suite.platform import devices
from suite.training.trainer import train_and_evaluate


def test_a_scanned_loop_is_counted_once_per_iteration():
    w, z = jnp.ones((64, 64)), jnp.ones((8, 64))

    def f(w, z):
        return jax.lax.scan(lambda z, _: (jnp.tanh(z @ w), None), z, None, length=7)[0]

    cost = cost_of(jax.jit(f).lower(w, z).compile())
    matmuls = 7 * 2 * 8 * 64 * 64
    assert cost["loops"] == 1 and cost["loops_unknown_trips"] == 0
    assert cost["flops_loops_once"] < matmuls / 6  # XLA's own figure: the body once
    assert cost["flops"] == pytest.approx(matmuls, rel=0.01)


def test_nested_loops_multiply_their_trip_counts():
    w, z = jnp.ones((32, 32)), jnp.ones((4, 32))

    def f(w, z):
        inner = lambda z, _: (z @ w, None)  # noqa: E731
        outer = lambda z, _: (jax.lax.scan(inner, z, None, length=3)[0], None)  # noqa: E731
        return jax.lax.scan(outer, z, None, length=5)[0]

    cost = cost_of(jax.jit(f).lower(w, z).compile())
    assert cost["flops"] == pytest.approx(15 * 2 * 4 * 32 * 32, rel=0.02)


@pytest.mark.slow
def test_scanned_and_unrolled_imagenet_forward_agree_in_xla_flops():
    scanned, unrolled = (cost_of(compiled_forward(C.build("imagenet", {
        "model.scan_repeats": scan}), batch=1)[0])["flops"] for scan in (True, False))
    assert scanned == pytest.approx(unrolled, rel=0.03)


@pytest.mark.slow
def test_describe_reports_the_scanned_imagenet_flops_within_3_percent_of_unrolled():
    scanned = describe(C.build("imagenet", {}))
    unrolled = describe(C.build("imagenet", {"model.scan_repeats": False}))
    assert scanned["flops_xla"] == pytest.approx(unrolled["flops_xla"], rel=0.03)
    assert "trip counts" in scanned["flops_xla_note"]
    assert "computes them once" in scanned["flops_xla_note"]


def fake(kind: str, platform: str, n: int, process: int = 0) -> list:
    return [SimpleNamespace(device_kind=kind, platform=platform, process_index=process)
            for _ in range(n)]


def test_mfu_peaks_follow_the_precision_and_the_device_count(monkeypatch):
    one_bf16, _ = devices.peak_flops("bfloat16", devices=fake("NVIDIA H100 80GB HBM3", "gpu", 1))
    one_f32, source = devices.peak_flops("float32", devices=fake("NVIDIA H100 80GB HBM3", "gpu", 1))
    assert one_bf16 == 989e12 and one_f32 == 494.7e12 and "TF32" in source
    eight, source = devices.peak_flops("bfloat16", devices=fake("NVIDIA H100 80GB HBM3", "gpu", 8))
    assert eight == 8 * 989e12 and source.startswith("8 x ")
    monkeypatch.setattr(devices, "measured_peak", lambda dtype, fresh=False: 1e11)
    host, source = devices.peak_flops("float32", devices=fake("cpu", "cpu", 4))
    assert host == 1e11 and "shared by its 4 CPU devices" in source
    two_hosts, _ = devices.peak_flops("float32", devices=fake("cpu", "cpu", 2) +
                                      fake("cpu", "cpu", 2, process=1))
    assert two_hosts == 2e11


def test_a_bfloat16_run_records_the_bfloat16_peak(tmp_path, monkeypatch):
    seen = []

    def measured(dtype, fresh=False):
        seen.append(dtype)
        return 1e11

    monkeypatch.setattr(devices, "measured_peak", measured)
    config = C.build("digits", {"train.steps": 4, "train.log_every": 2,
                                "model.precision": "bfloat16", "train.tensorboard": False})
    summary = train_and_evaluate(config, tmp_path, progress=False, log=lambda m: None)
    assert seen == ["bfloat16"] and summary["peak_precision"] == "bfloat16"
    assert summary["mfu"] == pytest.approx(summary["achieved_flops_per_s"] / 1e11)
    assert "bfloat16" in summary["peak_flops_source"]


def test_a_stratified_limit_keeps_every_class_in_proportion():
    labels = np.repeat(np.arange(3), [50, 30, 20])  # sorted by class, as folders are
    split = Split(np.zeros((100, 1)), labels)
    picked = stratified(split, 20, seed=0)
    assert np.bincount(labels[picked]).tolist() == [10, 6, 4]
    assert picked.tolist() == stratified(split, 20, seed=0).tolist()  # same seed, same subset
    assert picked.tolist() != stratified(split, 20, seed=1).tolist()
    rare = Split(np.zeros((103, 1)), np.repeat(np.arange(4), [97, 2, 2, 2]))
    assert (np.bincount(rare.labels[stratified(rare, 5, seed=0)]) >= 1).all()


def test_train_limit_draws_a_stratified_subset_from_the_task():
    ds = load(C.build("digits", {"data.train_limit": 50}).data, seed=3)
    counts = np.bincount(ds.train.labels, minlength=10)
    assert len(ds.train) == 50 and (counts >= 4).all()


def test_train_accuracy_is_an_evaluation_of_a_fixed_training_subset(tmp_path):
    config = C.build("digits", {"train.steps": 6, "train.log_every": 3, "train.eval_every": 3,
                                "train.eval_train_examples": 40, "train.tensorboard": False,
                                "model.dropout": 0.1})
    summary = train_and_evaluate(config, tmp_path, progress=False, log=lambda m: None)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/accuracy" in r]
    assert [r["step"] for r in evals] == [3, 6]
    assert all({"train_eval/accuracy", "train_eval/loss"} <= set(r) for r in evals)
    assert summary["metrics"]["train_eval/accuracy"] == evals[-1]["train_eval/accuracy"]
    assert summary["metrics"]["train_eval/accuracy"] * 40 == pytest.approx(
        round(summary["metrics"]["train_eval/accuracy"] * 40))  # a count over 40 examples


def test_every_summary_records_the_code_and_library_versions(tmp_path):
    config = C.build("digits", {"train.steps": 2, "train.log_every": 1,
                                "train.tensorboard": False})
    summary = train_and_evaluate(config, tmp_path, progress=False, log=lambda m: None)
    block = summary["provenance"]
    assert set(block["versions"]) == set(provenance.LIBRARIES)
    assert block["versions"]["jax"] == jax.__version__
    assert block["suite_version"] and "git_commit" in block and "git_dirty" in block
    assert "jax " + jax.__version__ in provenance.describe(block)


def test_a_checkout_is_dirty_for_changed_code_but_not_for_the_results_it_wrote(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("a = 1\n")
    (tmp_path / "results" / "results.csv").write_text("old\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    (tmp_path / "results" / "results.csv").write_text("new\n")
    assert provenance.git_state.__wrapped__(tmp_path)["dirty"] is False
    (tmp_path / "code.py").write_text("a = 2\n")
    assert provenance.git_state.__wrapped__(tmp_path)["dirty"] is True
