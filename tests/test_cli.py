"""The command line: describe reports the paper's figures; mistakes exit 2 in one line."""

import json
import subprocess
import sys

import pytest

from suite import config as C
from suite.analysis.describe import describe
from suite.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "suite", *args],
                          capture_output=True, text=True, timeout=300)


def test_describe_json_reports_params_analytic_and_xla_flops(capsys):
    assert main(["describe", "--preset", "digits", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {"params", "flops_analytic", "flops_xla", "config"} <= set(info)
    assert info["config"]["model"]["cross_attend_every"] == 1
    # Small model, no tied k/v on a large input: XLA and the formula agree closely.
    assert info["flops_xla"] == pytest.approx(info["flops_analytic"], rel=0.25)


@pytest.mark.slow
def test_imagenet_xla_flops_match_the_analytic_figure_without_sharing():
    # Two unshared cross-attends (paper Table 6: 447.6 GFLOPs): every kind of block at
    # ImageNet shapes, at a quarter of the 8-repeat model's compile time.
    info = describe(C.build("imagenet", {"model.weight_sharing": "false",
                                         "model.num_cross_attends": "2"}))
    assert info["flops_analytic"] == pytest.approx(447.6e9, rel=0.01)
    assert info["flops_xla"] == pytest.approx(info["flops_analytic"], rel=0.03)


@pytest.mark.slow
def test_imagenet_xla_flops_are_lower_with_sharing_and_say_why():
    info = describe(C.build("imagenet", {}))
    assert info["params"] == pytest.approx(44_912_254, rel=5e-4)
    assert info["flops_xla"] < info["flops_analytic"]
    assert "computes them once" in info["flops_xla_note"]


@pytest.mark.parametrize("override,needle", [
    ("model.num_latents=0", "model.num_latents=0"),
    ("model.fourier_bands=-1", "model.fourier_bands=-1"),
    ("model.bogus=1", "model.bogus"),
    ("model.num_latents=abc", "model.num_latents='abc'"),
])
def test_bad_overrides_exit_2_with_one_line_and_no_traceback(override, needle):
    result = run_cli("describe", "--no-xla", override)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0]
    assert "Traceback" not in result.stderr


def test_help_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0 and "describe" in result.stdout


@pytest.mark.parametrize("argv", [
    ["describe", "--no-xla", "model.num_latents=16", "--json"],
    ["describe", "--json", "--no-xla", "model.num_latents=16"],
    ["describe", "model.num_latents=16", "--json", "--no-xla", "seed=3"],
])
def test_overrides_may_come_before_or_after_options(argv, capsys):
    assert main(argv) == 0
    config = json.loads(capsys.readouterr().out)["config"]
    assert config["model"]["num_latents"] == 16


def test_data_and_run_take_overrides_after_options(tmp_path, capsys):
    assert main(["data", "digits", "--json", "data.train_limit=100"]) == 0
    assert json.loads(capsys.readouterr().out)["train_examples"] == 100
    spec = tmp_path / "s.toml"
    spec.write_text('preset = "digits"\n[grid]\n"model.num_latents" = [8]\n')
    assert main(["run", str(spec), "--dry-run", "--out", str(tmp_path / "o"),
                 "train.steps=7"]) == 0
    assert "1 runs" in capsys.readouterr().out


def test_a_stray_argument_is_still_an_error(capsys):
    assert main(["describe", "--no-xla", "oops"]) == 2
    assert "override 'oops' is not of the form key=value" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["describe", "model.num_latents=16", "--no-xla", "oops"])
    assert exit_.value.code == 2 and "unrecognized arguments: oops" in capsys.readouterr().err
