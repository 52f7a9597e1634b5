"""Compute scaling: the Perceiver's FLOPs grow linearly in M, the Transformer's
quadratically; sizes that do not fit are recorded, not crashed on."""

import subprocess
import sys

import pandas as pd
import pytest

from suite.benchmarks.scaling import analyse, crossover, fit_slope, scaling_config
from suite.benchmarks.scaling_report import replot

TINY = {"model.num_latents": 8, "model.latent_dim": 16, "model.hidden_dim": 16,
        "model.num_layers": 1, "model.num_blocks": 1, "model.self_attends_per_block": 1,
        "model.num_cross_attends": 1, "model.self_heads": 2, "model.fourier_bands": 2}


def flops(model, side):
    return analyse(scaling_config(model, side, TINY), batch=1)["flops_per_example_xla"]


def growth(model):
    """F(1024) - F(256) over F(256) - F(64): 4 if linear in M, 16 if quadratic."""
    f64, f256, f1024 = (flops(model, s) for s in (8, 16, 32))
    return (f1024 - f256) / (f256 - f64)


def test_perceiver_flops_grow_linearly_in_the_input_size():
    assert growth("perceiver") == pytest.approx(4.0, rel=0.1)


def test_transformer_flops_grow_quadratically_in_the_input_size():
    assert growth("transformer") > 12.0


def test_the_perceiver_io_line_is_the_perceiver_with_one_cross_attend_and_a_query_decoder():
    config = scaling_config("perceiver_io", 8, TINY)
    assert config.model.decoder == "query" and config.model.num_cross_attends == 1
    io = analyse(scaling_config("perceiver_io", 8, TINY), batch=1)
    plain = analyse(scaling_config("perceiver", 8, TINY), batch=1)
    assert io["params"] > plain["params"]  # the query and its cross-attend block


def test_slope_fit_and_crossover_on_exact_power_laws():
    import numpy as np

    ms = np.array([1024, 4096, 16384, 65536], float)
    assert fit_slope(ms, 3 * ms) == pytest.approx(1.0)
    assert fit_slope(ms, ms**2) == pytest.approx(2.0)
    frame = pd.DataFrame({"model": ["perceiver"] * 4 + ["transformer"] * 4,
                          "M": list(ms) * 2, "f": list(4000 * ms) + list(ms**2)})
    assert crossover(frame, "f") == pytest.approx(4000, rel=0.01)


def test_scaling_command_records_a_size_that_does_not_fit(tmp_path):
    out = tmp_path / "scaling"
    result = subprocess.run(
        [sys.executable, "-m", "suite", "scaling", "--sizes", "64,256", "--latents", "4,8",
         "--max-memory-gb",
         "0.000001", "--out", str(out), *[f"{k}={v}" for k, v in TINY.items()]],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(out / "scaling.csv")
    assert len(frame) == 6 and frame["status"].str.startswith("does not fit").all()
    assert set(frame["model"]) == {"perceiver N=4", "perceiver N=8", "transformer"}
    assert frame["predicted_memory_bytes"].gt(0).all()
    assert (out / "scaling.md").exists() and (out / "flops_vs_M.png").exists()
    written = (out / "scaling.md").read_text()
    (out / "scaling.md").unlink()
    replot(out)  # the table and plots come back from the CSV alone
    assert (out / "scaling.md").read_text() == written


def test_the_time_budget_bounds_the_timed_steps_and_setup_is_reported_apart():
    from suite.benchmarks.scaling import _measure_in_subprocess

    config = scaling_config("perceiver", 8, TINY)
    row = _measure_in_subprocess(config, batch=1, steps=2, budget_s=60)
    assert row["status"] == "measured"
    assert row["startup_seconds"] > 0 and row["compile_seconds_measured"] > 0
    assert row["step_seconds"] > 0 and row["peak_rss_bytes"] > 0
    # A budget far below one step: setup (seconds) is not counted, the timed steps are.
    late = _measure_in_subprocess(config, batch=1, steps=100_000, budget_s=0.5)
    assert late["status"] == "measure timed out in the timed steps (> 0s)"
    assert late["compile_seconds_measured"] > 0
