"""Report figures count honestly: a title's n is the runs drawn at each point, the
Pareto front holds only undominated cells (equal costs included), and learning curves
average completed runs only, say how many, and show lines of one point per run."""

import pandas as pd
import pytest

from suite.analysis import plots
from suite.analysis.tables import ReportSpec


@pytest.fixture
def drawn(monkeypatch):
    """The figures a plotting call saves, by file stem (closed, but their artists stay)."""
    figures = {}
    real = plots.save

    def keep(fig, path, data=None, layout=True):
        figures[path.name] = fig
        return real(fig, path, data, layout)

    monkeypatch.setattr(plots, "save", keep)
    return figures


def lr_grid(seeds_of_lr=None) -> pd.DataFrame:
    """Four learning rates (a ``train.*`` knob), 3 seeds a cell unless told, with the value
    columns a results frame carries beside the metric."""
    seeds_of_lr = seeds_of_lr or {}
    return pd.DataFrame([
        {"run_id": f"lr{lr}_s{s}", "status": "completed", "seed": s,
         "train.learning_rate": lr, "eval/accuracy": 0.5 + lr + s / 100,
         "train/loss": 1.0 - s / 10, "wall_seconds": 10.0 + s,
         "flops_per_example_analytic": 3e9}
        for lr in (0.001, 0.01, 0.1, 0.3) for s in seeds_of_lr.get(lr, (0, 1, 2))])


def test_a_title_counts_the_seeds_behind_each_drawn_point(tmp_path, drawn):
    spec = ReportSpec(knobs=["train.learning_rate"])
    plots.metric_vs_knob(lr_grid(), spec, "train.learning_rate", None, tmp_path)
    title = drawn["eval_accuracy_vs_learning_rate"]._suptitle.get_text()
    assert "(n = 3 seeds per point)" in title
    data = pd.read_csv(tmp_path / "eval_accuracy_vs_learning_rate.csv")
    assert set(data.groupby("train.learning_rate").size()) == {3}


def test_a_title_gives_the_range_when_a_point_lost_seeds(tmp_path, drawn):
    spec = ReportSpec(knobs=["train.learning_rate"])
    plots.metric_vs_knob(lr_grid({0.3: (0, 2)}), spec, "train.learning_rate", None, tmp_path)
    title = drawn["eval_accuracy_vs_learning_rate"]._suptitle.get_text()
    assert "(n = 2 to 3 seeds per point)" in title


def test_seeds_per_point_count_the_rows_sharing_the_drawn_point():
    data = pd.DataFrame({"x": [1, 1, 1, 2], "legend": ["a"] * 4, "seed": [0, 1, 2, 0]})
    assert plots.seeds_text(data, ["x", "legend"]) == "n = 1 to 3 seeds per point"
    assert plots.seeds_text(data[data.x == 2], ["x"]) == "n = 1 seed per point"


def test_equal_cost_cells_with_a_worse_metric_are_off_the_pareto_front():
    # Three learning rates share one cost; a fourth cell costs more and is no better.
    cost = pd.Series([1.0, 1.0, 1.0, 2.0, 2.0], index=list("abcde"))
    metric = pd.Series([0.7, 0.8, 0.6, 0.8, 0.9], index=list("abcde"))
    assert plots.frontier(cost, metric, higher_is_better=True) == ["b", "e"]
    assert plots.frontier(cost, metric, higher_is_better=False) == ["c"]


def test_exact_duplicates_both_stay_on_the_pareto_front():
    cost = pd.Series([1.0, 1.0, 2.0, 3.0], index=list("abcd"))
    metric = pd.Series([0.8, 0.8, 0.9, 0.9], index=list("abcd"))
    assert plots.frontier(cost, metric, higher_is_better=True) == ["a", "b", "c"]


def test_a_point_without_a_cost_is_on_no_front():
    cost = pd.Series([1.0, float("nan"), 2.0], index=list("abc"))
    metric = pd.Series([0.5, 0.99, 0.6], index=list("abc"))
    assert plots.frontier(cost, metric, higher_is_better=True) == ["a", "c"]


def test_the_pareto_figure_joins_one_learning_rate_of_a_shared_cost(tmp_path, drawn):
    spec = ReportSpec(knobs=["train.learning_rate"])
    plots.pareto(lr_grid(), spec, tmp_path)
    fig = drawn["eval_accuracy_pareto"]
    assert "n = 3 seeds per point" in fig._suptitle.get_text()
    flops_axis = fig.axes[0]
    front = next(ln for ln in flops_axis.lines if ln.get_label().startswith("Pareto front"))
    assert list(front.get_xdata()) == [3e9]  # the best learning rate only
    assert list(front.get_ydata()) == pytest.approx([100 * (0.5 + 0.3 + 0.01)])


def curve_runs() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two cells: n8 completed 3 seeds; n16 completed 1, failed 1, was interrupted once.
    Training accuracy every 5 steps, eval once, at the end."""
    runs = [("n8", s, "completed") for s in range(3)] + \
        [("n16", 0, "completed"), ("n16", 1, "failed"), ("n16", 2, "interrupted")]
    frame = pd.DataFrame([{"run_id": f"{c}_s{s}", "status": st, "seed": s,
                           "model.num_latents": int(c[1:])} for c, s, st in runs])
    rows = []
    for c, s, st in runs:
        last = 10 if st == "completed" else 5  # the others stopped early
        rows += [{"run_id": f"{c}_s{s}", "step": step, "split": "train",
                  "accuracy": 0.1 * step / 10 + (0.5 if st != "completed" else 0.0),
                  "loss": 1.0} for step in range(5, last + 1, 5)]
        if st == "completed":
            rows.append({"run_id": f"{c}_s{s}", "step": 10, "split": "eval",
                         "accuracy": 0.8 + s / 100, "loss": 0.5})
    return frame, pd.DataFrame(rows)


def test_learning_curves_average_completed_runs_only_and_say_how_many(tmp_path, drawn):
    frame, curves = curve_runs()
    plots.learning_curves(frame, curves, ReportSpec(knobs=["model.num_latents"]), tmp_path)
    data = pd.read_csv(tmp_path / "curves.csv")
    assert set(data["run_id"]) == {"n8_s0", "n8_s1", "n8_s2", "n16_s0"}
    assert dict(data.groupby("config")["completed_runs"].first()) == {
        "num_latents=8": 3, "num_latents=16": 1}
    ax = drawn["curves"].axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "num_latents=8 (n = 3 completed runs)" in legend
    assert "num_latents=16 (n = 1 completed run)" in legend
    assert "mean over completed runs (n = 1 to 3 per line" in ax.get_title()


def test_a_split_logged_once_per_run_is_drawn_as_markers(tmp_path, drawn):
    frame, curves = curve_runs()
    plots.learning_curves(frame, curves, ReportSpec(knobs=["model.num_latents"]), tmp_path)
    ax = drawn["curves"].axes[0]
    single = [ln for ln in ax.lines if len(ln.get_xdata()) == 1]
    assert len(single) == 2  # the eval split of each cell, at step 10
    assert all(ln.get_marker() == "o" and ln.get_markersize() > 0 for ln in single)
    assert sorted(float(ln.get_ydata()[0]) for ln in single) == pytest.approx([80.0, 81.0])
    handles = dict(zip([t.get_text() for t in ax.get_legend().get_texts()],
                       ax.get_legend().legend_handles, strict=True))
    assert handles["eval"].get_marker() == "o"
    assert handles["train"].get_marker() in ("", "None", None)
