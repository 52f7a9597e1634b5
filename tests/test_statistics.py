"""Verdicts that hold under many comparisons: exact permutation tests over seeds (never
p = 0 from three seeds), Holm's correction over the cells of one table or one compare,
no interval from one seed, and ``compare`` refusing folders that ran different configs.
Results folders are written by hand: nothing here trains."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from suite.analysis import compare as compare_lib
from suite.analysis import stats
from suite.analysis.report import write_report
from suite.cli import main
from suite.sweeps.results import write_results_csv

EVAL = 360  # eval examples: an accuracy moves in steps of 1/360
PROVENANCE = {"suite_version": "0.1.0", "git_commit": "044f4bb4190000", "git_dirty": False,
              "versions": {"jax": "0.10.2", "flax": "0.12.8"}}


def write_folder(out: Path, accuracy: dict[int, list[float]], steps: int = 300,
                 provenance: dict | None = None, overrides: dict | None = None) -> Path:
    """A results folder as ``perceiver-suite run`` leaves it: ``accuracy`` maps each
    model.num_latents cell to its seeds' eval accuracies (None: a failed run)."""
    runs = []
    for latents, values in accuracy.items():
        for seed, acc in enumerate(values):
            run_id = f"n{latents}_s{seed}"
            run = out / "runs" / run_id
            run.mkdir(parents=True)
            (run / "config.json").write_text(json.dumps({
                "seed": seed, "model": {"kind": "perceiver", "num_latents": latents},
                "data": {"task": "digits"}, "train": {"steps": steps}}))
            summary = {"status": "completed", "machine": "test machine",
                       "peak_precision": "float32",
                       "provenance": provenance or PROVENANCE,
                       "metrics": {"eval/accuracy": acc, "eval/loss": 1 - acc}} \
                if acc is not None else {"status": "failed", "reason": "non-finite loss"}
            (run / "summary.json").write_text(json.dumps(summary))
            runs.append({"id": run_id, "varied": {"model.num_latents": latents,
                                                  "seed": seed}})
    (out / "grid.json").write_text(json.dumps({"name": "toy", "overrides": overrides or {},
                                               "runs": runs}))
    return out


def noisy(rng: np.random.Generator, mean: float, seeds: int) -> list[float]:
    """Seed-to-seed accuracies of one cell: whole eval examples around ``mean``."""
    return list(rng.binomial(EVAL, mean, size=seeds) / EVAL)


# ------------------------------------------------------------------------ the tests


def test_one_more_correct_example_on_each_of_three_seeds_is_not_a_move():
    old = {0: 0.80, 1: 0.85, 2: 0.90}
    one_more = stats.compare({s: v + 1 / EVAL for s, v in old.items()}, old)
    assert one_more.test == stats.PAIRED and one_more.p == 0.25 == one_more.p_min
    bigger_noisier = stats.compare({0: 0.83, 1: 0.86, 2: 0.95}, old)
    assert bigger_noisier.p == 0.25  # no longer "decided" less surely than the small one
    assert stats.decide([one_more, bigger_noisier])[1] == [False, False]
    assert stats.compare(old, old).p == 1.0


def test_exact_tests_agree_with_scipys_permutation_test():
    d = np.array([0.1, -0.03, 0.2, 0.05, 0.07, 0.01])
    p, p_min = stats.sign_flip(d)
    assert p == pytest.approx(sps.permutation_test(
        (d,), np.mean, permutation_type="samples", n_resamples=np.inf).pvalue)
    assert p_min == 2 / 2**6
    a, b = np.array([0.80, 0.82, 0.81]), np.array([0.95, 0.97, 0.5, 0.6])
    p, p_min = stats.relabel(a, b)
    assert p == pytest.approx(sps.permutation_test(
        (a, b), lambda x, y: x.mean() - y.mean(), permutation_type="independent",
        n_resamples=np.inf).pvalue)
    assert p_min == 1 / math.comb(7, 3)


def test_unpaired_cells_are_permuted_and_one_seed_is_not_tested():
    unpaired = stats.compare({0: 0.5, 1: 0.6}, {3: 0.55, 4: 0.65, 5: 0.5})
    assert unpaired.test == stats.UNPAIRED and unpaired.p == 1.0 and unpaired.n == 2
    few = stats.compare({0: 0.5}, {1: 0.9})
    assert few.test == stats.FEW and math.isnan(few.p)
    assert stats.decide([few])[1] == [None] and stats.tied_text(None) == "n < 2"
    assert all(math.isnan(v) for v in stats.t_interval([0.7]))


def test_holm_multiplies_the_ith_smallest_p_by_k_minus_i_plus_1_and_stays_monotone():
    adjusted = stats.holm([0.01, 0.04, math.nan, 0.03])
    assert list(adjusted[[0, 1, 3]]) == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(adjusted[2])
    assert list(stats.holm([0.5, 0.9])) == [1.0, 1.0]


