"""Telling an effect from seed noise on real runs: three seeds cannot tell even a cell
that cannot learn from the best at 5% (the smallest p of 3 paired seeds is 0.25), and the
report and ``compare`` say so instead of guessing; ``compare`` refuses other configs."""

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
def test_three_seeds_cannot_tell_even_a_cell_that_cannot_learn_from_the_best_and_say_so(grid):
    write_report(grid, plots=False)
    table = pd.read_csv(grid / "report" / "table.csv")
    assert list(table["train.learning_rate"]) == [1e-7, 3e-3, 3e-3]  # the spec's order
    # worse on all 3 seeds: the smallest p 3 paired seeds can give, 0.5 after Holm over 2
    assert table.loc[0, "test_vs_best"] == stats.PAIRED
    assert table.loc[0, "p_vs_best"] == 0.25 == table.loc[0, "p_min_vs_best"]
    assert table.loc[0, "p_vs_best_holm"] == 0.5
    assert list(table["tied_with_best"].astype(str).str.lower()) == ["true"] * 3
    md = (grid / "report" / "table.md").read_text()
    assert "With 3 paired seeds the smallest attainable p is 0.25 (0.5 Holm-adjusted over " \
        "2 cells): no cell can be decided at 5%" in md


@pytest.mark.slow
def test_compare_of_three_seeds_moves_nothing_and_says_why_2_when_configs_differ(
        grid, tmp_path, capsys):
    assert main(["compare", str(grid), str(grid)]) == 0
    assert "no cell of 3 moved beyond seed noise (Holm over 3)" in capsys.readouterr().out
    moved = tmp_path / "moved"
    shutil.copytree(grid, moved)
    for run_dir in (moved / "runs").iterdir():  # as if a code change broke the 3e-3 cells
        summary = json.loads((run_dir / "summary.json").read_text())
        config = json.loads((run_dir / "config.json").read_text())
        if config["train"]["learning_rate"] > 1e-6:
            summary["metrics"]["eval/accuracy"] -= 0.2 + 0.01 * config["seed"]
            summary["provenance"]["versions"]["jax"] = "9.9.9"
        (run_dir / "summary.json").write_text(json.dumps(summary))
    assert main(["compare", str(grid), str(moved)]) == 0  # 3 seeds cannot decide it
    out = capsys.readouterr().out
    assert "with 3 paired seeds the smallest attainable p is 0.25" in out
    assert "the folders differ in jax: " in out and "9.9.9" in out
    other = tmp_path / "other"
    (other / "runs" / "x").mkdir(parents=True)
    (other / "runs" / "x" / "config.json").write_text(json.dumps(
        {"seed": 0, "model": {"num_latents": 3}, "train": {}, "data": {}}))
    (other / "grid.json").write_text(json.dumps({"name": "o", "runs": [
        {"id": "x", "varied": {"model.num_latents": 3, "seed": 0}}]}))
    assert main(["compare", str(grid), str(other)]) == 2
    assert "model.num_latents: 8 vs 3" in capsys.readouterr().err
    assert main(["compare", str(grid), str(other), "--allow-config-diff"]) == 2
    assert "share no cell" in capsys.readouterr().err


def test_a_paired_test_uses_the_shared_seeds_and_a_permutation_test_the_rest():
    same = stats.compare({0: 0.5, 1: 0.6, 2: 0.7}, {0: 0.5, 1: 0.6, 2: 0.7})
    assert same.test == stats.PAIRED and same.p == 1.0
    shifted = stats.compare({0: 0.6, 1: 0.7, 2: 0.8}, {0: 0.5, 1: 0.6, 2: 0.7})
    assert shifted.p == 0.25  # the same shift on every seed: 2 of the 8 sign flips
    unpaired = stats.compare({0: 0.5, 1: 0.6}, {3: 0.55, 4: 0.65, 5: 0.5})
    assert unpaired.test == stats.UNPAIRED and 0.05 < unpaired.p <= 1
    few = stats.compare({0: 0.5}, {1: 0.9})
    assert few.test == stats.FEW and stats.decide([few])[1] == [None]
    low, high = stats.t_interval([0.80, 0.82, 0.81])
    assert (low + high) / 2 == pytest.approx(0.81)
    assert high - low == pytest.approx(2 * 4.3027 * 0.01 / math.sqrt(3), rel=1e-4)
    assert all(math.isnan(v) for v in stats.t_interval([0.7]))
