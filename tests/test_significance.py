"""Telling an effect from seed noise on real runs: a cell that cannot learn is not tied
with the best, two cells that differ in nothing that matters are tied and both bold;
``compare`` says whether two folders' cells moved beyond noise."""

import json
import math
import shutil

import pandas as pd
import pytest

from suite.analysis import stats
from suite.analysis.report import write_report
from suite.cli import main
from suite.sweeps import record
from suite.sweeps import spec as spec_lib
from suite.training.trainer import train_and_evaluate

# learning rate 1e-7 cannot learn in 250 steps; keep_checkpoints changes nothing computed
SPEC = '''name = "lr"
description = "One cell that cannot learn, two that differ in nothing that matters."
preset = "digits"
seeds = [0, 1, 2]
[fixed]
"train.steps" = 250
"train.log_every" = 125
"train.checkpoint_every" = 250
"train.tensorboard" = false
"train.batch_size" = 32
"model.num_latents" = 8
"model.latent_dim" = 32
"model.num_blocks" = 1
"model.num_cross_attends" = 1
"model.self_heads" = 2
[zip]
"train.learning_rate" = [1e-7, 3e-3, 3e-3]
"train.keep_checkpoints" = [2, 2, 3]
'''


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """The spec trained as ``perceiver-suite run`` would, in this process."""
    folder = tmp_path_factory.mktemp("significance")
    path = folder / "lr.toml"
    path.write_text(SPEC)
    spec = spec_lib.load(path)
    runs = spec_lib.expand(spec)
    out = folder / "out"
    record.claim(out, spec, runs, {}, f"perceiver-suite run {path}")
    for run in runs:
        train_and_evaluate(run.config, out / "runs" / run.id, progress=False, log=lambda m: None)
    return out


@pytest.mark.slow
def test_a_cell_that_cannot_learn_is_not_tied_and_cells_that_differ_in_nothing_are(grid):
    write_report(grid, plots=False)
    table = pd.read_csv(grid / "report" / "table.csv")
    assert list(table["train.learning_rate"]) == [1e-7, 3e-3, 3e-3]  # the spec's order
    assert list(table["tied_with_best"]) == [False, True, True]
    assert list(table["test_vs_best"][[0]]) == ["paired t"]
    assert table.loc[0, "p_vs_best"] < 0.05
    md = (grid / "report" / "table.md").read_text()
    rows = [ln for ln in md.splitlines() if ln.startswith("|")][2:]
    assert ["**" in ln for ln in rows] == [False, True, True]


@pytest.mark.slow
def test_compare_exits_0_when_nothing_moved_1_when_a_cell_did_2_when_nothing_is_shared(
        grid, tmp_path, capsys):
    assert main(["compare", str(grid), str(grid)]) == 0
    assert "no cell of 3 moved beyond seed noise" in capsys.readouterr().out
    moved = tmp_path / "moved"
    shutil.copytree(grid, moved)
    for run_dir in (moved / "runs").iterdir():  # as if a code change broke the 3e-3 cells
        summary = json.loads((run_dir / "summary.json").read_text())
        config = json.loads((run_dir / "config.json").read_text())
        if config["train"]["learning_rate"] > 1e-6:
            summary["metrics"]["eval/accuracy"] -= 0.2 + 0.01 * config["seed"]
            summary["provenance"]["versions"]["jax"] = "9.9.9"
        (run_dir / "summary.json").write_text(json.dumps(summary))
    assert main(["compare", str(grid), str(moved)]) == 1
    out = capsys.readouterr().out
    assert "2 of 3 shared cells moved beyond seed noise" in out
    assert "the folders differ in code" in out and "jax 9.9.9" in out
    other = tmp_path / "other"
    (other / "runs" / "x").mkdir(parents=True)
    (other / "runs" / "x" / "config.json").write_text(json.dumps(
        {"seed": 0, "model": {"num_latents": 3}, "train": {}, "data": {}}))
    (other / "grid.json").write_text(json.dumps({"name": "o", "runs": [
        {"id": "x", "varied": {"model.num_latents": 3, "seed": 0}}]}))
    assert main(["compare", str(grid), str(other)]) == 2
    assert "share no cell" in capsys.readouterr().err


def test_a_paired_test_uses_the_shared_seeds_and_welch_the_rest():
    same = stats.compare({0: 0.5, 1: 0.6, 2: 0.7}, {0: 0.5, 1: 0.6, 2: 0.7})
    assert same.test == "paired t" and same.p == 1.0 and same.tied
    shifted = stats.compare({0: 0.6, 1: 0.7, 2: 0.8}, {0: 0.5, 1: 0.6, 2: 0.7})
    assert shifted.p == 0.0 and shifted.tied is False  # the same shift on every seed
    welch = stats.compare({0: 0.5, 1: 0.6}, {3: 0.55, 4: 0.65, 5: 0.5})
    assert welch.test == "Welch t" and 0.05 < welch.p <= 1
    few = stats.compare({0: 0.5}, {1: 0.9})
    assert few.test == "n < 2" and few.tied is None and stats.tied_text(few) == "n < 2"
    low, high = stats.t_interval([0.80, 0.82, 0.81])
    assert (low + high) / 2 == pytest.approx(0.81)
    assert high - low == pytest.approx(2 * 4.3027 * 0.01 / math.sqrt(3), rel=1e-4)
    assert stats.t_interval([0.7]) == (0.7, 0.7)
