"""`sweep`: a grid typed on the command line is written as the spec it stands for
(values typed as overrides type them), run exactly as `run` runs that spec, and refused
where the folder holds another sweep; `run` ends with the report's table."""

import tomllib

import pytest

from suite.cli import main
from suite.cli.reports import table_excerpt
from suite.errors import SpecError, SuiteError
from suite.sweeps import sweep as sweep_lib
from suite.sweeps.results import run_status


def spec_of(*items, zips=(), seeds=(0,), name="s"):
    return sweep_lib.table("digits", list(items), list(zips), list(seeds), name)


def test_one_value_is_fixed_a_comma_list_a_grid_axis_and_zip_lists_go_together():
    spec = spec_of("model.num_latents=8,16", "train.steps=30", "model.weight_sharing=true,false",
                   zips=["model.fourier_bands=2,4", "model.max_resolution=4,4;8,8"],
                   seeds=(0, 1))
    assert spec["fixed"] == {"train.steps": 30}
    assert spec["grid"] == {"model.num_latents": [8, 16], "model.weight_sharing": [True, False]}
    assert spec["zip"] == {"model.fourier_bands": [2, 4],
                           "model.max_resolution": [[4.0, 4.0], [8.0, 8.0]]}
    assert tomllib.loads(sweep_lib.to_toml(spec)) == {
        "name": "s", "preset": "digits", "seeds": [0, 1], "fixed": spec["fixed"],
        "grid": spec["grid"], "zip": spec["zip"]}


@pytest.mark.parametrize("item,section,value", [
    ("data.index_dims=8,8", "fixed", [8, 8]),  # a tuple's commas are its own
    ("data.index_dims=8,8;4,16", "grid", [[8, 8], [4, 16]]),
    ("data.index_dims=8x8,4x16", "grid", [[8, 8], [4, 16]]),
    ("model.fourier_bands=video=32,audio=64", "fixed", {"audio": 64, "video": 32}),
    ("model.cross_qk_channels=none,16", "grid", ["none", 16]),  # TOML has no null
    ("train.learning_rate=1e-3,3e-3", "grid", [0.001, 0.003]),
    ("train.mesh=data=-1,fsdp=2;", "fixed", "data=-1,fsdp=2"),
    ("model.position_encoding=fourier,learned", "grid", ["fourier", "learned"]),
])
def test_values_are_parsed_as_the_override_parser_parses_them(item, section, value):
    spec = spec_of(item)
    assert list(spec[section].values()) == [value]
    assert tomllib.loads(sweep_lib.to_toml(spec))[section] == spec[section]


def test_plugins_are_recorded_as_the_spec_records_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_variants.py").write_text("")
    spec = sweep_lib.table("digits", ["train.steps=30"], [], [0], "s",
                           plugins=["my_variants.py", "my_pkg.variants"])
    assert spec["plugins"] == [str(tmp_path / "my_variants.py"), "my_pkg.variants"]
    assert tomllib.loads(sweep_lib.to_toml(spec))["plugins"] == spec["plugins"]


@pytest.mark.parametrize("items,message", [
    (["model.num_latents=8,abc"], "model.num_latents='abc' is not an integer"),
    (["seed=1,2"], "--seeds 0,1,2"),
    (["model.num_latents=8", "model.num_latents=16"], "model.num_latents is given twice"),
    (["model.bogus=1"], "unknown config key 'model.bogus'"),
])
def test_mistakes_name_the_key(items, message):
    with pytest.raises(SuiteError, match=message):
        sweep_lib.table("digits", items, [], [0], "s")