def test_three_seeds_say_that_no_cell_can_be_decided_and_how_many_seeds_could():
    three = [stats.Comparison(0.1, 0.25, stats.PAIRED, 3, 0.25)] * 6
    assert stats.undecidable(three) == (
        "with 3 paired seeds the smallest attainable p is 0.25 (1 Holm-adjusted over 6 "
        "cells): no cell can be decided at 5%, however large its difference; 8 paired "
        "seeds are the fewest that can: run more seeds")
    assert [stats.seeds_needed(k) for k in (1, 6, 7)] == [6, 8, 9]
    eight = [stats.Comparison(0.1, 2 / 2**8, stats.PAIRED, 8, 2 / 2**8)] * 6
    assert stats.undecidable(eight) == ""  # 6 x 2/256 < 0.05


def test_redraws_of_a_seven_cell_grid_within_its_seed_noise_rarely_move():
    """400 pairs of folders drawn from the same distribution: the chance that compare
    calls any cell of the 7 moved stays near 5% (uncorrected, it would be near 30%)."""
    rng = np.random.default_rng(20240611)
    means = [0.70, 0.75, 0.80, 0.85, 0.88, 0.90, 0.93]
    any_moved = any_raw = 0
    for _ in range(400):
        # each seed's own initialisation and data order, shared by both folders' runs
        seed_means = np.clip(np.array(means)[:, None] + rng.normal(0, 0.02, (7, 10)), 0, 1)
        old = [dict(enumerate(rng.binomial(EVAL, m) / EVAL)) for m in seed_means]
        new = [dict(enumerate(rng.binomial(EVAL, m) / EVAL)) for m in seed_means]
        comparisons, _, verdicts = compare_lib.decide(new, old)
        any_moved += "moved" in verdicts
        any_raw += any(c.p < stats.ALPHA for c in comparisons)
    assert any_moved / 400 <= 0.08
    assert any_raw / 400 >= 0.15  # the family problem the correction is for


def test_a_real_shift_with_ten_seeds_moves():
    rng = np.random.default_rng(0)
    old = [dict(enumerate(noisy(rng, 0.8, 10))) for _ in range(7)]
    new = [dict(old_cell) for old_cell in old]
    new[3] = {s: v - 0.05 - 0.001 * s for s, v in old[3].items()}
    _, adjusted, verdicts = compare_lib.decide(new, old)
    assert verdicts == ["within noise"] * 3 + ["moved"] + ["within noise"] * 3
    assert adjusted[3] == pytest.approx(7 * 2 / 2**10)  # the smallest p, times k = 7
    assert list(adjusted[[0, 1, 2, 4, 5, 6]]) == [1.0] * 6


# ---------------------------------------------------------------------- the report


def test_a_single_seed_cell_has_no_std_and_no_interval(tmp_path):
    out = write_folder(tmp_path / "toy", {8: [0.80, 0.82, 0.81], 16: [0.7, None, None]})
    write_report(out, plots=False)
    table = pd.read_csv(out / "report" / "table.csv")
    single = table[table["model.num_latents"] == 16].iloc[0]
    assert math.isnan(single["eval/accuracy std"])
    assert math.isnan(single["ci95_low"]) and math.isnan(single["ci95_high"])
    assert single["tied_with_best"] == "n < 2" and math.isnan(single["p_vs_best"])
    md = (out / "report" / "table.md").read_text()
    row = next(ln for ln in md.splitlines() if ln.startswith("|") and "1/3" in ln)
    assert "70.0 " in row and "±" not in row and "—" in row and " 0.0" not in row


def test_tied_with_the_best_is_decided_by_the_holm_adjusted_p(tmp_path):
    """Three cells worse than the best on each of 6 seeds: raw p 2/64 < 0.05 each, but
    Holm over the 3 cells tested makes it 3 x 2/64 > 0.05: tied, and the table says so."""
    best = [0.90, 0.91, 0.92, 0.93, 0.94, 0.95]
    out = write_folder(tmp_path / "toy", {8: best, **{n: [v - 0.05 - 0.01 * s for s, v in
                                                         enumerate(best)]
                                                      for n in (16, 32, 64)}})
    write_report(out, plots=False)
    table = pd.read_csv(out / "report" / "table.csv")
    assert list(table["p_vs_best"]) == pytest.approx([1.0] + [2 / 64] * 3)
    assert list(table["p_vs_best_holm"]) == pytest.approx([1.0] + [3 * 2 / 64] * 3)
    assert list(table["p_min_vs_best"][1:]) == [2 / 64] * 3
    assert list(table["n_vs_best"]) == [6] * 4
    assert list(table["test_vs_best"]) == ["same cell"] + [stats.PAIRED] * 3
    assert list(table["tied_with_best"].astype(str).str.lower()) == ["true"] * 4
    md = (out / "report" / "table.md").read_text()
    assert "p vs best, Holm (k=3)" in md and "Holm-adjusted over the 3 cells tested" in md
    assert "this p decides" in md and "7 paired seeds are the fewest that can" in md
    html = (out / "report" / "index.html").read_text()
    assert "p vs best, Holm (k=3)" in html


