"""Ablation specs and the grid runner: expansion, identity, errors, skip/resume/retry,
parallel runners and killed grids."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from suite.errors import SpecError
from suite.files import read_jsonl
from suite.sweeps import spec as spec_lib
from suite.sweeps.results import read_runs, run_status
from suite.sweeps.runner import run_grid

ABLATIONS = sorted(Path(__file__).parent.parent.joinpath("ablations").rglob("*.toml"))

FAST = '''
"train.steps" = 30
"train.log_every" = 10
"train.checkpoint_every" = 10
"train.eval_every" = 0
'''


def write_spec(tmp_path, body, name="t"):
    path = tmp_path / f"{name}.toml"
    path.write_text(body)
    return path


def fast_spec(tmp_path, grid='"model.num_latents" = [4, 8]', seeds="[0]", extra=""):
    return write_spec(tmp_path, f'''
name = "t"
preset = "synthetic"
seeds = {seeds}
[fixed]
{FAST}
{extra}
[grid]
{grid}
''')


def test_expansion_is_grid_times_zip_times_seeds(tmp_path):
    path = write_spec(tmp_path, '''
preset = "digits"
seeds = [0, 1, 2]
[grid]
"model.num_latents" = [16, 32]
model.weight_sharing = [true, false]
[zip]
"model.fourier_bands" = [2, 4]
"model.max_resolution" = [4, 8]
''')
    runs = spec_lib.expand(spec_lib.load(path))
    assert len(runs) == 2 * 2 * 2 * 3
    assert {r.config.model.max_resolution for r in runs} == {(4.0,), (8.0,)}
    assert all((r.config.model.fourier_bands == 2) == (r.config.model.max_resolution == (4.0,))
               for r in runs)


def test_nested_tables_and_quoted_keys_are_the_same(tmp_path):
    a = write_spec(tmp_path, '[grid]\n"model.num_latents" = [8]\n', "a")
    b = write_spec(tmp_path, '[grid.model]\nnum_latents = [8]\n', "b")
    assert spec_lib.expand(spec_lib.load(a))[0].id == spec_lib.expand(spec_lib.load(b))[0].id


def test_run_ids_are_stable_readable_and_change_with_the_config(tmp_path):
    path = fast_spec(tmp_path)
    first = [r.id for r in spec_lib.expand(spec_lib.load(path))]
    again = [r.id for r in spec_lib.expand(spec_lib.load(path))]
    assert first == again and first[0].startswith("num_latents=4_seed=0_")
    other = [r.id for r in spec_lib.expand(spec_lib.load(path), {"train.steps": 31})]
    assert set(first).isdisjoint(other)


def test_run_ids_hash_only_what_differs_from_the_defaults(tmp_path):
    from suite import config as cfg_lib

    (run,) = spec_lib.expand(spec_lib.load(fast_spec(tmp_path, grid='"model.num_latents" = [4]')))
    assert "train.tensorboard" not in cfg_lib.non_default(run.config)  # a default: not hashed
    assert cfg_lib.non_default(run.config)["model.num_latents"] == 4
    other = spec_lib.expand(spec_lib.load(fast_spec(tmp_path, grid='"model.num_latents" = [4]')),
                            {"train.tensorboard": "false"})[0]
    assert other.id != run.id  # a value that is not the default is part of the identity


def test_shards_partition_the_runs(tmp_path):
    runs = spec_lib.expand(spec_lib.load(fast_spec(tmp_path, seeds="[0, 1, 2]")))
    shards = [spec_lib.shard(runs, i, 4) for i in range(4)]
    ids = sorted(r.id for s in shards for r in s)
    assert ids == sorted(r.id for r in runs)


@pytest.mark.parametrize("body,message", [
    ('[grid]\n"model.num_latent" = [1]\n', "unknown config key 'model.num_latent'"),
    ('[grid]\n"model.num_latents" = ["many"]\n', "model.num_latents='many' is not an integer"),
    ('[grid]\n"model.num_latents" = [0, 8]\n', "model.num_latents=0 must be > 0"),
    ('[grid]\n"model.num_latents" = []\n', "model.num_latents=[] must be a non-empty list"),
    ('[zip]\n"model.fourier_bands" = [2, 4]\n"model.max_resolution" = [4]\n',
     "[zip] lists must have equal lengths"),
    ('[fixed]\n"model.num_latents" = 4\n[grid]\n"model.num_latents" = [8]\n',
     "appears in both [fixed] and [grid]"),
    ('[grid]\n"model.num_latents" = [8\n', "bad TOML"),
    ('colour = "red"\n', "unknown top-level key 'colour'"),
    ('preset = "tiny"\n', "preset='tiny' is unknown"),
    ('seeds = []\n', "seeds=[] must be a non-empty list"),
    ('[grid]\n"model.num_latents" = ' + str(list(range(1, 300))) + '\n',
     "over the limit of 256; pass --force"),
    ('[grid]\n"model.num_cross_attends" = [2, 3]\n', "model.num_cross_attends=3 must divide"),
])
def test_spec_errors_name_the_file_key_and_value(tmp_path, body, message):
    path = write_spec(tmp_path, body)
    with pytest.raises(SpecError) as err:
        spec_lib.expand(spec_lib.load(path))
    assert message in str(err.value) and str(path) in str(err.value)


def test_cli_spec_error_exits_2_in_one_line_and_writes_nothing(tmp_path):
    path = write_spec(tmp_path, '[grid]\n"model.num_latents" = [0]\n')
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "suite", "run", str(path), "--out", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


def test_dry_run_lists_runs_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "suite", "run", str(fast_spec(tmp_path)),
                             "--out", str(out), "--dry-run"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "num_latents=4_seed=0_" in result.stdout and "2 runs" in result.stdout
    assert not out.exists()


@pytest.mark.parametrize("path", ABLATIONS, ids=[p.stem for p in ABLATIONS])
def test_every_committed_spec_validates(path):
    runs = spec_lib.expand(spec_lib.load(path))
    assert runs and len({r.id for r in runs}) == len(runs)


def starts(run_dir):
    log = (run_dir / "train.log").read_text()
    return log.count("training from step 0 "), log.count("resuming from step")


def test_completed_runs_are_skipped_failed_ones_retried_only_on_request(tmp_path):
    path = fast_spec(tmp_path, grid='"train.learning_rate" = [1e-3, 1e12]',
                     extra='"train.optimizer" = "sgd"')
    runs = spec_lib.expand(spec_lib.load(path))
    out = tmp_path / "out"
    first = run_grid(runs, out, progress=False)
    assert len(first.completed) == 1 and len(first.failed) == 1 and first.exit_code == 1
    good, bad = (out / "runs" / r.id for r in runs)
    assert run_status(good) == "completed" and run_status(bad) == "failed"
    mtime = (good / "summary.json").stat().st_mtime
    again = run_grid(runs, out, progress=False)
    assert (good / "summary.json").stat().st_mtime == mtime
    assert starts(bad) == (1, 0) and len(again.failed) == 1
    run_grid(runs, out, progress=False, retry_failed=True)
    assert (good / "summary.json").stat().st_mtime == mtime
    assert sum(starts(bad)) == 2  # retried once
    rows = {r["run_id"]: r for r in read_runs(out)}
    assert rows[bad.name]["status"] == "failed" and "non-finite" in rows[bad.name]["reason"]
    assert (out / "results.csv").read_text().count("\n") == 3


def test_runs_train_seed_by_seed_so_a_stopped_grid_has_whole_seeds(tmp_path):
    from suite.sweeps.runner import triage

    path = fast_spec(tmp_path, seeds="[2, 0, 1]")
    runs = spec_lib.expand(spec_lib.load(path))
    _, todo = triage(runs, tmp_path / "out", retry_failed=False)
    assert [(r.varied["seed"], r.varied["model.num_latents"]) for r in todo] == [
        (2, 4), (2, 8), (0, 4), (0, 8), (1, 4), (1, 8)]  # the spec's seed order, cells within


def test_a_partial_run_resumes_from_its_checkpoint(tmp_path):
    runs = spec_lib.expand(spec_lib.load(fast_spec(tmp_path, grid='"model.num_latents" = [4]')))
    out = tmp_path / "out"
    run_grid(runs, out, progress=False)
    run_dir = out / "runs" / runs[0].id
    (run_dir / "summary.json").unlink()  # as if the process died after its last checkpoint
    run_grid(runs, out, progress=False)
    assert starts(run_dir) == (1, 1)


def _runner(spec, out, *extra):
    return subprocess.Popen([sys.executable, "-m", "suite", "run", str(spec), "--out", str(out),
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})


@pytest.mark.slow
def test_two_runners_on_one_folder_train_every_run_exactly_once(tmp_path):
    spec = fast_spec(tmp_path, grid='"model.num_latents" = [2, 4, 6]')
    out = tmp_path / "out"
    a, b = _runner(spec, out), _runner(spec, out)
    a.communicate(timeout=600), b.communicate(timeout=600)
    run_dirs = sorted((out / "runs").iterdir())
    assert len(run_dirs) == 3
    for run_dir in run_dirs:
        assert run_status(run_dir) == "completed"
        assert starts(run_dir) == (1, 0), run_dir.name


@pytest.mark.slow
def test_a_killed_grid_continues_and_finishes_every_run_once(tmp_path):
    spec = fast_spec(tmp_path, grid='"model.num_latents" = [2, 4]',
                     extra='"train.steps" = 80\n').read_text().replace(
        '"train.steps" = 30\n', "")
    path = write_spec(tmp_path, spec, "k")
    out = tmp_path / "out"
    proc = _runner(path, out)
    deadline = time.time() + 300
    while not any((d / "checkpoints" / "20").exists() for d in (out / "runs").glob("*")):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    time.sleep(3)  # the orphaned trainer checkpoints on SIGTERM and exits
    done = _runner(path, out)
    _, err = done.communicate(timeout=600)
    assert done.returncode == 0, err
    for run_dir in (out / "runs").iterdir():
        assert run_status(run_dir) == "completed"
        fresh, resumed = starts(run_dir)
        assert fresh == 1 and resumed <= 1
    for run_dir in (out / "runs").iterdir():  # a resume never duplicates metric lines
        steps = [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if "train/loss" in r]
        assert steps == sorted(set(steps)) and steps[-1] == 80


def test_a_run_whose_data_is_missing_fails_visibly_and_the_grid_goes_on(tmp_path):
    path = write_spec(tmp_path, f'''
preset = "synthetic"
[fixed]
{FAST}
[grid]
"data.task" = ["synthetic", "mnist"]
"data.data_dir" = ["{tmp_path / 'nowhere'}"]
"data.index_dims" = ["8,8"]
"data.channels" = [1]
''')
    runs = spec_lib.expand(spec_lib.load(path))
    outcome = run_grid(runs, tmp_path / "out", progress=False)
    assert len(outcome.completed) == 1 and len(outcome.failed) == 1
    rows = {r["data.task"]: r for r in read_runs(tmp_path / "out")}
    assert rows["mnist"]["status"] == "failed" and "directory not found" in rows["mnist"]["reason"]


# ------------------------------------------------- the experiment a results folder holds


def test_overrides_make_another_experiment_with_a_folder_of_its_own(tmp_path):
    from suite.sweeps import record

    spec = spec_lib.load(fast_spec(tmp_path))
    assert record.default_out(spec, {}) == Path("results/t")
    assert record.default_out(spec, {"train.steps": "50"}) == Path("results/t+train.steps=50")
    long = record.default_out(spec, {f"model.k{i}": "x" * 20 for i in range(5)})
    assert len(long.name) < 100 and long.name.startswith("t+model.k0=")


def test_the_folder_records_its_spec_and_every_shards_runs_before_anything_trains(tmp_path):
    from suite.sweeps import record

    path = fast_spec(tmp_path, grid='"model.num_latents" = [2, 4, 6]')
    spec = spec_lib.load(path)
    runs = spec_lib.expand(spec)
    out = tmp_path / "out"
    held = record.claim(out, spec, runs, {}, "perceiver-suite run t.toml")
    assert set(held.runs) == {r.id for r in runs} and (out / "spec.toml").exists()
    assert record.read(out).configs[runs[0].id]["model.num_latents"] == 2
    quick = spec_lib.expand(spec, {"train.steps": "5"})
    kept = record.claim(out, spec, quick, {"train.steps": "5"}, "...")  # --out to the spec's
    assert kept.overrides == {} and set(kept.runs) == {r.id for r in runs}
    edited = spec_lib.expand(spec, {})[:1]  # the spec as written again takes its folder back
    assert set(record.claim(out, spec, edited, {}, "...").runs) == {edited[0].id}


@pytest.mark.slow
def test_a_sharded_grid_records_and_reports_the_runs_of_other_shards_as_missing(tmp_path):
    from suite.analysis.report import write_report

    path = fast_spec(tmp_path, grid='"model.num_latents" = [2, 4]')
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "suite", "run", str(path), "--out", str(out),
                             "--shard", "0/2"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    write_report(out, plots=False)
    md = (out / "report" / "table.md").read_text()
    assert md.count("(missing)") == 1 and "another shard" in md


@pytest.mark.slow
def test_a_quick_look_with_overrides_lands_in_its_own_folder_or_apart_in_the_specs(tmp_path):
    from suite.analysis import experiment

    path = fast_spec(tmp_path, grid='"model.num_latents" = [2]')
    quick = subprocess.run([sys.executable, "-m", "suite", "run", str(path), "train.steps=5"],
                           capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert quick.returncode == 0, quick.stderr
    assert "another experiment" in quick.stderr
    assert (tmp_path / "results" / "t+train.steps=5" / "runs").is_dir()
    out = tmp_path / "out"
    for extra in ([], ["train.steps=5"]):
        done = subprocess.run([sys.executable, "-m", "suite", "run", str(path), "--out", str(out),
                               *extra], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
    exp = experiment.load(out)
    assert len(exp.frame) == 1 and list(exp.frame["train.steps"]) == [30]
    assert len(exp.others) == 1 and "train.steps=5 (spec: 30)" in exp.others["differs"].iloc[0]
