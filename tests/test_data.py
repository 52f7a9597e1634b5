"""Data: every real-format loader reads files written here in that exact format;
pipelines are deterministic, restorable and feed the same Perceiver."""

import gzip
import pickle
import struct
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from suite import config as C
from suite.data import eval_batches, load, model_kwargs, train_batches
from suite.data.formats import read_idx
from suite.errors import DataError
from suite.models.registry import build_model

FASHION = Path("/usr/share/datasets/fashion-mnist")


def cfg(task, data_dir=None, **overrides):
    o = {"data.task": task, **overrides}
    if data_dir is not None:
        o["data.data_dir"] = str(data_dir)
    return C.build(task if task in C.PRESETS else "digits", o)


# ------------------------------------------------------------------ file writers


def write_idx(path: Path, array: np.ndarray, compress=True):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    (gzip.open(path, "wb") if compress else open(path, "wb")).write(raw)


def write_mnist(root: Path, n_train=40, n_test=20, compress=True):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    sfx = ".gz" if compress else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte{sfx}", rng.integers(0, 256, (n, 28, 28)),
                  compress)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{sfx}", np.arange(n) % 10, compress)
    return root


def write_cifar10(root: Path, n=10):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": list(np.arange(n) % 10)}
        with open(root / name, "wb") as f:
            pickle.dump(batch, f)
    return root


def write_png_folders(root: Path, classes=("cat", "dog"), per_class=5, size=(40, 30)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")
    return root


def write_wav_folders(root: Path, classes=("low", "high"), per_class=4, n=500):
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            t = np.arange(n) / 8000
            x = (0.5 * np.sin(2 * np.pi * (200 + 800 * k) * t) * 32767).astype("<i2")
            with wave.open(str(root / c / f"{i}.wav"), "wb") as w:
                w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
                w.writeframes(x.tobytes())
    return root


def write_modelnet(root: Path, n=8, points=64):
    import h5py

    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for part in ("train0", "test0"):
        with h5py.File(root / f"ply_data_{part}.h5", "w") as f:
            f["data"] = rng.normal(size=(n, points, 3)).astype(np.float32)
            f["label"] = (np.arange(n) % 40).reshape(n, 1).astype(np.uint8)
    return root


# ----------------------------------------------------------------- the formats


def test_gzip_idx_files_load_as_mnist(tmp_path):
    ds = load(cfg("mnist", write_mnist(tmp_path / "m")).data)
    assert ds.train.inputs.shape == (40, 28, 28, 1) and len(ds.eval) == 20
    assert ds.train.labels[:3].tolist() == [0, 1, 2]


def test_uncompressed_idx_files_load_too(tmp_path):
    ds = load(cfg("mnist", write_mnist(tmp_path / "m", compress=False)).data)
    assert len(ds.train) == 40


def test_cifar10_python_batches_load(tmp_path):
    ds = load(cfg("cifar10", write_cifar10(tmp_path / "c")).data)
    assert ds.train.inputs.shape == (50, 32, 32, 3) and len(ds.eval) == 10


def test_png_class_folders_are_resized_and_held_out(tmp_path):
    root = write_png_folders(tmp_path / "imgs")
    ds = load(cfg("image_folder", root, **{"data.num_classes": 2,
                                           "data.eval_fraction": 0.2}).data)
    assert ds.train.inputs.shape == (8, 32, 32, 3) and len(ds.eval) == 2
    assert set(ds.train.labels) | set(ds.eval.labels) == {0, 1}


def test_wav_class_folders_load_as_1d_signals(tmp_path):
    root = write_wav_folders(tmp_path / "wav")
    ds = load(cfg("wav_folder", root, **{"data.num_classes": 2, "data.index_dims": "1024",
                                         "data.eval_fraction": 0.25,
                                         "data.sample_rate": 8000}).data)
    assert ds.train.inputs.shape == (6, 1024, 1)
    assert np.abs(ds.train.inputs[0, :500]).max() == pytest.approx(0.5, abs=0.01)
    assert np.all(ds.train.inputs[:, 500:] == 0)  # zero-padded past the clip
    assert ds.train.notes == ("audio: 8 clips (8 at 8,000 Hz); 0 resampled to 8,000 Hz "
                              "(data.sample_rate), 8 shorter than 1,024 samples zero-padded, "
                              "0 longer cut",)  # the folder's, before the hold-out


def test_wav_clips_at_another_rate_are_resampled_to_the_configs(tmp_path):
    root = write_wav_folders(tmp_path / "wav", per_class=2)  # 500 samples at 8 kHz
    ds = load(cfg("wav_folder", root, **{"data.num_classes": 2, "data.index_dims": "1024",
                                         "data.eval_fraction": 0.25,
                                         "data.sample_rate": 16000}).data)
    low = ds.train.inputs[list(ds.train.labels).index(1), :, 0]  # classes: high, low
    assert np.all(low[1000:] == 0) and np.abs(low[990:1000]).max() > 0  # 1,000 samples now
    crossings = np.count_nonzero(np.diff(np.sign(low[50:950])) != 0)  # 200 Hz keeps its
    assert crossings == pytest.approx(2 * 200 * 900 / 16000, abs=2)  # pitch at 16 kHz
    assert "4 resampled to 16,000 Hz" in ds.train.notes[0]


def test_modelnet40_hdf5_loads_points_as_positions(tmp_path):
    ds = load(cfg("modelnet40", write_modelnet(tmp_path / "mn"),
                  **{"data.index_dims": "64"}).data)
    assert ds.train.inputs.shape == (8, 64, 3) and ds.train.positions is not None


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_debians_package():
    ds = load(cfg("fashion_mnist").data)
    assert ds.train.inputs.shape == (60_000, 28, 28, 1) and len(ds.eval) == 10_000
    assert np.bincount(ds.train.labels).tolist() == [6000] * 10


# -------------------------------------------------------------- bad input


def test_missing_directory_names_where_and_how(tmp_path):
    with pytest.raises(DataError, match=r"mnist: directory not found in .*nope.*IDX|idx"):
        load(cfg("mnist", tmp_path / "nope").data)


def test_wrong_magic_number(tmp_path):
    root = write_mnist(tmp_path / "m")
    (root / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x09\x01abcd"))
    with pytest.raises(DataError, match="wrong magic number 0x00000901"):
        load(cfg("mnist", root).data)


def test_truncated_idx_file(tmp_path):
    root = write_mnist(tmp_path / "m")
    path = root / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)
    path.write_bytes(path.read_bytes()[:50])  # a cut-off gzip stream
    with pytest.raises(DataError, match="truncated"):
        load(cfg("mnist", root).data)


def test_label_out_of_range(tmp_path):
    root = write_mnist(tmp_path / "m")
    write_idx(root / "train-labels-idx1-ubyte.gz", np.full(40, 12))
    with pytest.raises(DataError, match="label 12 is out of range for 10 classes"):
        load(cfg("mnist", root).data)


def test_empty_class_folder(tmp_path):
    root = write_png_folders(tmp_path / "imgs")
    (root / "zebra").mkdir()
    with pytest.raises(DataError, match="zebra: empty class folder"):
        load(cfg("image_folder", root).data)


def test_cli_reports_bad_data_in_one_line_with_exit_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "suite", "data", "cifar10", "--data-dir",
                             str(tmp_path / "none")], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "none" in result.stderr


