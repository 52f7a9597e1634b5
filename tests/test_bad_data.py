"""Bad data never costs a run: unreadable files are skipped, named and counted (or fatal,
on request), the final checkpoint precedes the final evaluation, every image format
decodes to its full range, and each malformed input is one line and exit status 2."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from suite import config as C
from suite.cli import main
from suite.data import load, train_batches
from suite.data.images import decode
from suite.errors import DataError
from suite.files import append_jsonl, read_jsonl
from suite.sweeps import spec as spec_lib
from suite.sweeps.placement import Devices, plan
from suite.training.trainer import train_and_evaluate

QUIET = {"progress": False, "log": lambda m: None}


def jpeg_folders(root: Path, per_class=40, val=10):
    """train/ and val/ folders of 3 classes of small JPEGs of assorted sizes, 000.jpg on."""
    from test_real_scale_data import write_jpeg_folders

    return write_jpeg_folders(root, per_class=per_class, val=val, name="{:03d}.jpg")


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # a download cut short
    return path


def image_config(root, **overrides):
    return C.build("cifar10", {"data.task": "image_folder", "data.data_dir": str(root),
                               "data.num_classes": 3, "data.index_dims": "16,16",
                               "model.num_latents": 16, "model.latent_dim": 32,
                               "model.self_heads": 2, "model.fourier_bands": 4,
                               "train.batch_size": 16, "train.steps": 30, "train.log_every": 10,
                               "train.eval_every": 15, "train.checkpoint_every": 10,
                               "train.keep_checkpoints": 3, "train.tensorboard": "false",
                               **overrides})


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """An image folder with one truncated JPEG in train/ and one in val/."""
    root = jpeg_folders(tmp_path_factory.mktemp("imgs") / "imgs")
    bad = [truncate(root / "train" / "cat" / "002.jpg"), truncate(root / "val" / "owl" / "005.jpg")]
    return root, [str(p) for p in bad]


@pytest.mark.slow
def test_a_run_skips_a_truncated_train_and_val_jpeg_names_both_and_resumes_identically(
        broken, tmp_path):
    root, bad = broken
    lines = []
    config = image_config(root)  # 1 of 30 val files is 3%: one file, under data.max_bad_files
    summary = train_and_evaluate(config, tmp_path / "a", progress=False, log=lines.append)
    assert summary["status"] == "completed"
    skipped = summary["data_skipped"]
    assert skipped["files"] == 2 and sorted(skipped["paths"]) == sorted(bad)
    assert skipped["examples"] >= 2  # the train file stood in for each time it was drawn
    assert all(sum(p in line for line in lines) == 1 for p in bad)  # named once each
    run = tmp_path / "b"
    shutil.copytree(tmp_path / "a", run)  # as a crash after the step-20 checkpoint leaves it
    (run / "summary.json").unlink()
    shutil.rmtree(run / "checkpoints" / "30")
    resumed = train_and_evaluate(config, run, **QUIET)
    assert resumed["metrics"] == summary["metrics"]
    assert resumed["data_skipped"] == summary["data_skipped"]


def test_data_verify_lists_exactly_the_unreadable_files(broken, capsys):
    root, bad = broken
    code = main(["data", "image_folder", "--verify", f"data.data_dir={root}",
                 "data.num_classes=3", "data.index_dims=16,16"])
    out = capsys.readouterr().out
    assert code == 1 and "2 unreadable" in out
    assert [ln.split()[1].rstrip(":") for ln in out.splitlines()[1:]] == bad


def test_replacements_are_deterministic_and_marked(broken):
    root, bad = broken
    ds = load(image_config(root).data)
    first, again = (next(iter(train_batches(ds, 120, seed=0))) for _ in range(2))
    np.testing.assert_array_equal(first["inputs"], again["inputs"])
    marked = first["bad"][first["bad"] >= 0]
    assert [str(ds.train.inputs.paths[i]) for i in marked] == [bad[0]]


def test_under_the_fail_policy_an_unreadable_file_fails_the_run_naming_it(broken, tmp_path):
    root, bad = broken
    with pytest.raises(DataError, match="002.jpg: not a readable image"):
        train_and_evaluate(image_config(root, **{"data.bad_examples": "fail"}), tmp_path, **QUIET)


def test_a_run_stops_once_the_unreadable_files_pass_the_share_and_the_count(broken, tmp_path):
    root, _ = broken
    summary = train_and_evaluate(image_config(root, **{"data.max_bad_files": 0}), tmp_path,
                                 **QUIET)  # 1 of 30 val files: 3%, and over 0 files
    assert summary["status"] == "failed" and summary["failure"] == "bad_data"
    assert "over data.max_bad_fraction=0.01 and data.max_bad_files=0" in summary["reason"]
    assert "perceiver-suite data image_folder --verify" in summary["reason"]


def test_one_bad_image_among_30_eval_images_completes_and_is_named(broken, tmp_path):
    root, bad = broken
    lines = []
    summary = train_and_evaluate(image_config(root), tmp_path, progress=False, log=lines.append)
    assert summary["status"] == "completed"  # 3% of val, over 1%, but one file of 5 allowed
    assert sorted(summary["data_skipped"]["paths"]) == sorted(bad)
    assert all(sum(p in line for line in lines) == 1 for p in bad)


@pytest.mark.slow
def test_a_failing_final_evaluation_keeps_the_final_checkpoint_and_a_retry_only_evaluates(
        tmp_path):
    root = jpeg_folders(tmp_path / "imgs")
    good = (root / "val" / "owl" / "005.jpg").read_bytes()
    truncate(root / "val" / "owl" / "005.jpg")  # index 25 of val: not in the load-time sample
    config = image_config(root, **{"data.bad_examples": "fail", "train.eval_every": 0})
    failed = train_and_evaluate(config, tmp_path / "run", **QUIET)
    assert failed["status"] == "failed" and failed["failure"] == "evaluation"
    assert "005.jpg" in failed["reason"]
    assert "checkpoint of step 30 and evaluates" in failed["reason"]
    assert (tmp_path / "run" / "checkpoints" / "30").is_dir()  # saved before the evaluation
    train_rows = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "train/loss" in r]
    (root / "val" / "owl" / "005.jpg").write_bytes(good)  # the user fixes the file
    lines = []
    done = train_and_evaluate(config, tmp_path / "run", retry_failed=True, progress=False,
                              log=lines.append)
    assert done["status"] == "completed" and "eval/accuracy" in done["metrics"]
    assert any("resuming from step 30" in ln for ln in lines)
    assert [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")
            if "train/loss" in r] == train_rows  # no step trained twice


# ---------------------------------------------------------------------- decoding


def save(tmp_path, name, image, **kw):
    path = tmp_path / name
    image.save(path, **kw)
    return path


def test_16_bit_and_float_images_keep_their_range(tmp_path):
    from PIL import Image

    ramp = np.linspace(0, 65535, 4 * 256).reshape(4, 256).astype(np.uint16)
    g16 = decode(save(tmp_path, "g16.png", Image.fromarray(ramp)), 1)
    assert g16.min() == 0 and g16.max() == 255 and (g16 == 255).mean() < 0.01  # was 99.6%
    assert abs(int(g16[2, 0, 0]) - 128) <= 1  # the middle of the ramp, mid-gray
    as_int = decode(save(tmp_path, "i.tiff", Image.fromarray(ramp.astype(np.int32), "I")), 3)
    assert as_int.shape == (4, 256, 3) and as_int.max() == 255 and as_int[0, 0, 0] == 0
    floats = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    f = decode(save(tmp_path, "f.tiff", Image.fromarray(floats)), 1)
    assert f.ravel()[0] == 0 and f.ravel()[-1] == 255


def test_palette_alpha_and_exif_orientation_are_handled(tmp_path):
    from PIL import Image

    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0], rgba[:2, :, 3] = 200, 255  # red, transparent in the lower half
    out = decode(save(tmp_path, "a.png", Image.fromarray(rgba, "RGBA")), 3)
    assert out[0, 0].tolist() == [200, 0, 0] and out[3, 0].tolist() == [255, 255, 255]
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    assert decode(save(tmp_path, "p.png", pal), 3)[0, 0].tolist() == [10, 20, 30]
    clear = Image.new("P", (4, 4), 0)
    clear.putpalette([9, 9, 9] * 256)
    assert decode(save(tmp_path, "t.png", clear, transparency=0), 3)[0, 0].tolist() == [255] * 3
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    tall = decode(save(tmp_path, "o.jpg", Image.new("RGB", (8, 4)), exif=exif), 3)
    assert tall.shape == (8, 4, 3)


def test_an_image_over_pillows_pixel_limit_is_named_not_raised(tmp_path, monkeypatch):
    from PIL import Image

    path = save(tmp_path, "big.png", Image.new("L", (64, 64)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 4096 pixels is then a "bomb"
    with pytest.raises(DataError, match="big.png: over Pillow's pixel limit"):
        decode(path, 1)


# ---------------------------------------------------------------------- placement


def test_workers_get_the_physical_devices_the_parents_mask_names():
    gpus = Devices("gpu", (0, 1), "NVIDIA H100")
    slots = plan(gpus, 2, environ={"CUDA_VISIBLE_DEVICES": "2,3"})
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["2", "3"]
    by_uuid = plan(gpus, 3, environ={"CUDA_VISIBLE_DEVICES": "GPU-aa,GPU-bb"})
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in by_uuid] == ["GPU-aa", "GPU-bb", "GPU-aa"]
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in plan(gpus, 2, environ={})] == ["0", "1"]
    tpus = plan(Devices("tpu", (0, 1), "TPU v4"), 2, environ={"TPU_VISIBLE_CHIPS": "4,5"})
    assert [s.env["TPU_VISIBLE_CHIPS"] for s in tpus] == ["4", "5"]


# ---------------------------------------------------------------- one clear line


def write_manifest(root: Path, train="path,labels\nclip.wav,bell\n", eval_=None):
    import wave

    root.mkdir(parents=True, exist_ok=True)
    with wave.open(str(root / "clip.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes(np.zeros(512, "<i2").tobytes())
    for name, text in (("train.csv", train), ("eval.csv", eval_ or train)):
        (root / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    return root


def one_line_exit_2(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


MANIFEST = ["data", "wav_manifest", "data.index_dims=512", "data.num_classes=2"]


def test_data_on_a_multi_label_task_reports_per_label_counts(tmp_path, capsys):
    root = write_manifest(tmp_path / "m", train="path,labels\nclip.wav,bell;drum\nclip.wav,drum\n")
    assert main([*MANIFEST, f"data.data_dir={root}"]) == 0
    assert "train per class 0: 1, 1: 2" in capsys.readouterr().out


@pytest.mark.parametrize("train,eval_,needle", [
    ("path,labels\nclip.wav,\n", None, "line 2 (clip.wav) has no labels"),
    ("path,labels\nclip.wav\n", None, "line 2 (clip.wav) has no labels"),
    (b"path,labels\nclip.wav,b\xffll\n", None, "train.csv: not UTF-8 text (byte 0xff"),
    ("path,labels\nclip.wav,bell\n", "path,labels\n", "eval.csv: lists no clips"),
], ids=["empty labels", "missing column", "non-UTF-8 byte", "header only"])
def test_a_malformed_manifest_is_one_line(tmp_path, capsys, train, eval_, needle):
    root = write_manifest(tmp_path / "m", train=train, eval_=eval_)
    assert needle in one_line_exit_2(capsys, [*MANIFEST, f"data.data_dir={root}"])


@pytest.mark.parametrize("override,needle", [
    ("train.learning_rate=inf", "train.learning_rate=inf must be a finite number"),
    ("model.latent_init_scale=nan", "model.latent_init_scale=nan must be a finite number"),
    (f"seed={2**64}", "must be in 0..4294967295"),
    ("data.data_dir=/tmp/caf\udcff", "is not valid UTF-8"),
], ids=["inf", "nan", "huge seed", "non-UTF-8 path"])
def test_impossible_values_are_one_line(capsys, override, needle):
    assert needle in one_line_exit_2(capsys, ["describe", "--no-xla", override])


def test_a_spec_whose_preset_is_not_a_string_is_one_line(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text('preset = ["digits"]\n[grid]\n"model.num_latents" = [4]\n')
    assert "preset=['digits'] is unknown" in one_line_exit_2(capsys, ["run", str(path),
                                                                      "--dry-run"])


def test_a_seed_override_of_a_spec_is_refused_naming_its_seeds(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text('preset = "digits"\nseeds = [0, 1]\n[grid]\n"model.num_latents" = [4]\n')
    line = one_line_exit_2(capsys, ["run", str(path), "seed=7", "--dry-run"])
    assert "seed=7" in line and "seeds = [0, 1]" in line


def test_train_without_val_holds_out_from_train_instead_of_a_class_named_train(tmp_path):
    root = jpeg_folders(tmp_path / "imgs", per_class=10, val=1)
    shutil.rmtree(root / "val")
    ds = load(image_config(root).data)
    assert len(ds.train) + len(ds.eval) == 30 and set(ds.train.labels) == {0, 1, 2}


@pytest.mark.slow
def test_a_mesh_whose_devices_do_not_divide_the_eval_batch_still_evaluates(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=3"}
    done = subprocess.run([sys.executable, "-m", "suite", "train", "--preset", "digits",
                           "--workdir", str(tmp_path), "train.mesh=data=-1", "train.steps=4",
                           "train.batch_size=24", "train.log_every=2", "model.num_latents=8",
                           "model.latent_dim=32", "model.self_heads=2",
                           "train.tensorboard=false"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["eval_batch_size"] % 3 == 0 and "eval/accuracy" in summary["metrics"]


# ------------------------------------------------------------- records and identity


def test_a_torn_last_metrics_line_is_dropped_and_appends_start_on_a_new_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"step": 10, "train/loss": 2.0})
    with open(path, "a") as f:
        f.write('{"step": 20, "train/loss": 2.1')  # killed mid-write
    append_jsonl(path, {"step": 20, "train/loss": 1.9})
    assert read_jsonl(path) == [{"step": 10, "train/loss": 2.0}, {"step": 20, "train/loss": 1.9}]


def test_a_resumed_run_drops_a_torn_line_before_it_appends(tmp_path):
    config = C.build("digits", {"train.steps": 20, "train.log_every": 10,
                                "train.checkpoint_every": 10, "train.tensorboard": "false",
                                "model.num_latents": 8, "model.latent_dim": 32,
                                "model.self_heads": 2})
    train_and_evaluate(config, tmp_path, **QUIET)
    (tmp_path / "summary.json").unlink()
    shutil.rmtree(tmp_path / "checkpoints" / "20")
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 20, "train/lo')
    lines = []
    train_and_evaluate(config, tmp_path, progress=False, log=lines.append)
    assert any("torn line" in ln for ln in lines)
    text = (tmp_path / "metrics.jsonl").read_text()
    assert text.endswith("\n") and all(ln.count("{") == 1 for ln in text.splitlines())


def test_the_data_location_the_environment_chose_is_part_of_a_runs_identity(
        tmp_path, monkeypatch):
    path = tmp_path / "s.toml"
    path.write_text('preset = "digits"\n[grid]\n"model.num_latents" = [4]\n')
    spec = spec_lib.load(path)
    monkeypatch.delenv("PERCEIVER_SUITE_DATA", raising=False)
    plain = spec_lib.expand(spec)[0].id
    monkeypatch.setenv("PERCEIVER_SUITE_DATA", str(tmp_path / "a"))
    here = spec_lib.expand(spec)[0].id
    monkeypatch.setenv("PERCEIVER_SUITE_DATA", str(tmp_path / "b"))
    there = spec_lib.expand(spec)[0].id
    assert len({plain, here, there}) == 3


def test_an_unreadable_clip_is_left_out_at_load_and_counted_or_fatal(tmp_path):
    root = write_manifest(tmp_path / "m", train="path,labels\nclip.wav,bell\nbad.wav,drum\n"
                          "clip.wav,drum\n")
    (root / "bad.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    cfg = C.build("digits", {"data.task": "wav_manifest", "data.data_dir": str(root),
                             "data.index_dims": "512", "data.num_classes": 2,
                             "train.loss": "sigmoid"}).data
    ds = load(cfg)
    assert len(ds.train) == 2 and [p for p, _ in ds.train.skipped] == [str(root / "bad.wav")]
    with pytest.raises(DataError, match="bad.wav: not a readable PCM WAV file"):
        load(C.build("digits", {"data.task": "wav_manifest", "data.data_dir": str(root),
                                "data.index_dims": "512", "data.num_classes": 2,
                                "train.loss": "sigmoid", "data.bad_examples": "fail"}).data)
