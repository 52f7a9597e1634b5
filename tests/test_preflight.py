"""Pre-flight: a run that cannot fit stops before its first step, the default eval batch
fits where the train batch fits, and a dry run gives the grid's memory and FLOPs."""

import json

import numpy as np
import pytest

from suite import config as C
from suite.analysis.report import write_report
from suite.cli import main
from suite.data import load, train_batches
from suite.sweeps import spec as spec_lib
from suite.sweeps.runner import run_grid
from suite.training import preflight
from suite.training.trainer import train_and_evaluate

QUIET = {"progress": False, "log": lambda m: None}


def test_a_run_that_cannot_fit_stops_before_its_first_step(tmp_path, monkeypatch):
    monkeypatch.setenv(preflight.BUDGET_ENV, "100000")
    config = C.build("synthetic", {"train.steps": 5})
    with pytest.raises(preflight.DoesNotFit, match=r"does not fit: the train step needs .* "
                       r"\$PERCEIVER_SUITE_MEMORY_BYTES is 0.1 MiB; lower train.batch_size"):
        train_and_evaluate(config, tmp_path, **QUIET)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "does_not_fit" and "train.batch_size=" in summary["reason"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "summary.json"]


def test_the_command_line_says_so_in_one_line_with_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(preflight.BUDGET_ENV, "100000")
    assert main(["train", "--preset", "synthetic", "--workdir", str(tmp_path)]) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert len(errors) == 1 and "does not fit" in errors[0] and str(tmp_path) in errors[0]


def test_a_grid_lists_runs_that_do_not_fit_apart_from_failures(tmp_path, monkeypatch):
    path = tmp_path / "g.toml"
    path.write_text('preset = "synthetic"\n[fixed]\n"train.steps" = 5\n'
                    '[grid]\n"model.num_latents" = [4, 8]\n')
    runs = spec_lib.expand(spec_lib.load(path))
    monkeypatch.setenv(preflight.BUDGET_ENV, "100000")
    outcome = run_grid(runs, tmp_path / "out", progress=False)
    assert sorted(outcome.does_not_fit) == sorted(r.id for r in runs)
    assert not outcome.failed and outcome.exit_code == 1
    write_report(tmp_path / "out", plots=False)
    md = (tmp_path / "out" / "report" / "table.md").read_text()
    assert "## Runs of this spec that do not fit this machine" in md
    assert "did not complete" not in md
    monkeypatch.delenv(preflight.BUDGET_ENV)
    again = run_grid(runs, tmp_path / "out", progress=False)  # skipped, as failed runs are
    assert sorted(again.does_not_fit) == sorted(outcome.does_not_fit)


def test_the_default_eval_batch_of_a_224x224_task_fits_where_the_train_batch_fits(monkeypatch):
    config = C.build("synthetic", {"data.index_dims": "224,224", "data.channels": 3,
                                   "train.batch_size": 4})
    assert config.train.eval_batch_size is None  # the default: choose one that fits
    graphdef, state = preflight.abstract_state(config)
    spec = preflight.batch_spec(config, 4)
    train_need = preflight.plan(config, graphdef, state, spec, evaluate=False,
                                check=False).train_memory.total
    monkeypatch.setenv(preflight.BUDGET_ENV, str(int(1.5 * train_need)))
    plan = preflight.plan(config, graphdef, state, spec)  # raises if eval could not fit
    assert 1 <= plan.eval_batch_size < 256
    assert plan.eval_memory.total <= plan.budget
    assert plan.eval_batch_size & (plan.eval_batch_size - 1) == 0  # a power of two


@pytest.mark.parametrize("task,overrides", [
    ("digits", {}), ("digits", {"data.permutation": "fixed"}), ("shapes3d", {}),
    ("mnist1d", {}), ("synthetic", {"data.permutation": "fixed"}),
])
def test_the_planned_batch_is_the_batch_the_pipeline_yields(task, overrides):
    config = C.build(task, {"data.task": task, **overrides})
    batch = next(iter(train_batches(load(config.data), 8, seed=0)))
    assert preflight.like(batch) == preflight.batch_spec(config, 8)
    assert all(isinstance(v, np.ndarray) for v in batch.values())


def test_dry_run_gives_memory_and_flops_per_run_and_for_the_grid(tmp_path, capsys):
    path = tmp_path / "g.toml"
    path.write_text('preset = "synthetic"\nseeds = [0, 1]\n[grid]\n'
                    '"model.num_latents" = [4, 8]\n')
    assert main(["run", str(path), "--dry-run", "--measure", "--out",
                 str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if ln.startswith("num_latents=")]
    assert len(rows) == 4 and all(ln.split()[-2] == "yes" for ln in rows)
    assert all("MiB" in ln for ln in rows)
    assert "train FLOPs in all:" in out and "of the available host memory is" in out
    assert "estimated wall time:" in out and "without" not in out  # --measure timed all
    assert not (tmp_path / "out").exists()


def test_overrides_after_options_reach_train(tmp_path):
    assert main(["train", "--workdir", str(tmp_path), "train.steps=3", "--preset",
                 "synthetic", "train.log_every=1", "train.tensorboard=false"]) == 0
    assert json.loads((tmp_path / "config.json").read_text())["train"]["steps"] == 3