# ----------------------------------------------------------- pipelines


def test_same_seed_gives_the_same_batches_and_another_seed_does_not():
    ds = load(cfg("digits", **{"data.augment": True}).data)
    a, b, c = (iter(train_batches(ds, 32, seed)) for seed in (0, 0, 1))
    for _ in range(3):
        x, y, z = next(a), next(b), next(c)
        np.testing.assert_array_equal(x["inputs"], y["inputs"])
    assert not np.array_equal(x["label"], z["label"])


def test_restored_iterator_continues_exactly():
    ds = load(cfg("digits", **{"data.augment": True}).data)
    it = iter(train_batches(ds, 64, 0))
    for _ in range(30):  # past one epoch of 1,617 examples
        next(it)
    state = it.get_state()
    expected = [next(it)["inputs"] for _ in range(3)]
    fresh = iter(train_batches(ds, 64, 0))
    fresh.set_state(state)
    for want in expected:
        np.testing.assert_array_equal(next(fresh)["inputs"], want)


def test_epochs_are_reshuffled():
    ds = load(cfg("synthetic").data)
    it = iter(train_batches(ds, 512, 0))
    assert not np.array_equal(next(it)["label"], next(it)["label"])


def test_fixed_permutation_moves_inputs_and_their_positions_together():
    plain = load(cfg("digits").data)
    perm = load(cfg("digits", **{"data.permutation": "fixed"}).data)
    x = next(iter(eval_batches(plain, 8)))
    p = next(iter(eval_batches(perm, 8)))
    assert p["inputs"].shape == (8, 64, 1) and p["index"].shape == (8, 64)
    flat = x["inputs"].reshape(8, 64, 1)
    np.testing.assert_array_equal(p["inputs"], flat[:, p["index"][0]])
    assert not np.array_equal(p["index"][0], np.arange(64))


