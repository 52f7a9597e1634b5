"""The worked examples work as their READMEs say: each plugin's spec runs as a grid on 2
workers, reports, and resumes bit-identically after SIGTERM; describe gives each plugin's
params and FLOPs (XLA's where it has no count of its own); the notebook executes.

Everything that loads an example's plugin runs in a process of its own, as a user's
command does: the examples register ``inverted``, a name other tests register too."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from suite.analysis.report import xla_counted
from suite.files import read_json, read_jsonl
from suite.sweeps.results import run_status

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"
INVERTED, MIXER = EXAMPLES / "inverted_cross_attention", EXAMPLES / "mixer"
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2"}
TINY = ["train.steps=30", "train.batch_size=16", "train.log_every=10",
        "train.checkpoint_every=10", "train.eval_every=0", "train.eval_train_examples=0"]


def suite_cmd(*args: str, **popen) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "suite", *args], capture_output=True,
                          text=True, env=ENV, cwd=ROOT, timeout=600, **popen)


@pytest.mark.parametrize("example,argv,params,count", [
    (INVERTED, ["model.cross_attention=inverted", "model.inverted.renorm_eps=1e-6"],
     76_908, "analytic"),  # the standard cross-attention's parameters and count
    (MIXER, ["model.kind=latent_mixer", "model.latent_mixer.depth=2"], 23_084 + 2 * 12_768,
     "XLA's count: model.kind='latent_mixer' "),  # the cross-attend and head, 2 blocks
])
def test_describe_gives_each_examples_params_and_flops(example, argv, params, count):
    done = suite_cmd("describe", "--plugin", str(example / "plugin.py"), *argv, "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["params"] == params and info["flops_count"].startswith(count)
    assert info["flops_xla"] > 0 and info["flops_analytic"] > 0
    if count != "analytic":  # no count of its own: XLA's stands in, and says so
        assert info["flops_analytic"] == info["flops_xla"]
        assert "gives no analytic FLOP count" in info["flops_count"]


@pytest.mark.parametrize("argv,message", [
    (["model.cross_attention=inverted", "model.inverted.renorm_ep=1"],
     "unknown config key 'model.inverted.renorm_ep'; did you mean "
     "'model.inverted.renorm_eps'?"),
    (["model.cross_attention=inverted", "model.inverted.renorm_eps=0"],
     "model.inverted.renorm_eps=0.0: renorm_eps=0.0 must be > 0"),
])
def test_a_misspelt_or_invalid_knob_of_an_example_is_one_line_exit_2(argv, message):
    done = suite_cmd("describe", "--plugin", str(INVERTED / "plugin.py"), *argv, "--no-xla")
    assert done.returncode == 2 and done.stderr == f"perceiver-suite: error: {message}\n"


def test_a_second_plugin_taking_an_examples_name_is_one_line_exit_2(tmp_path):
    clash = tmp_path / "clash.py"
    clash.write_text("from suite import extend\n"
                     "extend.register_cross_attention('inverted', 'math:sqrt')\n")
    done = suite_cmd("describe", "--plugin", str(INVERTED / "plugin.py"), "--plugin",
                     str(clash), "--no-xla")
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    assert f"{INVERTED / 'plugin.py'}:InvertedCrossAttention" in done.stderr
    assert "math:sqrt" in done.stderr and "Traceback" not in done.stderr


def test_a_report_says_where_its_flops_are_xlas_count():
    why = "model.kind='latent_mixer' (plugin.py:LatentMixer) gives no analytic FLOP count"
    frame = pd.DataFrame({"flops_count": ["analytic", f"XLA's count: {why}", None]})
    assert xla_counted(frame) == ["FLOPs/example: XLA's count of the compiled forward pass "
                                  f"where there is no analytic one ({why})."]
    assert xla_counted(frame.iloc[[0, 2]]) == []
    assert xla_counted(pd.DataFrame({"params": [1]})) == []  # results from before the column


def grid_cmd(example: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "suite", "run", str(example / "spec.toml"), "--out",
            str(out), "--workers", "2", *extra, *TINY]


def train_lines(run_dir: Path) -> list[dict]:
    """What a run logged at each step, its timings aside."""
    keys = ("step", "train/loss", "train/accuracy", "train/grad_norm", "learning_rate")
    return [{k: r[k] for k in keys} for r in read_jsonl(run_dir / "metrics.jsonl")
            if "train/loss" in r]


def interrupt_after_a_checkpoint(cmd: list[str], out: Path) -> int:
    """Start the grid, SIGTERM it once some run has saved step 10; its exit status."""
    proc = subprocess.Popen(cmd, env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list(out.glob("runs/*/checkpoints/10")):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("example,cells", [(INVERTED, 3), (MIXER, 2)])
def test_an_example_grid_runs_reports_and_resumes_bit_identically_after_sigterm(
        tmp_path, example, cells):
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    done = subprocess.run(grid_cmd(example, whole), env=ENV, cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    runs = sorted(p.name for p in (whole / "runs").iterdir())
    assert len(runs) == 2 * cells and all(run_status(whole / "runs" / r) == "completed"
                                          for r in runs)
    table = (whole / "report" / "table.md").read_text()
    assert table.count(" | 2/2 |") == cells  # one row per cell, both seeds completed
    said = "FLOPs/example: XLA's count of the compiled forward pass where there is no analytic"
    assert (said in table) == (example == MIXER)  # the mixer has no count of its own
    shard = f"--shard=0/{2 * cells}"  # one of the grid's runs, stopped, then resumed
    assert interrupt_after_a_checkpoint(grid_cmd(example, stopped, shard), stopped) == \
        128 + signal.SIGTERM
    assert any(run_status(p) != "completed" for p in (stopped / "runs").iterdir())
    again = subprocess.run(grid_cmd(example, stopped, shard), env=ENV, cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    resumed = sorted(p.name for p in (stopped / "runs").iterdir())
    assert len(resumed) == 1 and all(run_status(stopped / "runs" / r) == "completed"
                                     for r in resumed)
    logs = "".join((stopped / "runs" / r / "train.log").read_text() for r in resumed)
    assert "resuming from step" in logs
    for r in resumed:  # each run as the uninterrupted grid trained it, line for line
        a, b = whole / "runs" / r, stopped / "runs" / r
        assert read_json(a / "summary.json")["metrics"] == \
            read_json(b / "summary.json")["metrics"], r
        assert train_lines(a) == train_lines(b), r


@pytest.mark.slow
def test_the_notebook_executes_in_a_fresh_kernel(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    work = tmp_path / "examples"
    work.mkdir()
    shutil.copy(EXAMPLES / "notebook.ipynb", work)
    shutil.copytree(INVERTED, work / INVERTED.name, ignore=shutil.ignore_patterns("results"))
    jupyter = tmp_path / "jupyter"  # a kernel of this interpreter, found here only
    (jupyter / "kernels" / "suite-tests").mkdir(parents=True)
    (jupyter / "kernels" / "suite-tests" / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "perceiver-suite tests", "language": "python"}))
    for var, path in (("JUPYTER_PATH", jupyter), ("JUPYTER_DATA_DIR", jupyter),
                      ("JUPYTER_RUNTIME_DIR", tmp_path / "runtime"),
                      ("JUPYTER_CONFIG_DIR", tmp_path / "config"),
                      ("IPYTHONDIR", tmp_path / "ipython")):
        monkeypatch.setenv(var, str(path))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    nb = nbformat.read(work / "notebook.ipynb", as_version=4)
    nbclient.NotebookClient(nb, kernel_name="suite-tests", timeout=600,  # a cell that
                            resources={"metadata": {"path": str(work)}}).execute()  # raises fails
    printed = "".join(o.get("text", "") for cell in nb.cells for o in cell.get("outputs", []))
    assert "did you mean 'model.inverted.renorm_eps'?" in printed
    rows = (work / "scratch" / "grid" / "results.csv").read_text()
    assert rows.count(",completed,") == 2
    assert (work / "scratch" / "grid" / "report" / "index.html").is_file()
    assert read_json(work / "scratch" / "one_run" / "summary.json")["status"] == "completed"


def test_scaling_takes_a_plugins_model_by_its_kind(tmp_path):
    done = suite_cmd("scaling", "--plugin", str(MIXER / "plugin.py"), "--models",
                     "latent_mixer", "--sizes", "256", "--no-measure", "--out",
                     str(tmp_path / "scaling"))
    assert done.returncode == 0, done.stderr
    rows = (tmp_path / "scaling" / "scaling.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("latent_mixer,256,")
