"""Small things a researcher meets at the command line: scaling says what it does from
the start, an interrupted grid's bar counts what finished, describe shows the keys the
model reads, presets line up, spec and data mistakes name the key, help shows one %."""

import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from suite.analysis.describe import describe, render
from suite.benchmarks import scaling
from suite.cli import build_parser, main
from suite.config import build
from suite.config.presets import PRESETS, table
from suite.errors import SpecError
from suite.sweeps import spec as spec_lib


def test_scaling_says_what_it_does_before_each_point(monkeypatch):
    done = lambda config, label, batch, **kw: {"M": 64, "status": "analysed"}  # noqa: E731
    monkeypatch.setattr(scaling, "point", done)
    lines = []
    scaling.sweep(["perceiver", "transformer"], [8, 16], do_measure=False,
                  max_memory_bytes=2**30, log=lines.append)
    assert lines[0] == ("4 points (2 models x 2 sizes): each compiled on abstract shapes; "
                        "a line as each starts and ends")
    assert lines[1] == "[1/4] perceiver M=64: compiling ..."
    assert lines[2].startswith("perceiver    M=     64") and lines[2].endswith("analysed")
    assert lines[7] == "[4/4] transformer M=256: compiling ..."
    assert len(lines) == 9


GRID = textwrap.dedent('''
    import sys
    from suite.sweeps import spec as spec_lib
    from suite.sweeps.runner import run_grid
    runs = spec_lib.expand(spec_lib.load(sys.argv[1]))
    outcome = run_grid(runs, sys.argv[2], spec_name="t", progress=True, stop_timeout=60)
    print(outcome.summary())
''')


@pytest.mark.slow
def test_after_ctrl_c_the_grids_bar_counts_only_the_runs_that_finished(tmp_path):
    spec = tmp_path / "t.toml"
    spec.write_text('preset = "synthetic"\n[fixed]\n"train.steps" = 100000\n'
                    '"train.log_every" = 1\n"train.eval_every" = 0\n'
                    '"train.checkpoint_every" = 100000\n')
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", GRID, str(spec), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})
    deadline = time.time() + 300
    while not any((out / "runs").glob("*/metrics.jsonl")):  # training has begun
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert stdout.strip() == "0 completed, 0 failed, 1 interrupted (rerun to resume)"
    last = [s for s in re.split(r"[\r\n]", stderr) if "run/s" in s or "s/run" in s][-1]
    assert re.search(r"\b0/1\b", last) and "interrupted=1" in last, last
    assert "100%" not in last


def model_section(text):
    return text.split("[model]\n")[1].split("[data]")[0]


def test_describe_shows_only_the_model_keys_the_kind_reads():
    perceiver = model_section(render(describe(build("digits"), xla=False)))
    assert not re.search(r"^  (num_layers|hidden_dim|patch_size) ", perceiver, re.M)
    assert perceiver.splitlines()[-1] == \
        "  (not read by model.kind='perceiver': num_layers, hidden_dim, patch_size)"
    assert re.search(r"^  num_latents +=", perceiver, re.M)
    transformer = model_section(render(describe(build("digits", {"model.kind": "transformer"}),
                                                xla=False)))
    assert re.search(r"^  num_layers +=", transformer, re.M)
    assert re.search(r"^  hidden_dim +=", transformer, re.M)
    assert not re.search(r"^  patch_size ", transformer, re.M)
    assert transformer.splitlines()[-1] == "  (not read by model.kind='transformer': patch_size)"


def test_presets_are_listed_in_aligned_columns():
    lines = table().splitlines()
    starts = [m.start() for m in re.finditer(r"-+", lines[1])]
    assert len(starts) == 7 and len(lines) == 2 + len(PRESETS)
    for line in [lines[0], *lines[2:]]:
        assert all(line[s] != " " and (s == 0 or line[s - 1] == " ") for s in starts), line
    assert lines[0].split()[:3] == ["preset", "task", "model"]
    digits = next(line for line in lines if line.startswith("digits "))
    ends = [*starts[1:], None]
    assert [digits[a:b].strip() for a, b in zip(starts, ends, strict=True)] == [
        "digits", "digits", "perceiver", "32 x 64", "2 x 2", "2", "true"]


@pytest.mark.parametrize("line,hint", [
    ("seed = [0, 1]", "unknown top-level key 'seed'; did you mean 'seeds'?"),
    ("presets = 'digits'", "unknown top-level key 'presets'; did you mean 'preset'?"),
    ('"model.num_latents" = 8',
     "unknown top-level key 'model.num_latents'; config keys go in [fixed], [grid] or [zip]"),
])
def test_a_misspelt_top_level_spec_key_gets_a_did_you_mean(tmp_path, line, hint):
    path = tmp_path / "s.toml"
    path.write_text(f'preset = "digits"\n{line}\n')
    with pytest.raises(SpecError) as error:
        spec_lib.load(path)
    assert str(error.value).startswith(f"{path}: {hint} (allowed: ")


def test_data_refuses_the_overrides_it_does_not_use_in_one_line(capsys):
    assert main(["data", "digits", "model.num_latents=3"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "perceiver-suite: error: data digits: model.num_latents=3 is not a data.* key; `data` "
        "loads the task only (model.* and train.* keys go to train, run or describe)"]


def test_no_help_text_shows_a_doubled_percent_sign():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    doubled = [name for name, sub in commands.items() if "%%" in sub.format_help()]
    assert doubled == []
    assert "95% t intervals" in " ".join(commands["report"].format_help().split())
