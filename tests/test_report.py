"""Reports: a report is one experiment's (other run folders listed apart, missing runs
listed), cells aggregate their seeds to mean ± std with 95% intervals, cells that seed
noise cannot tell from the best are bold, every plotted line is one cell, outputs are
well formed."""

import base64
import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from suite.analysis import experiment, plots
from suite.analysis.plots import in_spec_order, level_label
from suite.analysis.report import write_report
from suite.analysis.tables import aggregate, report_spec
from suite.errors import SuiteError

SPEC = '''name = "toy"
description = "A hand-made results folder."
preset = "digits"
seeds = [0, 1, 2]
[grid]
"model.num_latents" = [8, 16]
[report]
metric = "eval/accuracy"
'''


def make_run(out: Path, run_id: str, latents: int, seed: int, status="completed", acc=None,
             steps=10, **config_extra):
    run = out / "runs" / run_id
    run.mkdir(parents=True)
    config = {"seed": seed, "model": {"kind": "perceiver", "num_latents": latents,
                                      "max_resolution": None, **config_extra},
              "data": {"task": "digits", "index_dims": [8, 8]}, "train": {"steps": steps}}
    (run / "config.json").write_text(json.dumps(config))
    summary = {"status": status, "metrics": {}, "params": 1000 * latents,
               "flops_forward_analytic": 1e6 * latents, "flops_per_example_analytic": 3e6 * latents,
               "wall_seconds": 5.0 * latents, "memory_predicted_bytes": 2**20 * latents,
               "machine": "test machine"}
    if status == "completed":
        summary["metrics"] = {"eval/accuracy": acc, "eval/loss": 1 - acc,
                              "train/accuracy": min(1.0, acc + 0.05), "train/loss": 0.5,
                              "train_eval/accuracy": min(1.0, acc + 0.03)}
    else:
        summary["reason"] = "non-finite loss within steps 1..10"
    (run / "summary.json").write_text(json.dumps(summary))
    lines = [{"step": 5, "train/loss": 1.0, "train/accuracy": 0.5},
             {"step": 10, "eval/loss": 0.9, "eval/accuracy": acc or 0.0,
              "train_eval/loss": 0.8, "train_eval/accuracy": acc or 0.0}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def record(out: Path, runs: dict[str, dict], name="toy", spec=SPEC, configs=None):
    """What ``perceiver-suite run`` records before training: the spec and its run set."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.toml").write_text(spec)
    (out / "grid.json").write_text(json.dumps({
        "name": name, "spec": f"ablations/{name}.toml", "overrides": {},
        "command": f"perceiver-suite run ablations/{name}.toml",
        "runs": [{"id": i, "varied": v, "config": (configs or {}).get(i, {})}
                 for i, v in runs.items()]}))


@pytest.fixture
def results(tmp_path):
    out = tmp_path / "toy"
    runs = {}
    for seed, acc in enumerate([0.80, 0.82, 0.81]):
        make_run(out, f"n8_s{seed}", 8, seed, acc=acc)
        runs[f"n8_s{seed}"] = {"model.num_latents": 8, "seed": seed}
    make_run(out, "n16_s0", 16, 0, acc=0.95)
    make_run(out, "n16_s1", 16, 1, acc=0.97)
    make_run(out, "n16_s2", 16, 2, status="failed")
    runs.update({f"n16_s{s}": {"model.num_latents": 16, "seed": s} for s in range(3)})
    record(out, runs)
    return out


def test_seeds_aggregate_to_mean_and_sample_std(results):
    exp = experiment.load(results)
    agg = aggregate(exp.frame, ["model.num_latents"], ["eval/accuracy"])
    row8 = agg[agg["model.num_latents"] == 8].iloc[0]
    assert row8["eval/accuracy mean"] == pytest.approx(0.81)
    assert row8["eval/accuracy std"] == pytest.approx(0.01)  # ddof=1 over 0.80, 0.82, 0.81
    assert row8["completed"] == 3
    row16 = agg[agg["model.num_latents"] == 16].iloc[0]
    assert row16["completed"] == 2 and row16["failed"] == 1 and row16["runs"] == 3


def test_tables_show_mean_pm_std_intervals_and_tests_and_list_failed_runs(results):
    write_report(results, plots=False)
    md = (results / "report" / "table.md").read_text()
    # 3 runs against 2 cannot be told apart at 5%: the smallest p of their 10 relabellings
    # is 0.1, so both cells are bold
    assert "**81.0 ± 1.0**" in md and "**96.0 ± 1.4**" in md
    assert "2/3" in md and "n16_s2" in md and "non-finite loss" in md
    assert "test machine" in md and "perceiver-suite run ablations/toy.toml" in md
    assert "permutation (unpaired)" in md  # n16 lost a seed: the cells share seeds 0, 1
    table = pd.read_csv(results / "report" / "table.csv")
    assert list(table["failed"]) == [0, 1]
    assert list(table["tied_with_best"]) == [True, True]
    assert table.loc[0, "p_vs_best"] == pytest.approx(0.1) == table.loc[0, "p_min_vs_best"]
    low, high = table.loc[0, ["ci95_low", "ci95_high"]]
    assert low < 0.81 < high and high - low == pytest.approx(2 * 4.303 * 0.01 / 3**0.5, rel=1e-3)
    assert table.loc[0, "delta_vs_best"] == pytest.approx(0.81 - 0.96)


def test_a_report_is_the_specs_runs_and_lists_other_run_folders_apart(results):
    make_run(results, "n8_quick", 8, 0, acc=0.10, steps=3)  # run SPEC train.steps=3 --out
    exp = experiment.load(results)
    assert "n8_quick" not in set(exp.frame["run_id"])
    assert list(exp.others["run_id"]) == ["n8_quick"]
    assert "train.steps=3" in exp.others["differs"].iloc[0]
    write_report(results, plots=False)
    md = (results / "report" / "table.md").read_text()
    assert "81.0 ± 1.0" in md and "3/3" in md  # the quick run is not a fourth seed
    assert "## Run folders not in this spec (not averaged in)" in md and "n8_quick" in md


def test_a_run_that_never_started_is_listed_as_missing(results):
    shutil.rmtree(results / "runs" / "n8_s2")  # another shard's, or a stopped grid's
    write_report(results, plots=False)
    md = (results / "report" / "table.md").read_text()
    assert "2/3" in md and "`n8_s2` (missing)" in md and "another shard" in md


def test_two_configs_in_one_cell_are_an_error_not_a_mean(results):
    config = json.loads((results / "runs" / "n8_s1" / "config.json").read_text())
    config["model"]["latent_dim"] = 99
    (results / "runs" / "n8_s1" / "config.json").write_text(json.dumps(config))
    with pytest.raises(SuiteError, match=r"num_latents=8 holds runs of two configs "
                                         r"\(model.latent_dim"):
        write_report(results, plots=False)


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


def test_a_reference_cell_replaces_the_best_as_what_cells_are_tested_against(results):
    write_report(results, plots=False, reference={"model.num_latents": "8"})
    table = pd.read_csv(results / "report" / "table.csv")
    assert list(table["test_vs_reference"]) == ["same cell", "permutation (unpaired)"]
    assert table.loc[1, "delta_vs_reference"] == pytest.approx(0.96 - 0.81)
    with pytest.raises(SuiteError, match="matches 0 cells"):
        write_report(results, plots=False, reference={"model.num_latents": "32"})


def test_a_reference_naming_some_keys_tests_each_cell_against_its_own_rows_reference(tmp_path):
    """``reference = {"model.num_blocks": "1"}`` over num_latents x num_blocks: each
    2-block cell is paired with the 1-block cell of its own num_latents (as a permuted
    model is paired with its raw one), Holm-adjusted over those cells only."""
    out = tmp_path / "rows"
    runs = {}
    accs = {(8, 1): [0.80, 0.82, 0.81], (8, 2): [0.70, 0.72, 0.71],
            (16, 1): [0.95, 0.96, 0.97], (16, 2): [0.95, 0.96, 0.97]}
    for (latents, blocks), values in accs.items():
        for seed, acc in enumerate(values):
            run_id = f"n{latents}_b{blocks}_s{seed}"
            make_run(out, run_id, latents, seed, acc=acc, num_blocks=blocks)
            runs[run_id] = {"model.num_latents": latents, "model.num_blocks": blocks,
                            "seed": seed}
    spec = SPEC.replace('"model.num_latents" = [8, 16]',
                        '"model.num_latents" = [8, 16]\n"model.num_blocks" = [1, 2]')
    record(out, runs, spec=spec)
    write_report(out, plots=False, reference={"model.num_blocks": "1"})
    table = pd.read_csv(out / "report" / "table.csv").set_index(
        ["model.num_latents", "model.num_blocks"])
    assert table.loc[(8, 2), "delta_vs_reference"] == pytest.approx(-0.10)
    assert table.loc[(16, 2), "delta_vs_reference"] == pytest.approx(0.0)
    assert table.loc[(8, 2), "p_vs_reference"] == pytest.approx(0.25)  # 3 paired seeds
    assert table.loc[(8, 2), "p_vs_reference_holm"] == pytest.approx(0.5)  # k = 2
    assert table.loc[(16, 2), "reference_cell"] == "model.num_latents=16, model.num_blocks=1"
    assert list(table["test_vs_reference"]).count("same cell") == 2
    notes = (out / "report" / "table.md").read_text()
    assert "its own reference cell (model.num_blocks=1, the same other keys)" in notes
    assert "Holm (k=2)" in notes


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


def test_plots_and_their_data_are_written_and_index_html_is_valid_and_self_contained(results):
    written = write_report(results)
    for name in ("eval_accuracy_vs_num_latents.png", "eval_accuracy_vs_num_latents.svg",
                 "curves.png", "eval_accuracy_pareto.png"):
        assert name in written and written[name].stat().st_size > 1000
    data = pd.read_csv(results / "report" / "eval_accuracy_vs_num_latents.csv")
    assert len(data) == 5 and set(data["seed"]) == {0, 1, 2}  # one row per cell and seed
    checker = _Checker()
    html = (results / "report" / "index.html").read_text()
    checker.feed(html)
    assert checker.stack == [] and checker.images >= 3
    assert "white-space:nowrap" in html and 'class="tied"' in html
    assert html.index("perceiver-suite run ablations/toy.toml") < html.index("<table>")


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium not installed")
def test_index_html_renders_in_headless_chromium(results, tmp_path):
    write_report(results)
    shot = tmp_path / "shot.png"
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={shot}", "--window-size=1280,2000",
         (results / "report" / "index.html").as_uri()],
        check=True, capture_output=True, timeout=120)
    assert shot.stat().st_size > 10_000


def test_committed_results_without_run_folders_redraw_from_results_csv(results):
    from suite.sweeps.results import write_results_csv

    write_report(results, plots=False)
    before = pd.read_csv(results / "report" / "table.csv")
    write_results_csv(results)
    shutil.rmtree(results / "runs")  # a clone: run folders are never committed
    written = write_report(results)
    after = pd.read_csv(results / "report" / "table.csv")
    pd.testing.assert_frame_equal(before, after)
    assert "eval_accuracy_vs_num_latents.png" in written and "curves.png" not in written
    md = (results / "report" / "table.md").read_text()
    assert "final row from" in md and "no learning curves" in md and "n16_s2" in md


def test_a_clone_keeps_the_curves_and_attention_maps_it_cannot_redraw(results):
    from suite.sweeps.results import write_results_csv

    write_report(results)
    maps = results / "report" / "attention_8.png"
    maps.write_bytes(b"maps an earlier report drew")
    curves = (results / "report" / "curves.png").read_bytes()
    write_results_csv(results)
    shutil.rmtree(results / "runs")  # a clone: run folders are never committed
    (results / "report" / "eval_accuracy_vs_seed.png").write_bytes(b"stale")
    written = write_report(results)
    assert "curves.png" not in written and "attention_8.png" not in written  # not redrawn
    assert (results / "report" / "curves.png").read_bytes() == curves
    assert maps.read_bytes() == b"maps an earlier report drew"
    assert not (results / "report" / "eval_accuracy_vs_seed.png").exists()  # still stale
    md = (results / "report" / "table.md").read_text()
    assert "kept as an earlier report drew them (attention_8.png, curves.png)" in md
    html = (results / "report" / "index.html").read_text()
    assert base64.b64encode(curves).decode() in html


def test_a_report_with_run_folders_removes_the_curves_it_no_longer_draws(results):
    (results / "report").mkdir()
    (results / "report" / "curves.png").write_bytes(b"an older grid's curves")
    for run in (results / "runs").iterdir():
        (run / "metrics.jsonl").write_text("")
    written = write_report(results)
    assert "curves.png" not in written and not (results / "report" / "curves.png").exists()


def test_an_unreadable_results_csv_is_one_line(tmp_path):
    (tmp_path / "results.csv").write_text("just,a\nheader,row\n")
    with pytest.raises(SuiteError, match="results.csv: not a results table"):
        write_report(tmp_path)


def test_a_folder_without_runs_is_a_clear_error(tmp_path):
    with pytest.raises(SuiteError, match="no run folders"):
        write_report(tmp_path)


def partial_grid(tmp_path, failing_sharing=None, completed=True):
    """latents x weight sharing x 2 seeds; every run of one sharing level (or all) failed."""
    out = tmp_path / "partial"
    runs = {}
    for latents in (8, 16):
        for sharing in (True, False):
            for seed in (0, 1):
                run_id = f"n{latents}_{sharing}_s{seed}"
                run = out / "runs" / run_id
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
                runs[run_id] = {"model.num_latents": latents, "model.weight_sharing": sharing,
                                "seed": seed}
    record(out, runs, name="partial", spec='name = "partial"\npreset = "digits"\n'
           'seeds = [0, 1]\n[grid]\n"model.num_latents" = [8, 16]\n'
           '"model.weight_sharing" = [true, false]\n'
           '[report]\nx = "model.weight_sharing"\nhue = "model.num_latents"\n')
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
    assert "Runs of this spec that did not complete" in md and "non-finite loss" in md
    plots_written = [n for n in written if n.endswith(".png")]
    if completed:  # the metric against the knob that still varies, one level alone on the other
        assert "eval_accuracy_vs_num_latents.png" in plots_written
    else:
        assert not any(n.startswith("eval_accuracy_vs") for n in plots_written)


def hidden_knob_frame() -> tuple[pd.DataFrame, object]:
    """bands (x) x resolution (hue) x sharing (on neither axis), 2 seeds each."""
    rows = [{"run_id": f"b{b}_r{r}_s{s}_{sh}", "status": "completed", "seed": s,
             "model.fourier_bands": b, "model.max_resolution": r, "model.weight_sharing": sh,
             "eval/accuracy": 0.5 + b / 100 + (0.2 if sh else 0.0) + s / 1000}
            for b in (1, 4) for r in (7, 28) for sh in (True, False) for s in (0, 1)]
    frame = pd.DataFrame(rows)
    exp = experiment.Experiment(frame, pd.DataFrame(), ["model.fourier_bands",
                                "model.max_resolution", "model.weight_sharing"], None, "test")
    return frame, exp


def test_a_knob_on_neither_axis_becomes_facets_so_each_line_is_one_cell(tmp_path):
    frame, exp = hidden_knob_frame()
    spec = report_spec(tmp_path, exp)
    spec.x, spec.hue = "model.fourier_bands", "model.max_resolution"
    legend, legend_keys, facets = plots.layout(frame, spec, spec.x, spec.hue)
    assert legend_keys == ["model.max_resolution"] and facets == ["model.weight_sharing"]
    paths = plots.metric_vs_knob(frame, spec, spec.x, spec.hue, tmp_path)
    data = pd.read_csv(tmp_path / "eval_accuracy_vs_fourier_bands.csv")
    assert len(data) == 16  # 8 cells x 2 seeds: every point of the figure is one cell's seeds
    per_point = data.groupby(["facet", "legend", "model.fourier_bands"]).size()
    assert len(per_point) == 8 and set(per_point) == {2}
    assert any(p.suffix == ".png" for p in paths)


def test_zip_partners_of_the_legend_join_it_instead_of_being_averaged(tmp_path):
    rows = [{"run_id": f"{k}_{p}_{perm}_{s}", "status": "completed", "seed": s,
             "model.kind": k, "model.position_encoding": p, "data.permutation": perm,
             "eval/accuracy": 0.7 + (0.05 if p == "fourier" else 0.0)}
            for k, p in (("perceiver", "fourier"), ("perceiver", "learned"),
                         ("convnet", "fourier")) for perm in ("none", "fixed") for s in (0, 1)]
    frame = pd.DataFrame(rows)
    exp = experiment.Experiment(frame, pd.DataFrame(), ["data.permutation", "model.kind",
                                "model.position_encoding"], None, "test")
    spec = report_spec(tmp_path, exp)
    spec.x, spec.hue = "data.permutation", "model.kind"
    spec.zip_keys = ["model.kind", "model.position_encoding"]
    _, legend_keys, facets = plots.layout(frame, spec, spec.x, spec.hue)
    assert legend_keys == ["model.kind", "model.position_encoding"] and facets == []
    plots.metric_vs_knob(frame, spec, spec.x, spec.hue, tmp_path)
    data = pd.read_csv(tmp_path / "eval_accuracy_vs_permutation.csv")
    assert sorted(set(data["legend"])) == ["convnet, fourier", "perceiver, fourier",
                                           "perceiver, learned"]


def test_categorical_plots_follow_the_order_the_spec_lists(tmp_path):
    (tmp_path / "spec.toml").write_text(
        '[grid]\n"data.permutation" = ["none", "fixed"]\n'
        '[zip]\n"model.kind" = ["perceiver", "convnet"]\n')
    frame = pd.DataFrame({"data.permutation": ["fixed", "none"], "model.kind": ["convnet"] * 2,
                          "eval/accuracy": [0.5, 0.6], "status": "completed"})
    exp = experiment.Experiment(frame, pd.DataFrame(), ["data.permutation", "model.kind"],
                                None, "test")
    spec = report_spec(tmp_path, exp)
    assert spec.levels == {"data.permutation": ["none", "fixed"],
                           "model.kind": ["perceiver", "convnet"]}
    assert spec.zip_keys == ["model.kind"]
    assert in_spec_order(frame["data.permutation"], spec.levels["data.permutation"]) == [
        "none", "fixed"]
    assert in_spec_order(pd.Series(["b", "a"]), None) == ["a", "b"]  # no spec: sorted


def test_numeric_legends_read_as_the_spec_wrote_them_in_its_order():
    # A float column (112.0) against the spec's ints (7, 28, 112): labels match, no '.0'.
    column = pd.Series([112.0, 7.0, 28.0, 112.0])
    assert in_spec_order(column, [7, 28, 112]) == ["7", "28", "112"]
    assert in_spec_order(column, None) == ["7", "28", "112"]  # numeric, not "112" < "28"
    assert level_label(True) == "True" and level_label(0.5) == "0.5"


def test_the_pareto_front_joins_the_cells_no_other_beats_on_both_axes():
    cost = pd.Series([1.0, 2.0, 3.0, 4.0], index=list("abcd"))
    metric = pd.Series([0.5, 0.4, 0.7, 0.7], index=list("abcd"))
    assert plots.frontier(cost, metric, higher_is_better=True) == ["a", "c"]
    assert plots.frontier(cost, metric, higher_is_better=False) == ["a", "b"]


def test_a_figure_saved_twice_is_byte_identical(tmp_path):
    import matplotlib.pyplot as plt

    def draw(name):
        fig, ax = plt.subplots()
        ax.plot([1, 2, 3], [0.5, 0.7, 0.6])
        return [p.read_bytes() for p in plots.save(fig, tmp_path / name)]

    assert draw("a") == draw("b")  # no dates, no random ids: reports diff only on change


def test_a_grid_of_single_seeds_says_no_test_was_possible():
    from suite.analysis.report import notes
    from suite.analysis.tables import ReportSpec

    agg = pd.DataFrame({"test_vs_best": ["same cell", "n < 2", "n < 2"]})
    line = next(n for n in notes(ReportSpec(knobs=["k"]), agg) if n.startswith("p vs best"))
    assert "none possible" in line and "paired" not in line
    agg = pd.DataFrame({"test_vs_best": ["same cell", "sign-flip (paired)"]})
    line = next(n for n in notes(ReportSpec(knobs=["k"]), agg) if n.startswith("p vs best"))
    assert "against the best cell (sign-flip (paired): the 2^n sign flips of" in line


def test_a_specs_report_reference_is_used_and_checked(tmp_path):
    out = tmp_path / "toy"
    runs = {}
    for latents, values in ((8, [0.80, 0.82, 0.81]), (16, [0.95, 0.97, 0.96])):
        for seed, acc in enumerate(values):
            make_run(out, f"n{latents}_s{seed}", latents, seed, acc=acc)
            runs[f"n{latents}_s{seed}"] = {"model.num_latents": latents, "seed": seed}
    record(out, runs, spec=SPEC + '"reference" = {"model.num_latents" = 8}\n')
    write_report(out, plots=False)
    table = pd.read_csv(out / "report" / "table.csv")
    assert list(table["test_vs_reference"]) == ["same cell", "sign-flip (paired)"]
    record(out, runs, spec=SPEC + '"reference" = {"model.num_heads" = 8}\n')
    with pytest.raises(SuiteError, match="reference=.model.num_heads. is not a varied key"):
        write_report(out, plots=False)


def test_eval_metrics_from_a_validation_split_are_said_to_be(results):
    for config_path in (results / "runs").glob("*/config.json"):
        config = json.loads(config_path.read_text())
        config["data"].update(eval_split="validation", eval_fraction=0.1)
        config_path.write_text(json.dumps(config))
    write_report(results, plots=False)
    notes = (results / "report" / "table.md").read_text()
    assert ("eval/*: in every run, a validation split (data.eval_split=validation): 0.1 of "
            "the training split held out") in notes
    assert "no run was evaluated on the task's test split" in notes


@pytest.mark.parametrize("values, log", [
    ([1e-3, 2e-3, 4e-3], True),  # one constant factor: even steps on a log axis
    ([8, 16, 32, 64, 128, 256, 512], True),
    ([1, 2, 3], False),  # even steps already
    ([0.0, 0.1, 0.2], False),
    ([1, 2], False),
])
def test_values_that_step_by_a_factor_are_drawn_on_a_log_axis(values, log):
    assert plots.is_geometric(pd.Series(values)) is log


def _cells_folder(out, spec, cells, acc):
    """A results folder of ``cells`` (dicts of model keys) x seeds 0-2, acc(cell, seed)."""
    runs = {}
    for cell in cells:
        for seed in range(3):
            run_id = "_".join(f"{k[6:]}{v}" for k, v in cell.items()) + f"_s{seed}"
            extra = {k[6:]: v for k, v in cell.items() if k != "model.num_latents"}
            make_run(out, run_id, cell["model.num_latents"], seed, acc=acc(cell, seed), **extra)
            runs[run_id] = {**cell, "seed": seed}
    record(out, runs, spec=spec)


def test_a_reference_on_a_zipped_key_pairs_across_the_zip_and_matches_the_rest(tmp_path):
    spec = SPEC.replace('[grid]\n"model.num_latents" = [8, 16]', '[zip]\n"model.num_latents" = '
                        '[8, 16]\n"model.num_blocks" = [1, 2]\n[grid]\n"model.num_heads" = [1, 2]')
    cells = [{"model.num_latents": n, "model.num_blocks": b, "model.num_heads": h}
             for n, b in ((8, 1), (16, 2)) for h in (1, 2)]
    _cells_folder(tmp_path / "z", spec, cells,
                  lambda c, s: 0.5 + 0.1 * (c["model.num_latents"] == 16) + 0.01 * s)
    write_report(tmp_path / "z", plots=False, reference={"model.num_latents": "8.0"})
    table = pd.read_csv(tmp_path / "z" / "report" / "table.csv")
    big = table[table["model.num_latents"] == 16]
    assert list(big["test_vs_reference"]) == ["sign-flip (paired)"] * 2
    assert list(big["reference_cell"]) == [
        f"model.num_latents=8, model.num_blocks=1, model.num_heads={h}" for h in (1, 2)]


def test_a_cell_without_a_reference_partner_says_so_and_is_not_tested(tmp_path):
    spec = SPEC.replace('"model.num_latents" = [8, 16]',
                        '"model.num_latents" = [8, 16]\n"model.num_blocks" = [1, 2]')
    cells = [{"model.num_latents": n, "model.num_blocks": b} for n, b in ((8, 1), (8, 2), (16, 2))]
    _cells_folder(tmp_path / "u", spec, cells, lambda c, s: 0.5 + 0.01 * s)
    write_report(tmp_path / "u", plots=False, reference={"model.num_blocks": "1"})
    table = pd.read_csv(tmp_path / "u" / "report" / "table.csv").set_index(
        ["model.num_latents", "model.num_blocks"])
    assert table.loc[(16, 2), "test_vs_reference"] == "no reference cell"
    assert table.loc[(8, 2), "test_vs_reference"] == "sign-flip (paired)"
    text = (tmp_path / "u" / "report" / "table.md").read_text()
    assert "Holm (k=1)" in text and "'no ref.': no cell has the reference's values" in text


def test_a_specs_report_title_heads_the_report(results):
    (results / "spec.toml").write_text(SPEC + 'title = "Latents, a toy"\n')
    write_report(results, plots=False)
    assert (results / "report" / "table.md").read_text().startswith("# Latents, a toy\n")


def test_a_run_being_trained_is_said_to_be_training_not_interrupted(results):
    import os

    run = results / "runs" / "n16_s2"
    (run / "summary.json").unlink()
    (run / "checkpoints" / "5").mkdir(parents=True)
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                                "perceiver-suite"])  # a live process of the suite's
    try:
        (run / ".lock").write_text(f"{os.uname().nodename} {trainer.pid}\n")
        write_report(results, plots=False)
    finally:
        trainer.kill()
        trainer.wait()
    text = (results / "report" / "table.md").read_text()
    assert f"`n16_s2` (partial): training now (process {trainer.pid} on" in text
    write_report(results, plots=False)  # the same pid, gone
    text = (results / "report" / "table.md").read_text()
    assert "`n16_s2` (partial): interrupted; rerun the spec to resume it" in text
