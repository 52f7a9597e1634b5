"""Reports: seeds aggregate to mean ± std, failed runs stay visible, outputs are well formed."""

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from suite.analysis.plots import in_spec_order, level_label
from suite.analysis.report import aggregate, load_frame, write_report
from suite.analysis.tables import report_spec

SPEC = '''name = "toy"
description = "A hand-made results folder."
preset = "digits"
seeds = [0, 1, 2]
[grid]
"model.num_latents" = [8, 16]
[report]
metric = "eval/accuracy"
'''


def make_run(out: Path, run_id: str, latents: int, seed: int, status="completed", acc=None):
    run = out / "runs" / run_id
    run.mkdir(parents=True)
    config = {"seed": seed, "model": {"kind": "perceiver", "num_latents": latents,
                                      "max_resolution": None},
              "data": {"task": "digits", "index_dims": [8, 8]}, "train": {"steps": 10}}
    (run / "config.json").write_text(json.dumps(config))
    summary = {"status": status, "metrics": {}, "params": 1000 * latents,
               "flops_forward_analytic": 1e6 * latents, "wall_seconds": 5.0,
               "machine": "test machine"}
    if status == "completed":
        summary["metrics"] = {"eval/accuracy": acc, "eval/loss": 1 - acc,
                              "train/accuracy": min(1.0, acc + 0.05), "train/loss": 0.5}
    else:
        summary["reason"] = "non-finite loss within steps 1..10"
    (run / "summary.json").write_text(json.dumps(summary))
    lines = [{"step": 5, "train/loss": 1.0, "train/accuracy": 0.5},
             {"step": 10, "eval/loss": 0.9, "eval/accuracy": acc or 0.0}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


@pytest.fixture
def results(tmp_path):
    out = tmp_path / "toy"
    for seed, acc in enumerate([0.80, 0.90, 0.85]):
        make_run(out, f"n8_s{seed}", 8, seed, acc=acc)
    make_run(out, "n16_s0", 16, 0, acc=0.95)
    make_run(out, "n16_s1", 16, 1, acc=0.97)
    make_run(out, "n16_s2", 16, 2, status="failed")
    (out / "spec.toml").write_text(SPEC)
    return out


def test_seeds_aggregate_to_mean_and_sample_std(results):
    agg = aggregate(load_frame(results), ["model.num_latents"], ["eval/accuracy"])
    row8 = agg[agg["model.num_latents"] == 8].iloc[0]
    assert row8["eval/accuracy mean"] == pytest.approx(0.85)
    assert row8["eval/accuracy std"] == pytest.approx(0.05)  # ddof=1 over 0.80, 0.90, 0.85
    assert row8["completed"] == 3
    row16 = agg[agg["model.num_latents"] == 16].iloc[0]
    assert row16["completed"] == 2 and row16["failed"] == 1 and row16["runs"] == 3


def test_tables_show_mean_pm_std_mark_the_best_and_list_failed_runs(results):
    write_report(results, plots=False)
    md = (results / "report" / "table.md").read_text()
    assert "85.0 ± 5.0" in md and "**96.0 ± 1.4**" in md
    assert "2/3" in md and "n16_s2" in md and "non-finite loss" in md
    assert "test machine" in md and "perceiver-suite run ablations/toy.toml" in md
    table = pd.read_csv(results / "report" / "table.csv")
    assert list(table["failed"]) == [0, 1]


def test_markdown_table_is_well_formed(results):
    write_report(results, plots=False)
    rows = [ln for ln in (results / "report" / "table.md").read_text().splitlines()
            if ln.startswith("|")]
    assert len(rows) == 4  # header, rule, 2 configurations
    assert len({ln.count("|") for ln in rows}) == 1


def test_latex_table_is_balanced_and_escaped(results):
    write_report(results, plots=False)
    tex = (results / "report" / "table.tex").read_text()
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1
    assert r"\textbf{96.0 $\pm$ 1.4}" in tex
    assert "eval/accuracy (\\%)" in tex and "model.num\\_latents" in tex
    body = [ln for ln in tex.splitlines() if ln.endswith(r"\\")]
    assert len({ln.count("&") for ln in body}) == 1  # every row has every column


class _Checker(HTMLParser):
    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.images = [], 0

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images += 1
            assert dict(attrs)["src"].startswith("data:image/png;base64,")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack.pop() == tag, f"unbalanced </{tag}>"


def test_plots_are_written_and_index_html_is_valid_and_self_contained(results):
    written = write_report(results)
    for name in ("eval_accuracy_vs_num_latents.png", "eval_accuracy_vs_num_latents.svg",
                 "curves.png", "eval_accuracy_vs_flops.png"):
        assert name in written and written[name].stat().st_size > 1000
    checker = _Checker()
    checker.feed((results / "report" / "index.html").read_text())
    assert checker.stack == [] and checker.images >= 3


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium not installed")
def test_index_html_renders_in_headless_chromium(results, tmp_path):
    write_report(results)
    shot = tmp_path / "shot.png"
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={shot}", "--window-size=1200,2000",
         (results / "report" / "index.html").as_uri()],
        check=True, capture_output=True, timeout=120)
    assert shot.stat().st_size > 10_000


