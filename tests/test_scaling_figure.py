"""The scaling figures draw one measure per line: memory is XLA's predicted peak at
every size, the measured device peak a line of its own where an accelerator reports
one, the host's RSS never; slopes and crossovers come from the drawn measure alone."""

import numpy as np
import pandas as pd
import pytest

from suite.benchmarks import scaling_report
from suite.benchmarks.scaling_report import MEMORY, PANELS, figure, fits, frame_of

SIZES = [256, 1024, 4096, 16384, 65536]
MEMORY_PANEL = next(p for p in PANELS if p.column == MEMORY)


def labelled_lines(fig) -> dict:
    """The legend's lines by label (the crossover's vertical line has none)."""
    return {ln.get_label(): ln for ln in fig.axes[0].lines if not ln.get_label().startswith("_")}


def rows(device_peak: dict[tuple[str, int], float] | None = None) -> list[dict]:
    """Perceiver memory 1e5 x M, Transformer 1e3 x M^2 (they cross at M = 100), both
    predicted at every size; the step measured (host RSS ~800 MB) only where small."""
    device_peak = device_peak or {}
    out = []
    laws = (("perceiver", lambda m: 1e5 * m), ("transformer", lambda m: 1e3 * m**2))
    for model, predicted in laws:
        for m in SIZES:
            measured = m <= 4096
            out.append({
                "model": model, "M": m, "index_dims": str(m), "batch": 2, "params": 1000,
                "flops_train_per_example_analytic": 1e6 * m, "flops_per_example_xla": 1e6 * m,
                "compile_seconds": 1.0, "predicted_memory_bytes": predicted(m),
                "peak_rss_bytes": 8e8 + m if measured else np.nan,
                "step_seconds": 0.01 * m if measured else np.nan,
                "device_peak_bytes": device_peak.get((model, m), np.nan),
                "status": "measured" if measured else "does not fit: predicted too much",
                "memory_bytes": 8e8 + m if measured else predicted(m),  # the old mixed column
            })
    return out


def test_the_memory_figure_draws_xla_s_prediction_at_every_size_and_never_the_rss():
    fig, data = figure(frame_of(rows()), MEMORY_PANEL, "t")
    lines = labelled_lines(fig)
    assert sorted(lines) == ["perceiver: XLA's predicted peak (slope 1.00 for M ≥ 4096)",
                             "transformer: XLA's predicted peak (slope 2.00 for M ≥ 4096)"]
    perceiver = lines["perceiver: XLA's predicted peak (slope 1.00 for M ≥ 4096)"]
    assert list(perceiver.get_xdata()) == SIZES
    assert list(perceiver.get_ydata()) == pytest.approx([1e5 * m for m in SIZES])
    assert set(data["measure"]) == {MEMORY} and len(data) == 2 * len(SIZES)
    assert not data["value"].between(8e8, 8e8 + 65536).any()  # no RSS point anywhere


def test_the_measured_device_peak_is_its_own_labelled_line_where_there_is_one():
    peaks = {("perceiver", 256): 3e7, ("perceiver", 1024): 1.1e8}
    fig, data = figure(frame_of(rows(peaks)), MEMORY_PANEL, "t")
    lines = labelled_lines(fig)
    measured = lines["perceiver: measured device peak"]
    assert list(measured.get_xdata()) == [256, 1024]
    assert list(measured.get_ydata()) == [3e7, 1.1e8]
    assert measured.get_linestyle() == "--" and measured.get_markerfacecolor() == "white"
    assert "transformer: measured device peak" not in lines
    beside = data[data["measure"] == "device_peak_bytes"]
    assert list(beside["M"]) == [256, 1024]


def test_memory_slopes_and_the_crossover_come_from_the_prediction_alone():
    frame = frame_of(rows())
    slopes, crosses = fits(frame, MEMORY)
    assert slopes == pytest.approx({"perceiver": 1.0, "transformer": 2.0})
    assert crosses["perceiver"] == pytest.approx(256.0)  # cheaper from the first size on
    fig, _ = figure(frame, MEMORY_PANEL, "t")
    assert [t.get_text() for t in fig.axes[0].texts] == [" crossover M ≈ 256"]


def test_a_frame_with_the_old_mixed_memory_column_drops_it():
    assert "memory_bytes" not in frame_of(rows())


def test_written_figures_carry_the_points_they_draw(tmp_path):
    scaling_report.write(rows(), tmp_path, "perceiver-suite scaling --sizes ...", "test")
    memory = pd.read_csv(tmp_path / "memory_vs_M.csv")
    assert list(memory.columns) == ["model", "M", "measure", "value"]
    assert set(memory["measure"]) == {MEMORY}
    steps = pd.read_csv(tmp_path / "step_time_vs_M.csv")
    assert sorted(set(steps["M"])) == [256, 1024, 4096]  # measured sizes only
    md = (tmp_path / "scaling.md").read_text()
    assert "XLA's predicted train-step memory for M ≥ 4096: perceiver 1.00, transformer 2.00" in md
    assert "host RSS" in md and "peak_rss_bytes" in pd.read_csv(tmp_path / "scaling.csv")


def test_replot_writes_an_older_csv_back_without_its_mixed_memory_column(tmp_path):
    pd.DataFrame(rows()).to_csv(tmp_path / "scaling.csv", index=False)
    (tmp_path / "scaling.json").write_text('{"command": "perceiver-suite scaling", '
                                           '"machine": "test"}')
    result = scaling_report.replot(tmp_path)
    frame = pd.read_csv(tmp_path / "scaling.csv")
    assert "memory_bytes" not in frame and frame["peak_rss_bytes"].notna().sum() == 6
    assert result["memory_slopes"] == pytest.approx({"perceiver": 1.0, "transformer": 2.0})
    assert set(pd.read_csv(tmp_path / "memory_vs_M.csv")["measure"]) == {MEMORY}
