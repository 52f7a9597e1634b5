"""suite.api: the commands as functions. Config keys as keywords take '__' for '.', a
mistake raises the one-line SuiteError the command prints, and each function does what
its command does: the same config, the same folders, the same report."""

import json
from pathlib import Path

import pytest

from suite import api
from suite import config as C
from suite.cli import main
from suite.errors import SpecError, SuiteError
from suite.files import read_json
from suite.sweeps import plan
from suite.sweeps import spec as spec_lib

TINY = {"train.steps": 4, "train.batch_size": 8, "train.log_every": 2, "train.eval_every": 0,
        "train.eval_train_examples": 0, "train.checkpoint_every": 2}


def test_config_keys_as_keywords_take_a_double_underscore_for_each_dot():
    as_keywords = api.config("digits", model__num_latents=8, train__steps=5, seed=3)
    as_dict = api.config("digits", overrides={"model.num_latents": "8", "train.steps": 5,
                                              "seed": 3})
    assert as_keywords == as_dict == C.build("digits", {"model.num_latents": 8,
                                                        "train.steps": 5, "seed": 3})
    assert api.config(as_dict, model__num_latents=16).model.num_latents == 16


@pytest.mark.parametrize("call,message", [
    (lambda: api.config("digits", num_latents=8), "config: unknown option num_latents=8; a "
     "config key as a keyword takes '__' for each '.', e.g. model__num_latents=8"),
    (lambda: api.config("digits", model__num_latents=8, overrides={"model.num_latents": 4}),
     "config: model.num_latents is given twice (model__num_latents= and in overrides)"),
    (lambda: api.config("digitz"), "unknown preset 'digitz'; choose one of: imagenet, "),
    (lambda: api.describe("digits", model__num_latentz=8),
     "unknown config key 'model.num_latentz'; did you mean 'model.num_latents'?"),
    (lambda: api.train("digits", workers=2), "train: unknown option workers=2"),
    (lambda: api.run("nowhere.toml"), "nowhere.toml: no such spec file"),
    (lambda: api.run({"preset": "digits"}), "a spec given as a dict needs a 'name'"),
    (lambda: api.run({"name": "x", "preset": "digits", "seed": [0]}),
     "spec dict: unknown top-level key 'seed'; did you mean 'seeds'?"),
    (lambda: api.run({"name": "x", "grid": {"model.num_latentz": [4, 8]}}),
     "spec dict: [grid] unknown config key 'model.num_latentz'"),
    (lambda: api.run({"name": "x"}, workers=0), "workers=0 must be >= 1"),
    (lambda: api.report("no_such_folder"), "no_such_folder: no such results folder"),
    (lambda: api.report("here", train__steps=5), "key=value overrides (train.steps=5) go "
     "with a spec, not with a results folder (here)"),
    (lambda: api.compare("old", "new"), "old: no such results folder"),
])
def test_a_mistake_raises_the_one_line_the_command_prints(call, message, tmp_path,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SuiteError) as err:
        call()
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "results").exists()  # a mistake writes nothing


def test_describe_is_what_describe_json_prints(capsys):
    assert main(["describe", "--no-xla", "--json", "model.num_latents=8"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(api.describe("digits", xla=False,
                                                         model__num_latents=8)))
    assert printed["params"] == 75_372 and printed["flops_count"] == "analytic"


def test_overrides_typed_or_as_text_plan_the_same_experiment_in_the_same_folder(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('name = "s"\npreset = "synthetic"\n[grid]\n"model.num_latents" = [4, 8]\n')
    typed = plan.plan(path, overrides={"train.steps": 20, "model.weight_sharing": False})
    typed_by_hand = plan.plan(path, overrides=["train.steps=20", "model.weight_sharing=false"])
    assert typed.out == typed_by_hand.out == Path("results/s+train.steps=20-"
                                                  "model.weight_sharing=false")
    assert typed.overrides == typed_by_hand.overrides
    assert [r.id for r in typed.runs] == [r.id for r in typed_by_hand.runs]


def test_train_returns_the_run_and_the_same_call_returns_it_again(tmp_path):
    said = []
    done = api.train("digits", workdir=tmp_path / "run", overrides=TINY, progress=False,
                     log=said.append, data__eval_limit=16)
    assert done.status == "completed" and done.workdir == tmp_path / "run"
    assert done.final == read_json(tmp_path / "run" / "summary.json")["metrics"]
    assert list(done.metrics.dropna(subset=["train/loss"])["step"]) == [2, 4]
    again = api.train(done.config, workdir=done.workdir, log=said.append)
    assert again.summary == done.summary and said[-1] == "run: already completed; not " \
        "training again"
    assert api.config(done.workdir) == api.config(None, workdir=done.workdir) == done.config


@pytest.mark.slow
def test_a_dict_spec_runs_reports_and_compares_as_the_commands_do(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = {"name": "tiny", "preset": "synthetic", "fixed": TINY,
            "grid": {"model.num_latents": [4, 8]}, "report": {"x": "model.num_latents"}}
    said = []
    rows = api.run(spec, workers=2, log=said.append)
    out = Path("results/tiny")
    assert rows.attrs == {"out": str(out), "outcome": "2 completed, 0 failed", "exit_code": 0}
    assert sorted(rows["model.num_latents"]) == [4, 8] and set(rows["status"]) == {"completed"}
    assert said == [f"2 completed, 0 failed; results in {out / 'results.csv'}"]
    assert spec_lib.load(out / "spec.toml").report == {"x": "model.num_latents"}
    assert read_json(out / "grid.json")["command"] == \
        f"perceiver-suite run {out / 'spec.toml'} --workers 2"
    tables = api.report(out / "spec.toml", metric="eval/loss")  # the spec names its folder
    assert list(tables.table["model.num_latents"]) == [4, 8]
    assert tables.markdown == out / "report" / "table.md" and "eval/loss" in \
        tables.markdown.read_text()
    assert tables.figures and all(p.suffix == ".png" and p.is_file() for p in tables.figures)
    same = api.compare(out, out)
    assert same.exit_code == 0 and list(same.table["cell"]) == ["num_latents=4",
                                                                 "num_latents=8"]
    with pytest.raises(SpecError, match="holds another sweep: seeds is"):
        api.run({**spec, "seeds": [0, 1]}, log=said.append)