def test_a_folder_without_runs_is_a_clear_error(tmp_path):
    from suite.errors import SuiteError

    with pytest.raises(SuiteError, match="no run folders"):
        write_report(tmp_path)


def partial_grid(tmp_path, failing_sharing=None, completed=True):
    """latents x weight sharing x 2 seeds; every run of one sharing level (or all) failed."""
    out = tmp_path / "partial"
    for latents in (8, 16):
        for sharing in (True, False):
            for seed in (0, 1):
                run = out / "runs" / f"n{latents}_{sharing}_s{seed}"
                run.mkdir(parents=True)
                config = {"seed": seed, "model": {"num_latents": latents,
                                                  "weight_sharing": sharing},
                          "data": {"task": "digits"}, "train": {"steps": 10}}
                (run / "config.json").write_text(json.dumps(config))
                ok = completed and sharing != failing_sharing
                summary = ({"status": "completed", "metrics": {
                    "eval/accuracy": 0.5 + latents / 100 + seed / 100, "eval/loss": 1.0,
                    "train/accuracy": 0.6, "train/loss": 0.9}} if ok else
                    {"status": "failed", "failure": "diverged", "metrics": {},
                     "reason": "non-finite loss within steps 1..10"})
                (run / "summary.json").write_text(json.dumps(summary))
    (out / "spec.toml").write_text('name = "partial"\npreset = "digits"\nseeds = [0, 1]\n'
                                   '[grid]\n"model.num_latents" = [8, 16]\n'
                                   '"model.weight_sharing" = [true, false]\n'
                                   '[report]\nx = "model.weight_sharing"\n'
                                   'hue = "model.num_latents"\n')
    return out


@pytest.mark.parametrize("failing,completed", [(False, True), (True, True), (None, False)],
                         ids=["one hue level diverged", "the other", "nothing completed"])
def test_partial_grids_still_get_tables_pages_and_the_plots_that_make_sense(
        tmp_path, failing, completed):
    out = partial_grid(tmp_path, failing, completed)
    written = write_report(out)
    for name in ("table.md", "table.tex", "table.csv", "index.html"):
        assert name in written
    md = (out / "report" / "table.md").read_text()
    assert "Runs that did not complete" in md and "non-finite loss" in md
    plots = [n for n in written if n.endswith(".png")]
    if completed:  # the metric against each knob, with the surviving level alone
        assert "eval_accuracy_vs_weight_sharing.png" in plots
        assert "eval_accuracy_vs_num_latents.png" in plots
    else:
        assert not any(n.startswith("eval_accuracy_vs") for n in plots)


def test_categorical_plots_follow_the_order_the_spec_lists(tmp_path):
    (tmp_path / "spec.toml").write_text(
        '[grid]\n"data.permutation" = ["none", "fixed"]\n'
        '[zip]\n"model.kind" = ["perceiver", "convnet"]\n')
    frame = pd.DataFrame({"data.permutation": ["fixed", "none"], "model.kind": ["convnet"] * 2,
                          "eval/accuracy": [0.5, 0.6], "status": "completed"})
    spec = report_spec(tmp_path, frame)
    assert spec.levels == {"data.permutation": ["none", "fixed"],
                           "model.kind": ["perceiver", "convnet"]}
    assert in_spec_order(frame["data.permutation"], spec.levels["data.permutation"]) == [
        "none", "fixed"]
    assert in_spec_order(pd.Series(["b", "a"]), None) == ["a", "b"]  # no spec: sorted


def test_numeric_legends_read_as_the_spec_wrote_them_in_its_order():
    # A float column (112.0) against the spec's ints (7, 28, 112): labels match, no '.0'.
    column = pd.Series([112.0, 7.0, 28.0, 112.0])
    assert in_spec_order(column, [7, 28, 112]) == ["7", "28", "112"]
    assert in_spec_order(column, None) == ["7", "28", "112"]  # numeric, not "112" < "28"
    assert level_label(True) == "True" and level_label(0.5) == "0.5"


def test_a_figure_saved_twice_is_byte_identical(tmp_path):
    import matplotlib.pyplot as plt

    from suite.analysis.plots import _save

    def draw(name):
        fig, ax = plt.subplots()
        ax.plot([1, 2, 3], [0.5, 0.7, 0.6])
        return [p.read_bytes() for p in _save(fig, tmp_path / name)]

    assert draw("a") == draw("b")  # no dates, no random ids: reports diff only on change