def test_a_mistake_in_the_grid_writes_nothing_and_names_no_scratch_file(tmp_path, capsys):
    out = tmp_path / "z"
    assert main(["sweep", "--zip", "model.fourier_bands=2,4", "model.num_latents=8,16,32",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["perceiver-suite: error: sweep: [zip] lists must have equal lengths "
                   "(model.fourier_bands has 2, model.num_latents has 3)"]
    assert not out.exists()


def test_a_folder_holding_another_sweep_is_refused_naming_the_key_unless_forced(tmp_path):
    first = sweep_lib.to_toml(spec_of("model.num_latents=8,16", "train.steps=30"))
    path = sweep_lib.write(tmp_path, first, force=False)
    assert sweep_lib.write(tmp_path, first, force=False) == path  # the same sweep: kept
    other = sweep_lib.to_toml(spec_of("model.num_latents=8,32", "train.steps=30"))
    with pytest.raises(SpecError) as refused:
        sweep_lib.write(tmp_path, other, force=False)
    assert str(refused.value) == (
        f"{path} holds another sweep: model.num_latents is [grid] [8, 16] there, [grid] "
        "[8, 32] here; choose another --out, or --force to replace it")
    moved = sweep_lib.to_toml(spec_of("model.num_latents=8,16", "train.steps=30,60"))
    with pytest.raises(SpecError, match="train.steps is \\[fixed\\] 30 there, \\[grid\\]"):
        sweep_lib.write(tmp_path, moved, force=False)
    sweep_lib.write(tmp_path, other, force=True)
    assert tomllib.loads(path.read_text())["grid"] == {"model.num_latents": [8, 32]}


def test_the_cli_refuses_another_sweep_in_one_line_before_training(tmp_path, capsys):
    out = tmp_path / "nl"
    sweep_lib.write(out, sweep_lib.to_toml(spec_of("model.num_latents=8,16", name="nl")),
                    force=False)
    assert main(["sweep", "--preset", "digits", "model.num_latents=8,16", "--seeds", "0,1",
                 "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"perceiver-suite: error: {out / 'spec.toml'} holds another sweep: seeds is [0] "
        "there, [0, 1] here; choose another --out, or --force to replace it"]
    assert not (out / "runs").exists()


def test_a_large_table_shows_its_top_rows_and_says_where_the_rest_is(tmp_path):
    md = tmp_path / "table.md"
    rows = [f"| {i} | 0.5 |" for i in range(30)]
    md.write_text("# t\n\ntext\n\n| n | acc |\n|--:|--:|\n" + "\n".join(rows) + "\n\n- note\n")
    assert table_excerpt(md).splitlines() == [
        "| n | acc |", "|--:|--:|", *rows[:15], f"... 15 more in {md}"]
    assert table_excerpt(md, max_rows=30).splitlines()[-1] == rows[-1]


@pytest.mark.slow
def test_a_sweep_trains_writes_its_spec_prints_the_table_and_a_rerun_skips_it(tmp_path,
                                                                               capsys):
    out = tmp_path / "nl"
    argv = ["sweep", "--preset", "digits", "model.num_latents=4,8", "--seeds", "0,1",
            "train.steps=10", "train.log_every=5", "train.checkpoint_every=10",
            "model.latent_dim=16", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "4 completed, 0 failed" in printed
    table = [line for line in printed.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 2 and "num_latents" in table[0]  # a header, 2 cells
    assert f"report: {out / 'report' / 'index.html'}" in printed
    spec = tomllib.loads((out / "spec.toml").read_text())
    assert spec["seeds"] == [0, 1] and spec["grid"] == {"model.num_latents": [4, 8]}
    assert spec["fixed"]["train.steps"] == 10 and spec["name"] == "nl"
    runs = sorted((out / "runs").iterdir())
    assert len(runs) == 4 and all(run_status(r) == "completed" for r in runs)
    mtimes = [(r / "summary.json").stat().st_mtime for r in runs]

    assert main(argv) == 0  # the same sweep again: nothing trains
    captured = capsys.readouterr()
    assert "4 runs: 4 already completed" in captured.err and "0 to run" in captured.err
    assert [(r / "summary.json").stat().st_mtime for r in runs] == mtimes
    assert main(["run", str(out / "spec.toml"), "--out", str(out), "--no-report"]) == 0
    assert "4 completed, 0 failed" in capsys.readouterr().out
    assert [(r / "summary.json").stat().st_mtime for r in runs] == mtimes

    assert main(["report", str(out)]) == 0  # the table first, then one line
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[:4] == table and lines[4].startswith("wrote ")
    assert f"files to {out / 'report'}" in lines[4]
