"""Tools that tell the truth: `devices` names the compile cache training will use, a dry
run's totals are real figures that say what they rest on, a small folder with one bad
file still trains (and names it), and every malformed report input is one line."""

import json
import shutil

import jax
import numpy as np
import pytest

from suite import config as C
from suite.cli import main
from suite.data.skips import BadData, SkipLog
from suite.data.sources import Split
from suite.models.flops import train_flops
from suite.platform import devices, doctor
from suite.sweeps import dry_run
from suite.sweeps import spec as spec_lib
from suite.training.trainer import train_and_evaluate

QUIET = {"progress": False, "log": lambda m: None}

# ------------------------------------------------------------------ devices


@pytest.fixture
def no_jax_cache(monkeypatch):
    """A process whose JAX compile cache is not set yet, as at a run's start; restored."""
    before = (jax.config.jax_compilation_cache_dir,
              jax.config.jax_persistent_cache_min_compile_time_secs)
    jax.config.update("jax_compilation_cache_dir", None)
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    yield
    jax.config.update("jax_compilation_cache_dir", before[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])


def fake_doctor(monkeypatch):
    """``devices`` without its measured peak and test step (they do not touch the cache)."""
    monkeypatch.setattr(devices, "peak_flops", lambda dtype, fresh=False: (1e12, "measured"))
    return doctor.render(doctor.doctor(lambda: {
        "compile_seconds": 1.0, "step_seconds": 0.01, "loss": 2.3, "ok": True}))


def test_devices_reports_the_cache_training_then_turns_on(no_jax_cache, monkeypatch, tmp_path):
    monkeypatch.setenv(devices.CACHE_ENV, str(tmp_path / "xla"))
    text = fake_doctor(monkeypatch)
    line = next(ln for ln in text.splitlines() if ln.startswith("compile cache"))
    assert line == (f"compile cache {tmp_path / 'xla'} (${devices.CACHE_ENV}; steps that "
                    "compile in 0.5s or more)")
    assert devices.enable_compile_cache() == tmp_path / "xla"  # what a run's setup does
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "xla")


def test_devices_says_off_only_when_training_would_not_cache(no_jax_cache, monkeypatch):
    monkeypatch.setenv(devices.CACHE_ENV, "off")
    line = next(ln for ln in fake_doctor(monkeypatch).splitlines()
                if ln.startswith("compile cache"))
    assert line == f"compile cache off (${devices.CACHE_ENV}=off)"
    assert devices.enable_compile_cache() is None
    assert not jax.config.jax_compilation_cache_dir


def test_a_cache_jax_was_given_is_the_one_reported_and_kept(no_jax_cache, monkeypatch, tmp_path):
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))
    monkeypatch.setenv(devices.CACHE_ENV, str(tmp_path / "ours"))
    assert devices.compile_cache_plan() == (
        tmp_path / "mine", "set by JAX (JAX_COMPILATION_CACHE_DIR or jax.config)")
    assert devices.enable_compile_cache() == tmp_path / "mine"


# ------------------------------------------------------------------ dry run


def grid(tmp_path, body, seeds="[0]"):
    path = tmp_path / "g.toml"
    path.write_text(f'preset = "synthetic"\nseeds = {seeds}\n"fixed"."train.steps" = 20\n'
                    f"[grid]\n{body}")
    spec = spec_lib.load(path)
    return spec, spec_lib.expand(spec)


def test_flops_are_written_in_the_unit_that_keeps_three_figures():
    assert [dry_run.flops_text(n) for n in (0, 5e7, 4.52e11, 2.97e12, 1.23e15, 4e18)] == [
        "0 FLOP", "50 MFLOP", "452 GFLOP", "2.97 TFLOP", "1.23 PFLOP", "4 EFLOP"]


def test_the_wall_time_says_what_it_rests_on_or_that_it_is_unknown():
    none = {"from completed runs": 0, "measured": 0}
    assert dry_run.wall_time_line(0.0, none, 4) == (
        "estimated wall time: unknown: no step time is known for these runs (pass --measure "
        "to time a few steps of each config)")
    assert dry_run.wall_time_line(90.0, {"from completed runs": 2, "measured": 0}, 0) == (
        "estimated wall time: 1m30s: steps x seconds per step (2 from completed runs); "
        "compiles and evals not included")
    assert dry_run.wall_time_line(90.0, {"from completed runs": 1, "measured": 0}, 3) == (
        "estimated wall time: more than 1m30s: steps x seconds per step (1 from completed "
        "runs); compiles and evals not included; unknown for the other 3 run(s) (pass "
        "--measure to time a few steps of each config)")


