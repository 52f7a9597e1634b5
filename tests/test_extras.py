"""Video, audio and HDF5 readers are extras: digits installs and trains without them, and a
task that needs a missing one stops in one line naming the ``pip install`` that brings it."""

import dataclasses
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from suite import config as C
from suite.data import extras, video
from suite.errors import MissingExtraError
from suite.tasks import EXTRAS, TASKS, needed_extras

PYPROJECT = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
OPTIONAL = ("av", "librosa", "h5py")
# Run the CLI with the optional modules unimportable, as in an install without extras.
WITHOUT_EXTRAS = ("import sys\n"
                  f"for name in {OPTIONAL!r}:\n"
                  "    sys.modules[name] = None  # import raises ImportError\n"
                  "from suite.cli import main\n")


def names(requirements: list[str]) -> set[str]:
    return {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in requirements}


def without_extras(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS + code], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_the_base_install_has_no_video_audio_or_hdf5_reader():
    assert names(PYPROJECT["project"]["dependencies"]) & set(OPTIONAL) == set()


def test_each_extra_brings_the_module_the_suite_checks_for():
    optional = PYPROJECT["project"]["optional-dependencies"]
    assert {extra: names(optional[extra]) for extra in EXTRAS} == {
        "video": {"av"}, "audio": {"librosa"}, "modelnet": {"h5py"}}
    assert {extra: module for extra, (module, _) in EXTRAS.items()} == {
        "video": "av", "audio": "librosa", "modelnet": "h5py"}
    assert optional["all"] == ["perceiver-suite[video,audio,modelnet]"]
    assert "hypothesis" in names(optional["test"])


def test_every_task_names_only_known_extras():
    assert {e for info in TASKS.values() for e in info.extras} <= set(EXTRAS)


@pytest.mark.parametrize("task,fields,expected", [
    ("digits", {}, ()),
    ("fashion_mnist", {}, ()),
    ("shapes3d", {}, ()),
    ("video_folder", {}, ("video",)),
    ("wav_folder", {}, ("audio",)),
    ("audioset", {}, ("audio",)),
    ("modelnet40", {}, ("modelnet",)),
    ("av_manifest", {}, ("video", "audio")),
    ("shape_tone", {}, ()),  # procedural, raw samples
    ("shape_tone", {"audio_features": "mel"}, ("audio",)),
    ("shape_tone", {"audio_features": "mel", "modalities": ("video",)}, ()),
])
def test_the_extras_a_config_needs(task, fields, expected):
    data = C.build(task if task in C.PRESETS else None, {"data.task": task}).data
    assert needed_extras(dataclasses.replace(data, **fields)) == expected


def test_a_missing_extra_names_its_install_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)
    monkeypatch.setitem(sys.modules, "librosa", None)
    data = C.build("av_manifest").data
    with pytest.raises(MissingExtraError) as e:
        extras.require(data)
    assert str(e.value) == (
        "av_manifest needs av (decodes video files) and librosa (resamples audio, draws mel "
        "spectrograms), which are not installed: pip install 'perceiver-suite[video,audio]'")


def test_decoding_a_video_without_pyav_says_which_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'perceiver-suite\[video\]'$"):
        video.decode(tmp_path / "clip.mp4", (32, 32))


@pytest.mark.parametrize("task,extra", [
    ("video_folder", "video"), ("wav_folder", "audio"), ("modelnet40", "modelnet")])
def test_data_of_a_task_without_its_extra_exits_2_in_one_line(tmp_path, task, extra):
    # The folder is empty: the missing extra is said before any file is looked for.
    done = without_extras(f"sys.exit(main(['data', {task!r}, '--data-dir', {str(tmp_path)!r}]))",
                          tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0].startswith(f"perceiver-suite: error: {task} needs ")
    assert lines[0].endswith(f"not installed: pip install 'perceiver-suite[{extra}]'")


@pytest.mark.slow
def test_digits_describes_and_trains_without_any_extra(tmp_path):
    run = tmp_path / "run"
    train = ["train", "--preset", "digits", "--workdir", str(run), "train.steps=2",
             "train.eval_every=2", "train.checkpoint_every=2", "train.log_every=1",
             "train.batch_size=16", "model.num_latents=8", "model.latent_dim=16",
             "model.self_heads=2", "train.tensorboard=false"]
    done = without_extras("assert main(['describe', '--preset', 'digits', '--no-xla']) == 0\n"
                          f"sys.exit(main({train!r}))", tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and "eval/accuracy" in summary["metrics"]
