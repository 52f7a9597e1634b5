"""A grid's figures average only runs that differ in the seed: a run extended in place is
not a seed of its cell any more, runs of two plugin versions are named, a variant knob a
cell does not read does not multiply its runs, a results folder's spec.toml finds its
plugins, and an accuracy's interval stays in [0, 1]."""

import json
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from suite import config as cfg_lib
from suite.analysis import experiment, stats
from suite.analysis.report import write_report
from suite.sweeps import record as record_lib
from suite.sweeps import spec as spec_lib
from suite.sweeps.runner import triage

PLUGIN = textwrap.dedent('''
    import dataclasses

    from flax import nnx

    from suite import extend
    from suite.models.layers import MLP


    @dataclasses.dataclass(frozen=True)
    class GatedKnobs:
        scale: float = 1.0


    @extend.register_mlp("gatedtest", knobs=GatedKnobs)
    class Gated(nnx.Module):
        def __init__(self, knobs, m, *, dim, widening_factor, rngs, dtype=None):
            self.scale = knobs.scale
            self.inner = MLP(dim, widening_factor, rngs=rngs, dtype=dtype)

        def __call__(self, x):
            return self.scale * self.inner(x)
''')

SPEC = '''name = "toy"
preset = "digits"
seeds = [0, 1, 2]
[fixed]
"train.steps" = 20
[grid]
"model.num_latents" = [8, 16]
'''


def write_run(out: Path, run_id: str, latents: int, seed: int, acc: float, steps: int = 20,
              plugins: list | None = None) -> None:
    """A completed run folder as the trainer leaves it."""
    run = out / "runs" / run_id
    run.mkdir(parents=True)
    config = {"seed": seed, "model": {"num_latents": latents}, "data": {"task": "digits"},
              "train": {"steps": steps}, **({"plugins": plugins} if plugins else {})}
    (run / "config.json").write_text(json.dumps(config))
    (run / "summary.json").write_text(json.dumps({
        "status": "completed", "metrics": {"eval/accuracy": acc, "eval/loss": 1 - acc}}))
    (run / "metrics.jsonl").write_text(json.dumps({"step": steps, "eval/accuracy": acc,
                                                   "eval/loss": 1 - acc}) + "\n")


def grid_folder(out: Path, accuracies: dict[int, list[float]], **run_kw) -> Path:
    """A results folder of SPEC: grid.json records each run's config (train.steps 20)."""
    runs = []
    for latents, values in accuracies.items():
        for seed, acc in enumerate(values):
            run_id = f"n{latents}_s{seed}"
            write_run(out, run_id, latents, seed, acc, **run_kw)
            runs.append({"id": run_id, "varied": {"model.num_latents": latents, "seed": seed},
                         "config": {"seed": seed, "model.num_latents": latents,
                                    "train.steps": 20}})
    (out / "spec.toml").write_text(SPEC)
    (out / "grid.json").write_text(json.dumps({"name": "toy", "overrides": {}, "runs": runs}))
    return out


def extend_in_place(out: Path, run_id: str, steps: int) -> None:
    """What ``train --workdir OUT/runs/<id> train.steps=N`` leaves: config.json changed."""
    path = out / "runs" / run_id / "config.json"
    config = json.loads(path.read_text())
    config["train"]["steps"] = steps
    path.write_text(json.dumps(config))
    (out / "runs" / run_id / "extended.json").write_text(json.dumps({"from": 20, "to": steps}))


def test_a_run_extended_in_place_is_listed_apart_not_averaged_into_its_cell(tmp_path):
    out = grid_folder(tmp_path / "toy", {8: [0.5, 0.52, 0.54], 16: [0.7, 0.72, 0.74]})
    extend_in_place(out, "n8_s2", 60)
    exp = experiment.load(out)
    row = exp.frame.set_index("run_id").loc["n8_s2"]
    assert row["status"] == "changed"
    assert exp.others.to_dict("records") == [{
        "run_id": "n8_s2", "status": "completed",
        "differs": "changed since the grid ran: train.steps 20 -> 60"}]
    write_report(out, plots=False)
    table = pd.read_csv(out / "report" / "table.csv")
    cell = table[table["model.num_latents"] == 8].iloc[0]
    assert (cell["runs"], cell["completed"]) == (3, 2)
    assert cell["eval/accuracy mean"] == 0.51
    md = (out / "report" / "table.md").read_text()
    assert "- changed since the grid ran: train.steps 20 -> 60: 1 run folder (1 completed): " \
        "`n8_s2`" in md
    assert "`n8_s2` (changed): changed since the grid ran: train.steps 20 -> 60; move" in md


def test_learning_curves_leave_out_a_run_extended_in_place(tmp_path):
    from suite.analysis.report import curves

    out = grid_folder(tmp_path / "toy", {8: [0.5, 0.52], 16: [0.7, 0.72]})
    extend_in_place(out, "n16_s1", 60)
    exp = experiment.load(out)
    assert sorted(set(curves(out, exp.frame)["run_id"])) == ["n16_s0", "n8_s0", "n8_s1"]