def test_a_dry_runs_totals_are_the_sum_of_its_runs(tmp_path):
    spec, runs = grid(tmp_path, '"model.num_latents" = [4, 8]\n', seeds="[0, 1]")
    out = tmp_path / "out"
    done = out / "runs" / runs[0].id  # one run completed before, at 0.5 s a step
    done.mkdir(parents=True)
    (done / "config.json").write_text(json.dumps(C.to_dict(runs[0].config)))
    (done / "summary.json").write_text(json.dumps({"status": "completed", "step_seconds": 0.5}))
    text = dry_run.dry_run_table(spec, runs, out)
    total = sum(train_flops(r.config, r.config.train.batch_size) * 20 for r in runs)
    assert total > 0
    assert f"train FLOPs in all: {dry_run.flops_text(total)} (analytic" in text
    assert ("estimated wall time: more than 0m10s: steps x seconds per step (1 from "
            "completed runs)") in text
    assert "unknown for the other 3 run(s)" in text
    assert "2 program(s) compiled on abstract shapes" in text  # the seeds share one


def test_configs_that_differ_only_in_constants_share_one_compile(tmp_path):
    spec, runs = grid(tmp_path, '"train.learning_rate" = [0.001, 0.002, 0.004]\n')
    with dry_run.Estimates() as estimates:
        for run in runs:
            estimates.submit(run)
        found = [estimates.of(run) for run in runs]
    assert estimates.compiles == 1 and len({f["train_memory"] for f in found}) == 1


def test_the_quick_estimate_is_the_pre_flights_prediction(tmp_path):
    _, runs = grid(tmp_path, '"model.num_latents" = [8]\n')
    with dry_run.Estimates() as estimates:
        quick = estimates.of(runs[0])
    full = dry_run.cost(runs[0])  # the steps compiled as training compiles them
    assert (quick["train_memory"], quick["eval_memory"], quick["eval_batch"]) == (
        full["train_memory"], full["eval_memory"], full["eval_batch"])
    assert quick["params"] == full["params"] and quick["problem"] is None


def test_a_config_that_does_not_fit_gets_the_pre_flights_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("PERCEIVER_SUITE_MEMORY_BYTES", str(2**20))  # 1 MiB to plan for
    spec, runs = grid(tmp_path, '"model.num_latents" = [8]\n')
    text = dry_run.dry_run_table(spec, runs, tmp_path / "out")
    row = next(ln for ln in text.splitlines() if ln.startswith(runs[0].id))
    assert row.split()[-2] == "NO" and "1 run(s) do not fit" in text
    assert f"  {runs[0].id}: the train step needs " in text
    assert "$PERCEIVER_SUITE_MEMORY_BYTES is 1.0 MiB" in text


# ------------------------------------------------------------------ bad files


def skip_log(total, bad, **limits):
    """A SkipLog that met ``bad`` unreadable files of a ``total``-file training split."""
    cfg = C.build("digits", {f"data.{k}": v for k, v in limits.items()}).data
    split = Split(np.zeros((total - bad, 1)), np.zeros(total - bad, np.int32),
                  skipped=tuple((f"clip{i}.wav", f"clip{i}.wav: unreadable") for i in range(bad)))
    log = SkipLog(cfg, lambda m: None)
    log.dropped(split, "train")
    return log


@pytest.mark.parametrize("total,bad,limits,stops", [
    (30, 1, {}, False),  # 3%, over the 1% share, but one file
    (25, 5, {}, False),  # 20%, but no more than 5 files
    (25, 6, {}, True),  # a broken folder: over both
    (10_000, 100, {}, False),  # 1%: not over the share
    (10_000, 101, {}, True),
    (30, 1, {"max_bad_files": 0}, True),  # the share alone
    (30, 3, {"max_bad_fraction": 0.5}, False),
], ids=["1 of 30", "5 of 25", "6 of 25", "100 of 10k", "101 of 10k", "count 0", "share 0.5"])
def test_a_run_stops_only_past_both_the_share_and_the_count(total, bad, limits, stops):
    if stops:
        with pytest.raises(BadData, match=f"{bad} of the {total} train files are unreadable"):
            skip_log(total, bad, **limits)
    else:
        assert len(skip_log(total, bad, **limits).files) == bad


