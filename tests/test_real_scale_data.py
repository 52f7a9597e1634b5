"""Data at real scale: image folders stream from disk with Inception crops and
RandAugment; multi-label audio trains with a sigmoid loss and reports mAP."""

import csv
import json
import wave
from pathlib import Path

import numpy as np
import pytest

from suite import config as C
from suite.analysis.report import write_report
from suite.data import eval_batches, load, train_batches
from suite.data.images import ImageFiles, center_crop, randaugment, random_resized_crop
from suite.errors import ConfigError, DataError
from suite.training.steps import mean_average_precision
from suite.training.trainer import train_and_evaluate

QUIET = {"progress": False, "log": lambda m: None}


def write_jpeg_folders(root: Path, classes=("cat", "dog", "owl"), per_class=70, seed=0,
                       val=None, name="{}.jpg"):
    """train/ and val/ class folders of JPEGs of assorted sizes (``val``: per class,
    default a fifth of ``per_class``)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("val", per_class // 5 if val is None else val)):
        for k, c in enumerate(classes):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                h, w = rng.integers(40, 90, 2)
                img = np.full((h, w, 3), 60 * k, np.uint8) + rng.integers(0, 40, (h, w, 3),
                                                                           dtype=np.uint8)
                Image.fromarray(img).save(root / split / c / name.format(i), quality=90)
    return root


def image_config(root, **overrides):
    return C.build("cifar10", {"data.task": "image_folder", "data.data_dir": str(root),
                               "data.num_classes": 3, "data.index_dims": "32,32", **overrides})


def test_image_folders_stream_files_instead_of_decoding_them_at_load(tmp_path):
    root = write_jpeg_folders(tmp_path / "imgs")
    ds = load(image_config(root).data)
    assert isinstance(ds.train.inputs, ImageFiles) and len(ds.train) == 210
    assert ds.train.inputs.shape == (210, 32, 32, 3) and len(ds.eval) == 42
    assert ds.mean.shape == (3,) and (ds.std > 0).all()
    batch = next(iter(train_batches(ds, 16, seed=0)))
    assert batch["inputs"].shape == (16, 32, 32, 3) and batch["inputs"].dtype == np.float32
    first, again = (next(iter(eval_batches(ds, 8)))["inputs"] for _ in range(2))
    np.testing.assert_array_equal(first, again)  # evaluation is deterministic


def test_training_crops_vary_and_keep_the_output_size(tmp_path):
    img = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    rng = np.random.default_rng(1)
    crops = [random_resized_crop(img, (32, 32), rng) for _ in range(8)]
    assert all(c.shape == (32, 32, 3) and c.dtype == np.uint8 for c in crops)
    assert len({c.tobytes() for c in crops}) == 8
    assert center_crop(img, (32, 32)).shape == (32, 32, 3)
    augmented = randaugment(crops[0], layers=4, magnitude=5, rng=rng)
    assert augmented.shape == (32, 32, 3) and not np.array_equal(augmented, crops[0])
    assert np.array_equal(randaugment(crops[0], 0, 5, rng), crops[0])


def test_the_imagenet_preset_reads_a_standard_imagenet_layout(tmp_path):
    root = write_jpeg_folders(tmp_path / "ilsvrc", classes=("n01440764", "n01443537"),
                              per_class=10)
    config = C.build("imagenet", {"data.data_dir": str(root), "data.index_dims": "48,48"})
    assert config.data.randaugment_layers == 4 and config.data.randaugment_magnitude == 5
    ds = load(config.data)
    batch = next(iter(train_batches(ds, 4, seed=0)))
    assert batch["inputs"].shape == (4, 48, 48, 3) and set(batch["label"]) <= {0, 1}


def test_a_broken_image_is_named(tmp_path):
    root = write_jpeg_folders(tmp_path / "imgs", per_class=5)
    (root / "train" / "cat" / "0.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"0\.jpg: not a readable image"):
        load(image_config(root, **{"data.bad_examples": "fail"}).data)
    for path in (root / "train").rglob("*.jpg"):  # a folder of no images at all
        path.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"none of 15 sampled files decodes"):
        load(image_config(root).data)


def test_a_small_perceiver_trains_on_streamed_images(tmp_path):
    root = write_jpeg_folders(tmp_path / "imgs")
    config = image_config(root, **{"train.steps": 30, "train.batch_size": 16,
                                   "data.augment": "true", "data.randaugment_layers": 2,
                                   "train.tensorboard": "false", "data.num_workers": 1})
    summary = train_and_evaluate(config, tmp_path / "run", **QUIET)
    assert summary["status"] == "completed" and summary["metrics"]["eval/accuracy"] > 0.5


def write_wav_manifest(root: Path, n_train=160, n_eval=60, samples=512):
    """Clips with one or two of 4 labels; each label is a loud burst in its own quarter."""
    rng = np.random.default_rng(0)
    names = ["bell", "drum", "voice", "wind"]
    (root / "clips").mkdir(parents=True)
    for split, n in (("train", n_train), ("eval", n_eval)):
        rows = []
        for i in range(n):
            labels = sorted(rng.choice(names, size=int(rng.integers(1, 3)), replace=False))
            x = 0.05 * rng.normal(size=samples)
            for label in labels:
                q = names.index(label) * samples // 4
                x[q:q + samples // 4] += 0.8 * rng.choice([-1, 1], samples // 4)
            path = f"clips/{split}_{i}.wav"
            with wave.open(str(root / path), "wb") as w:
                w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
                w.writeframes((np.clip(x, -1, 1) * 32000).astype("<i2").tobytes())
            rows.append({"path": path, "labels": ";".join(labels)})
        with open(root / f"{split}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, ["path", "labels"])
            writer.writeheader()
            writer.writerows(rows)
    return root


def test_multi_label_clips_load_as_multi_hot_vectors(tmp_path):
    root = write_wav_manifest(tmp_path / "audio")
    config = C.build("wav_manifest", {"data.data_dir": str(root), "data.num_classes": 4,
                                      "data.index_dims": "512"})
    ds = load(config.data)
    assert ds.train.labels.shape == (160, 4) and ds.train.labels.dtype == np.float32
    assert set(ds.train.labels.sum(axis=1)) <= {1.0, 2.0}
    batch = next(iter(train_batches(ds, 8, seed=0)))
    assert batch["label"].shape == (8, 4) and batch["inputs"].shape == (8, 512, 1)


def test_multi_label_tasks_need_the_sigmoid_loss():
    with pytest.raises(ConfigError, match="train.loss='sigmoid', not 'softmax'"):
        C.build("wav_manifest", {"train.loss": "softmax"})


def test_map_is_the_mean_over_classes_of_each_column_average_precision():
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], np.float32)
    assert mean_average_precision(labels, labels) == pytest.approx(1.0)  # positives first
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.2, 0.8]], np.float32)
    # class 0 (column 0): its positives rank 1st and 4th -> AP (1/1 + 2/4) / 2 = 0.75;
    # class 1: its positives rank 1st and 3rd -> AP (1/1 + 2/3) / 2; mAP is their mean.
    expected = np.mean([(1 / 1 + 2 / 4) / 2, (1 / 1 + 2 / 3) / 2])
    assert mean_average_precision(labels, scores) == pytest.approx(expected)


def test_a_multi_label_run_trains_with_sigmoid_and_the_report_shows_map(tmp_path):
    root = write_wav_manifest(tmp_path / "audio")
    out = tmp_path / "grid"
    config = C.build("wav_manifest", {"data.data_dir": str(root), "data.num_classes": 4,
                                      "data.index_dims": "512", "train.steps": 150,
                                      "train.batch_size": 32, "train.tensorboard": "false"})
    summary = train_and_evaluate(config, out / "runs" / "a", **QUIET)
    assert summary["metrics"]["eval/mAP"] > 0.6  # chance is about 0.4
    write_report(out, plots=False)
    md = (out / "report" / "table.md").read_text()
    assert "eval/mAP (%)" in md and json.loads((out / "runs" / "a" / "config.json").read_text(
    ))["train"]["loss"] == "sigmoid"