def test_the_runner_neither_counts_nor_retrains_a_run_extended_in_place(tmp_path):
    spec_path = tmp_path / "toy.toml"
    spec_path.write_text(SPEC.replace("seeds = [0, 1, 2]", "seeds = [0]"))
    runs = spec_lib.expand(spec_lib.load(spec_path))
    out = tmp_path / "out"
    for run in runs:
        run_dir = out / "runs" / run.id
        run_dir.mkdir(parents=True)
        (run_dir / "config.json").write_text(json.dumps(cfg_lib.to_dict(run.config)))
        (run_dir / "summary.json").write_text(json.dumps({"status": "completed",
                                                          "metrics": {}}))
    extend_in_place(out, runs[1].id, 60)
    said: list[str] = []
    outcome, todo = triage(runs, out, False, said.append)
    assert (outcome.completed, outcome.changed, todo) == ([runs[0].id], [runs[1].id], [])
    assert said == [f"{runs[1].id}: changed since the grid ran (train.steps 20 -> 60): not "
                    f"the grid's run, left as it is; move {out / 'runs' / runs[1].id} "
                    "elsewhere to train the grid's"]
    assert outcome.exit_code == 1


def test_a_cell_of_two_plugin_versions_is_named_with_both_digests(tmp_path):
    def plugin(sha: str) -> list:
        return [{"plugin": "/w/my_variants.py", "path": "/w/my_variants.py", "sha256": sha}]

    out = grid_folder(tmp_path / "toy", {8: [0.5, 0.52], 16: [0.7, 0.72]},
                      plugins=plugin("a" * 64))
    (out / "runs" / "n8_s1" / "config.json").write_text(json.dumps({
        "seed": 1, "model": {"num_latents": 8}, "data": {"task": "digits"},
        "train": {"steps": 20}, "plugins": plugin("b" * 64)}))
    write_report(out, plots=False)
    md = (out / "report" / "table.md").read_text()
    assert ("- The cell model.num_latents=8 mixes runs of 2 versions of its plugins: "
            "my_variants.py sha256 aaaaaaaaaaaa (n8_s0); my_variants.py sha256 bbbbbbbbbbbb "
            "(n8_s1).") in md
    assert "model.num_latents=16 mixes" not in md
    assert "- plugins: my_variants.py sha256 aaaaaaaaaaaa\n" \
        "- plugins: my_variants.py sha256 bbbbbbbbbbbb\n" \
        "- the runs were trained with different plugin versions (see the notes)" in md


@pytest.fixture(scope="module")
def gated_spec(tmp_path_factory) -> Path:
    """A spec beside its plugin (one file, loaded once per process)."""
    root = tmp_path_factory.mktemp("gated")
    (root / "specs" / "variants").mkdir(parents=True)
    (root / "specs" / "variants" / "gated_mlp.py").write_text(PLUGIN)
    path = root / "specs" / "gated.toml"
    path.write_text(textwrap.dedent('''
        name = "gated"
        preset = "digits"
        seeds = [0, 1]
        plugins = ["variants/gated_mlp.py"]  # relative to this file
        [grid]
        "model.mlp" = ["standard", "gatedtest"]
        "model.gatedtest.scale" = [1.0, 0.5]
    '''))
    return path


def test_a_knob_a_cell_does_not_read_does_not_multiply_its_runs(gated_spec):
    spec = spec_lib.load(gated_spec)
    runs, notes = spec_lib.expand_noted(spec)
    assert notes == ["model.gatedtest.scale does not apply where model.mlp='standard': "
                     "1 cell instead of 2 (identical runs dropped)"]
    assert [(r.varied["model.mlp"], r.varied["model.gatedtest.scale"], r.varied["seed"])
            for r in runs] == [("standard", 1.0, 0), ("standard", 1.0, 1),
                               ("gatedtest", 1.0, 0), ("gatedtest", 1.0, 1),
                               ("gatedtest", 0.5, 0), ("gatedtest", 0.5, 1)]
    # every kept run keeps the id the full product gives it
    assert [r.id for r in runs] == [spec_lib.run_id(r.varied, r.config) for r in runs]
    assert spec_lib.expand(spec) == runs


def test_the_spec_copied_into_a_results_folder_finds_its_plugins(gated_spec):
    spec = spec_lib.load(gated_spec)
    out = gated_spec.parent.parent / "results" / "gated"
    record_lib.claim(out, spec, spec_lib.expand(spec), {}, "perceiver-suite run gated.toml")
    copied = (out / "spec.toml").read_text()
    assert 'plugins = ["../../specs/variants/gated_mlp.py"]' in copied
    assert "# relative to this file" in copied
    again = spec_lib.load(out / "spec.toml")
    assert again.plugins == spec.plugins
    assert [r.id for r in spec_lib.expand(again)] == [r.id for r in spec_lib.expand(spec)]


def test_an_accuracy_interval_is_clipped_to_0_1_and_the_notes_say_so(tmp_path):
    assert stats.t_interval([0.0, 1.0, 0.5], bounds=(0.0, 1.0)) == (0.0, 1.0)
    low, high = stats.t_interval([0.0, 1.0, 0.5])
    assert low < 0 and high > 1
    out = grid_folder(tmp_path / "toy", {8: [0.0, 1.0, 0.5], 16: [0.7, 0.72, 0.74]})
    write_report(out, plots=False)
    table = pd.read_csv(out / "report" / "table.csv")
    assert list(table["ci95_low"])[0] == 0.0 and list(table["ci95_high"])[0] == 1.0
    assert list(table["ci95_clipped"]) == [True, False]
    assert table["ci95_high"][1] < 1 and table["ci95_low"][1] > 0
    md = (out / "report" / "table.md").read_text()
    assert "- 95% CI clipped to [0, 1] (an accuracy cannot leave it; the t interval of a few " \
        "spread-out seeds does): model.num_latents=8." in md
    assert "| 0.0 to 100.0 |" in md.replace("  ", " ")