def test_a_cell_worse_on_every_one_of_eight_seeds_is_not_tied(tmp_path):
    best = [0.90, 0.91, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97]
    out = write_folder(tmp_path / "toy", {8: best, 16: [v - 0.1 - 0.01 * s for s, v in
                                                        enumerate(best)],
                                          32: [v + (-1) ** s * 0.01 for v, s in
                                               zip(best, range(8), strict=True)]})
    write_report(out, plots=False)
    table = pd.read_csv(out / "report" / "table.csv")
    assert list(table["tied_with_best"].astype(str).str.lower()) == ["true", "false", "true"]
    assert table.loc[1, "p_vs_best_holm"] == pytest.approx(2 * 2 / 256)


# --------------------------------------------------------------------------- compare


def test_compare_of_three_seed_folders_says_no_cell_can_be_decided(tmp_path, capsys):
    cells = {n: [0.80, 0.85, 0.90] for n in (8, 16, 32)}
    old = write_folder(tmp_path / "old", cells)
    new = write_folder(tmp_path / "new", {n: [v + 1 / EVAL for v in vs]
                                          for n, vs in cells.items()})
    assert main(["compare", str(old), str(new)]) == 0
    out = capsys.readouterr().out
    assert "p (Holm, k=3)" in out and "p Holm-adjusted over the 3 cells tested" in out
    assert "with 3 paired seeds the smallest attainable p is 0.25" in out
    assert "no cell of 3 moved beyond seed noise (Holm over 3)" in out
    assert "same recorded config, code, libraries, machine and precision" in out


def test_compare_exits_1_when_a_cell_moved_on_every_one_of_eight_seeds(tmp_path, capsys):
    cells = {n: [0.80 + 0.01 * s for s in range(8)] for n in (8, 16)}
    old = write_folder(tmp_path / "old", cells)
    new = write_folder(tmp_path / "new", {8: cells[8], 16: [v - 0.2 for v in cells[16]]})
    assert main(["compare", str(old), str(new)]) == 1
    assert "1 of 2 shared cells moved beyond seed noise (Holm over 2)" in \
        capsys.readouterr().out


def test_compare_refuses_folders_that_ran_different_configs(tmp_path, capsys):
    old = write_folder(tmp_path / "old", {8: [0.8, 0.9, 0.85]}, steps=300)
    new = write_folder(tmp_path / "new", {8: [0.5, 0.6, 0.55]}, steps=20,
                       overrides={"train.steps": "20"})
    assert main(["compare", str(old), str(new)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.steps: 300 vs 20" in err
    assert "--allow-config-diff" in err
    assert main(["compare", str(old), str(new), "--allow-config-diff"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["the folders ran different configs (compared anyway, "
                       "--allow-config-diff):", "  train.steps: 300 vs 20"]
    assert "the folders differ in overrides: none -> train.steps=20" in out


def test_compare_refuses_different_configs_read_from_results_csv_too(tmp_path):
    folders = []
    for name, steps in (("old", 300), ("new", 20)):
        out = write_folder(tmp_path / name, {8: [0.8, 0.9]}, steps=steps)
        write_results_csv(out)
        for run in (out / "runs").iterdir():  # committed results: runs/ is not committed
            for f in run.iterdir():
                f.unlink()
            run.rmdir()
        (out / "runs").rmdir()
        folders.append(out)
    assert main(["compare", *map(str, folders)]) == 2


def test_compare_names_each_code_library_and_plugin_difference(tmp_path, capsys):
    old = write_folder(tmp_path / "old", {8: [0.8, 0.9, 0.85]})
    newer = {**PROVENANCE, "git_commit": "abcdef12345678", "git_dirty": True,
             "versions": {"jax": "0.10.3", "flax": "0.12.8"},
             "plugins": [{"plugin": "/work/my_encoder.py", "path": "/work/my_encoder.py",
                          "sha256": "0123456789abcdef" * 4}]}
    new = write_folder(tmp_path / "new", {8: [0.8, 0.9, 0.85]}, provenance=newer)
    assert main(["compare", str(old), str(new)]) == 0
    out = capsys.readouterr().out
    assert "the folders differ in git commit: 044f4bb419 -> abcdef1234" in out
    assert "the folders differ in git dirty: false -> true" in out
    assert "the folders differ in jax: 0.10.2 -> 0.10.3" in out
    assert "the folders differ in plugin /work/my_encoder.py: unrecorded -> sha256 " \
        "0123456789ab" in out
    assert "flax" not in out


def test_the_code_column_of_committed_results_reads_back_to_the_same_facts():
    from suite.analysis.origin import facts, parse_code
    from suite.provenance import describe

    dirty = {**PROVENANCE, "git_dirty": True}
    assert parse_code(describe(dirty)) == facts(dirty) == {
        "suite version": "0.1.0", "git commit": "044f4bb419", "git dirty": "true",
        "jax": "0.10.2", "flax": "0.12.8"}
    assert parse_code("unrecorded") == {} and parse_code(None) == {}