@pytest.mark.parametrize("value,needle", [
    ("-1", "data.max_bad_files=-1 must be a whole number >= 0"),
    ("1.5", "data.max_bad_files='1.5' is not an integer"),
    ("true", "data.max_bad_files='true' is not an integer"),
])
def test_max_bad_files_is_a_whole_number(capsys, value, needle):
    assert main(["describe", "--no-xla", f"data.max_bad_files={value}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_one_broken_clip_among_25_completes_and_is_named(tmp_path):
    from test_multimodal import moving_square, write_mp4

    rng = np.random.default_rng(0)
    for split, counts in (("train", (13, 12)), ("val", (2, 2))):  # 25 training clips
        for k, (name, n) in enumerate(zip(("left", "right"), counts, strict=True)):
            for i in range(n):
                write_mp4(tmp_path / split / name / f"{i}.mp4", moving_square(rng, bool(k), 8))
    bad = tmp_path / "train" / "left" / "3.mp4"
    bad.write_bytes(b"RIFFnot a video")
    lines = []
    config = C.build("video_folder", {
        "data.data_dir": str(tmp_path), "data.num_classes": 2, "data.index_dims": "4,16,16",
        "train.batch_size": 5, "train.steps": 6, "train.log_every": 3,
        "train.tensorboard": "false", "model.num_latents": 8, "model.latent_dim": 16,
        "model.self_heads": 2, "model.fourier_bands": 2})
    summary = train_and_evaluate(config, tmp_path / "run", progress=False, log=lines.append)
    assert summary["status"] == "completed"
    assert summary["data_skipped"]["files"] == 1 and summary["data_skipped"]["paths"] == [str(bad)]
    assert sum("3.mp4" in line for line in lines) == 1


# ------------------------------------------------------------------ report inputs


def toy_results(tmp_path, spec=None):
    """A results folder of 2 cells x 2 seeds, made by hand (test_report's helpers)."""
    from test_report import SPEC, make_run, record

    out, runs = tmp_path / "toy", {}
    for seed in (0, 1):
        for latents, acc in ((8, 0.8), (16, 0.9)):
            make_run(out, f"n{latents}_s{seed}", latents, seed, acc=acc + seed / 100)
            runs[f"n{latents}_s{seed}"] = {"model.num_latents": latents, "seed": seed}
    record(out, runs, spec=SPEC if spec is None else spec)
    return out


def one_line_exit_2(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


SPEC_HEAD = ('name = "toy"\npreset = "digits"\nseeds = [0, 1]\n[grid]\n'
             '"model.num_latents" = [8, 16]\n')


@pytest.mark.parametrize("spec,needle", [
    (SPEC_HEAD + "[report\n", "spec.toml: bad TOML: "),
    (SPEC_HEAD + "[report]\nrows = 5\n",
     'spec.toml: [report] rows=5 must be a list of varied keys, e.g. rows = ["model.'),
    (SPEC_HEAD + '[report]\nhue = ["a"]\n', "spec.toml: [report] hue=['a'] must be one string"),
    (SPEC_HEAD + "[report]\nmetric = 1\n", "spec.toml: [report] metric=1 must be one string"),
    (SPEC_HEAD + '[report]\nhue = "model.num_latent"\n',
     "spec.toml: [report] hue='model.num_latent' is not a varied key; did you mean "
     "'model.num_latents'? (varied: model.num_latents)"),
    (SPEC_HEAD + '[report]\nrows = ["model.num_latent"]\n',
     "[report] rows='model.num_latent' is not a varied key; did you mean 'model.num_latents'?"),
    (SPEC_HEAD + '[report]\nhues = "model.num_latents"\n',
     "spec.toml: [report] unknown key 'hues'; did you mean 'hue'?"),
    (SPEC_HEAD + '[report]\nmetric = "eval/acc"\n',
     "spec.toml: [report] metric='eval/acc' is not a metric of "),
    (SPEC_HEAD.replace('name = "toy"', "name = 5"), "spec.toml: name=5 must be a string"),
    ('name = "toy"\ngrid = 3\n', "spec.toml: grid=3 must be a table"),
], ids=["toml syntax", "rows int", "hue list", "metric int", "hue typo", "rows typo",
        "unknown key", "metric typo", "name int", "grid int"])
def test_a_malformed_spec_copy_is_one_line_naming_the_key(tmp_path, capsys, spec, needle):
    out = toy_results(tmp_path, spec)
    assert needle in one_line_exit_2(capsys, ["report", str(out)])


@pytest.mark.parametrize("metric,needle", [
    ("seed", "--metric='seed' is a config key, not a metric of "),
    ("model.num_latents", "--metric='model.num_latents' is a config key, not a metric"),
    ("run_id", "--metric='run_id' is a bookkeeping column, not a metric"),
    ("eval/acuracy", "--metric='eval/acuracy' is not a metric of "),
])
def test_a_metric_that_is_not_one_is_one_line(tmp_path, capsys, metric, needle):
    out = toy_results(tmp_path)
    line = one_line_exit_2(capsys, ["report", str(out), "--metric", metric])
    assert needle in line and "(metrics: eval/accuracy, eval/loss, " in line
    assert metric != "eval/acuracy" or "did you mean 'eval/accuracy'?" in line
    assert needle in one_line_exit_2(capsys, ["compare", str(out), str(out), "--metric", metric])


def test_a_measured_cost_is_a_metric_a_report_can_tabulate(tmp_path):
    out = toy_results(tmp_path)
    assert main(["report", str(out), "--metric", "wall_seconds"]) == 0
    assert "wall_seconds" in (out / "report" / "table.md").read_text()


def edit_json(path, change):
    path.write_text(change(json.loads(path.read_text())))


@pytest.mark.parametrize("name,change,needle", [
    ("summary.json", lambda s: "[1, 2]", "summary.json: holds an array ([1, 2]), not an object"),
    ("config.json", lambda c: "[1, 2]", "config.json: holds an array ([1, 2]), not an object"),
    ("summary.json", lambda s: "{oops", "summary.json: not readable JSON (Expecting property"),
    ("config.json", lambda c: "", "config.json: not readable JSON (Expecting value"),
    ("summary.json", lambda s: json.dumps({**s, "metrics": {**s["metrics"],
                                                            "eval/accuracy": "high"}}),
     "summary.json: metrics.eval/accuracy='high' is not a number"),
    ("summary.json", lambda s: json.dumps({**s, "metrics": [0.8]}),
     "summary.json: metrics=[0.8] is not an object of metric values"),
    ("summary.json", lambda s: json.dumps({**s, "step_seconds": "fast"}),
     "summary.json: step_seconds='fast' is not a number"),
], ids=["summary list", "config list", "summary not JSON", "config empty", "string metric",
        "metrics list", "string cost"])
def test_a_malformed_run_file_is_one_line_naming_it(tmp_path, capsys, name, change, needle):
    out = toy_results(tmp_path)
    edit_json(out / "runs" / "n8_s1" / name, change)
    line = one_line_exit_2(capsys, ["report", str(out)])
    assert line.startswith(f"perceiver-suite: error: {out / 'runs' / 'n8_s1' / name}: ")
    assert needle in line


def test_a_string_metric_in_committed_results_names_the_csv_row(tmp_path, capsys):
    from suite.sweeps.results import write_results_csv

    out = toy_results(tmp_path)
    path = write_results_csv(out)
    shutil.rmtree(out / "runs")  # committed results: no run folders
    text = path.read_text().splitlines()
    column = text[0].split(",").index("eval/accuracy")
    row = next(i for i, ln in enumerate(text) if ln.startswith("n16_s1,"))
    cells = text[row].split(",")
    cells[column] = "high"
    path.write_text("\n".join([*text[:row], ",".join(cells), *text[row + 1:]]) + "\n")
    assert (f"{path} (the row of n16_s1): eval/accuracy='high' is not a number"
            in one_line_exit_2(capsys, ["report", str(out)]))


def test_a_grid_rebuilds_its_table_past_a_damaged_run_file(tmp_path):
    from suite.sweeps.results import read_runs, run_status

    out = toy_results(tmp_path)
    (out / "runs" / "n8_s1" / "summary.json").write_text("[1, 2]")
    (out / "runs" / "n16_s1" / "config.json").write_text("[1, 2]")
    assert run_status(out / "runs" / "n8_s1") == "failed"
    rows = {r["run_id"]: r for r in read_runs(out)}  # the runner's view: never a traceback
    assert sorted(rows) == ["n16_s0", "n8_s0", "n8_s1"]
    assert rows["n8_s1"]["reason"] == "unreadable summary.json"