def test_point_clouds_are_centred_in_the_unit_cube_and_jittered():
    ds = load(cfg("shapes3d", **{"data.augment": True}).data)
    b = next(iter(train_batches(ds, 16, 0)))
    np.testing.assert_allclose(b["positions"].mean(axis=1), 0, atol=1e-5)
    assert np.abs(b["positions"]).max(axis=(1, 2)) == pytest.approx(np.ones(16))


def test_eval_batches_cover_the_split_once_in_order():
    ds = load(cfg("digits").data)
    labels = np.concatenate([b["label"] for b in eval_batches(ds, 64)])
    np.testing.assert_array_equal(labels, ds.eval.labels)


def test_multi_process_loading_gives_the_same_batches():
    ds = load(cfg("synthetic").data)
    ds_mp = load(cfg("synthetic", **{"data.num_workers": 2}).data)
    a, b = iter(train_batches(ds, 32, 0)), iter(train_batches(ds_mp, 32, 0))
    for _ in range(3):
        np.testing.assert_array_equal(next(a)["inputs"], next(b)["inputs"])


@pytest.mark.parametrize("task,overrides", [
    ("digits", {}), ("digits", {"data.permutation": "fixed"}), ("shapes3d", {}),
    ("mnist1d", {}), ("synthetic", {}), ("mnist", {}), ("cifar10", {}), ("image_folder", {}),
    ("wav_folder", {"data.index_dims": "256"}), ("modelnet40", {"data.index_dims": "64"}),
])
def test_a_batch_from_every_task_goes_through_the_same_perceiver(task, overrides, tmp_path):
    writers = {"mnist": write_mnist, "cifar10": write_cifar10, "image_folder": write_png_folders,
               "wav_folder": write_wav_folders, "modelnet40": write_modelnet}
    if task in writers:
        overrides = {**overrides, "data.data_dir": str(writers[task](tmp_path / task))}
    base = {"model.num_latents": 8, "model.latent_dim": 16, "model.self_heads": 2,
            "model.num_blocks": 1, "model.num_cross_attends": 1, "model.fourier_bands": 4}
    config = cfg(task, **base, **overrides)
    ds = load(config.data)
    batch = next(iter(train_batches(ds, 4, 0)))
    logits = build_model(config, rngs=nnx.Rngs(0))(**model_kwargs(batch))
    assert logits.shape == (4, config.data.num_classes)
    assert np.all(np.isfinite(np.asarray(logits)))


def test_a_validation_split_is_carved_from_training_and_never_reads_the_test_split():
    plain = load(cfg("digits", **{"data.eval_fraction": 0.2}).data)  # digits carves its own
    val = load(cfg("digits", **{"data.eval_split": "validation",
                                "data.eval_fraction": 0.2}).data)
    n = len(plain.train)
    assert len(val.eval) == round(0.2 * n) and len(val.train) + len(val.eval) == n
    train_rows = {r.tobytes() for r in plain.train.inputs}
    assert all(r.tobytes() in train_rows for r in val.eval.inputs)  # drawn from training
    held = {r.tobytes() for r in val.eval.inputs}
    assert not held & {r.tobytes() for r in val.train.inputs}  # and removed from it
    shares = np.bincount(val.eval.labels, minlength=10) / len(val.eval)
    assert np.abs(shares - np.bincount(plain.train.labels) / n).max() < 0.01  # stratified
    other_seed = load(cfg("digits", **{"data.eval_split": "validation", "data.eval_fraction": 0.2,
                                       }).data, seed=3)
    assert np.array_equal(other_seed.eval.inputs, val.eval.inputs)  # one split for every seed
    limited = [load(cfg("digits", **{"data.eval_split": "validation", "data.eval_limit": 50}
                        ).data, seed=s).eval.inputs for s in (0, 3)]
    assert np.array_equal(*limited)  # and one subset of it


def test_a_validation_split_never_takes_a_classs_only_training_example():
    from suite.data import pipeline

    labels = np.array([0] * 100 + [1], dtype=np.int32)
    split = pipeline.Split(np.zeros((101, 2, 1), np.float32), labels)
    with pytest.raises(DataError, match="every training example of class 1"):
        pipeline.validation(split, 0.1)
