"""Video and audio+video: patch grids and their positions, per-modality Fourier features,
modality padding and concatenation, masked modality dropout, video files decoded in the
loader, and runs that train, checkpoint and resume like any other."""

import csv
import json
import shutil
import wave
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from suite import config as C
from suite.analysis.describe import describe
from suite.cli import main
from suite.config.layout import layouts
from suite.data import load, train_batches
from suite.data.images import center_crop
from suite.data.video import clip, decode
from suite.errors import DataError
from suite.models.encodings import InputAdapter, MultimodalAdapter, grid_positions, patches
from suite.models.registry import build_model
from suite.training.trainer import train_and_evaluate

QUIET = {"progress": False, "log": lambda m: None}


def test_patches_put_each_patch_in_one_item_with_its_values_as_channels():
    x = np.arange(2 * 4 * 6 * 3, dtype=np.float32).reshape(2, 4, 6, 3)
    y = np.asarray(patches(jnp.asarray(x), (2, 3)))
    assert y.shape == (2, 2, 2, 18)
    np.testing.assert_array_equal(y[1, 1, 0], x[1, 2:4, 0:3].reshape(-1))


def test_a_patched_inputs_positions_are_those_of_the_patch_grid():
    m = C.build("digits", {"model.fourier_bands": 2}).model
    adapter = InputAdapter(m, (8, 8), 1, None, rngs=nnx.Rngs(0), patch=(2, 4))
    assert adapter.index_dims == (4, 2) and adapter.out_channels == 8 + 2 * (2 * 2 + 1)
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 1)).astype(np.float32)
    out = np.asarray(adapter(jnp.asarray(x)))
    assert out.shape == (1, 8, 18)
    np.testing.assert_allclose(out[0, :, 8:10], grid_positions((4, 2)), atol=1e-6)  # x, y


def av_config(**overrides):
    return C.build("shape_tone", {"model.fourier_bands": "audio=3,video=1", **overrides})


def test_each_modality_has_its_own_features_its_own_padding_and_a_place_in_order():
    config = av_config()
    lays = layouts(config)
    assert [lay.name for lay in lays] == ["audio", "video"]  # sorted, as the official order
    adapter = MultimodalAdapter(config.model, lays, rngs=nnx.Rngs(0))
    audio_w = 64 + 1 * (2 * 3 + 1)  # 64 samples a patch, 1-D positions, 3 bands
    video_w = 96 + 3 * (2 * 1 + 1)  # 2x4x4x3 values a patch, 3-D positions, 1 band
    assert [a.out_channels for a in adapter.adapters] == [audio_w, video_w]
    assert adapter.out_channels == max(audio_w, video_w) + 2  # model.modality_padding
    rng = np.random.default_rng(0)
    inputs = {"audio": jnp.asarray(rng.normal(size=(2, 4096, 1)), jnp.float32),
              "video": jnp.asarray(rng.normal(size=(2, 8, 16, 16, 3)), jnp.float32)}
    x, mask = adapter(inputs)
    assert mask is None and x.shape == (2, 64 + 64, adapter.out_channels)
    expected = []
    for name, sub, pad in zip(adapter.names, adapter.adapters, adapter.padding, strict=True):
        feats = np.asarray(sub(inputs[name]))
        fill = np.broadcast_to(np.asarray(pad[...]), (*feats.shape[:2], pad.shape[-1]))
        expected.append(np.concatenate([feats, fill], -1))
    np.testing.assert_allclose(np.asarray(x), np.concatenate(expected, 1), atol=1e-6)


def test_a_dropped_modality_is_masked_out_and_the_other_attended_as_if_alone():
    config = av_config()
    model = build_model(config, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(1)
    inputs = {"audio": jnp.asarray(rng.normal(size=(2, 4096, 1)), jnp.float32),
              "video": jnp.asarray(rng.normal(size=(2, 8, 16, 16, 3)), jnp.float32)}
    keep = {"audio": jnp.ones(2), "video": jnp.asarray([0.0, 1.0])}
    x, mask = model.encode_inputs(inputs, keep=keep)
    assert mask.shape == (2, 128) and not mask[0, 64:].any() and mask[1].all()
    z = jnp.broadcast_to(model.latents[...], (2, *model.latents.shape))
    cross = model.cross[0]
    masked = np.asarray(cross(z, x, mask=mask))
    alone = np.asarray(cross(z[:1], x[:1, :64]))  # the first example's audio, nothing else
    np.testing.assert_allclose(masked[0], alone[0], atol=1e-5)
    chunked = C.build("shape_tone", {"model.fourier_bands": "audio=3,video=1",
                                     "model.cross_attention_chunk": 16})
    streamed = build_model(chunked, rngs=nnx.Rngs(0)).cross[0]
    np.testing.assert_allclose(np.asarray(streamed(z, x, mask=mask))[0], alone[0], atol=1e-5)


def test_modality_dropout_is_per_example_in_training_only_and_never_drops_all():
    ds = load(av_config(**{"data.modality_dropout": "video=0.5"}).data)
    batch = next(iter(train_batches(ds, 64, seed=0)))
    kept = batch["keep"]["video"]
    assert set(np.unique(kept)) == {0.0, 1.0} and (batch["keep"]["audio"] == 1).all()
    assert 10 < kept.sum() < 54


def test_the_papers_audioset_model_has_13024_inputs():
    info = describe(C.build("audioset_av", {}), xla=False)
    assert info["input_items"] == 12_544 + 480 == 13_024
    assert info["inputs_per_modality"] == {"audio": [480, 128 + 129],
                                           "video": [12_544, 384 + 3 * 129]}
    assert info["input_channels"] == 771 + 2


# --------------------------------------------------------------------------- video files


def write_mp4(path: Path, frames: np.ndarray, fps: int = 10) -> Path:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as box:
        stream = box.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                box.mux(packet)
        for packet in stream.encode():
            box.mux(packet)
    return path


def moving_square(rng, right: bool, n: int, h=40, w=48) -> np.ndarray:
    frames = rng.integers(0, 30, (n, h, w, 3), dtype=np.uint8)
    for f in range(n):
        x = 4 + 2 * f if right else w - 12 - 2 * f
        frames[f, 12:22, max(0, x):x + 8] = 230
    return frames


@pytest.fixture(scope="module")
def video_root(tmp_path_factory):
    """train/ and val/ folders of two classes of MP4s of other sizes and lengths, one corrupt."""
    root = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 3)):
        for k, name in enumerate(("left", "right")):
            for i in range(n):
                write_mp4(root / split / name / f"{i}.mp4",
                          moving_square(rng, bool(k), int(rng.integers(10, 20))))
    (root / "train" / "left" / "3.mp4").write_bytes(b"RIFFnot a video")
    return root


VIDEO = {"data.num_classes": 2, "data.index_dims": "8,32,32", "train.batch_size": 4,
         "model.num_latents": 16, "model.latent_dim": 32, "model.self_heads": 2,
         "train.steps": 12, "train.log_every": 4, "train.checkpoint_every": 4,
         "train.keep_checkpoints": 3, "train.tensorboard": "false",
         "data.max_bad_fraction": 0.1}


def test_data_on_a_video_folder_prints_the_clip_shape_and_names_a_corrupt_file(
        video_root, capsys):
    args = ["data", "video_folder", "--data-dir", str(video_root), "data.num_classes=2",
            "data.index_dims=8,32,32"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "train / eval    16 / 6 examples" in out and "[8, 32, 32, 3]" in out
    assert "examples/s" in out
    assert "48x40 at 10 fps, " in out  # what reading does: the files' size and rate,
    assert "shorter side resized to 37, 32x32 crops" in out  # the resize and crop
    assert "shorter than 8 frames: last frame repeated" not in out  # 10-19 frames each
    assert main([*args, "--verify"]) == 1
    assert "train/left/3.mp4: not a readable video" in capsys.readouterr().out
    with pytest.raises(DataError, match="3.mp4: not a readable video"):
        ds = load(C.build("video_folder", {**VIDEO, "data.data_dir": str(video_root),
                                           "data.bad_examples": "fail"}).data)
        next(iter(train_batches(ds, 16, seed=0)))


def test_an_eval_clip_is_the_centre_and_a_training_clip_one_crop_for_every_frame():
    frames = np.random.default_rng(0).integers(0, 255, (20, 40, 48, 3), dtype=np.uint8)
    centre = clip(frames, (4, 16, 16), 2, None)
    assert centre.shape == (4, 16, 16, 3) and centre.dtype == np.float32
    np.testing.assert_allclose(centre[0], center_crop(frames[6], (16, 16)))  # (20 - 7) // 2
    np.testing.assert_allclose(centre[3], center_crop(frames[12], (16, 16)))  # every 2nd
    short = clip(frames[:3], (4, 16, 16), 1, None)  # a shorter file: its last frame repeats
    np.testing.assert_array_equal(short[2], short[3])
    still = np.repeat(frames[:1], 8, axis=0)  # one picture 8 times: one crop for all frames
    train = clip(still, (4, 16, 16), 1, np.random.default_rng(3), augment=True)
    assert train.dtype == np.uint8 and all((f == train[0]).all() for f in train)


def test_a_decoded_file_converts_only_the_frames_a_clip_picks(video_root):
    import av

    path = video_root / "val" / "right" / "0.mp4"
    frames = decode(path, (32, 32))
    with av.open(str(path)) as box:  # PyAV's own conversion of every frame, one by one
        every = np.stack([f.to_ndarray(format="rgb24", width=frames.width,
                                       height=frames.height) for f in box.decode(video=0)])
    assert frames.shape == every.shape and min(every.shape[1:3]) == round(32 / 0.875)
    np.testing.assert_array_equal(frames[[0, 3, 3]], every[[0, 3, 3]])
    np.testing.assert_array_equal(np.asarray(frames), every)
    np.testing.assert_array_equal(clip(frames, (4, 32, 32), 2, None),
                                  clip(every, (4, 32, 32), 2, None))


def test_data_fps_resamples_a_file_to_the_configs_frame_rate(tmp_path):
    grey = np.repeat(np.arange(0, 240, 12, dtype=np.uint8), 32 * 32 * 3).reshape(20, 32, 32, 3)
    path = write_mp4(tmp_path / "ramp.mp4", grey, fps=10)  # frame k has brightness 12 k
    own, half = decode(path, (16, 16)), decode(path, (16, 16), fps=5)
    assert len(own) == 20 and len(half) == 10 and own.source[2] == 10
    shown = np.asarray(half)[:, 8, 8, 0].astype(float) / 12  # every 2nd frame, in order
    np.testing.assert_allclose(shown, np.arange(0, 20, 2), atol=0.5)
    assert len(decode(path, (16, 16), fps=20)) == 39  # up: each frame shown twice


@pytest.mark.slow
def test_a_video_run_trains_skips_the_corrupt_file_and_resumes_bit_identically(
        video_root, tmp_path):
    config = C.build("video_folder", {**VIDEO, "data.data_dir": str(video_root)})
    done = train_and_evaluate(config, tmp_path / "a", **QUIET)
    assert done["status"] == "completed" and done["data_skipped"]["files"] == 1
    resumed = tmp_path / "b"
    shutil.copytree(tmp_path / "a", resumed)
    (resumed / "summary.json").unlink()
    shutil.rmtree(resumed / "checkpoints" / "12")
    assert train_and_evaluate(config, resumed, **QUIET)["metrics"] == done["metrics"]


# ------------------------------------------------------------------------- audio+video


def write_av_manifest(root: Path, rng, n_train=12, n_eval=4) -> Path:
    labels = ["bell", "car", "dog"]
    for split, n in (("train", n_train), ("eval", n_eval)):
        rows = []
        for i in range(n):
            tags = sorted(rng.choice(labels, int(rng.integers(1, 3)), replace=False))
            video = write_mp4(root / "clips" / f"{split}{i}.mp4",
                              moving_square(rng, "dog" in tags, 12))
            audio = root / "clips" / f"{split}{i}.wav"
            with wave.open(str(audio), "wb") as w:  # 8 kHz: resampled to the config's rate
                w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
                tone = 0.5 * np.sin(2 * np.pi * (900 if "bell" in tags else 300)
                                    * np.arange(8000) / 8000)
                w.writeframes((tone * 30000).astype("<i2").tobytes())
            rows.append({"video": video.relative_to(root).as_posix(),
                         "audio": audio.relative_to(root).as_posix(), "labels": ";".join(tags)})
        with open(root / f"{split}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, ["video", "audio", "labels"])
            writer.writeheader()
            writer.writerows(rows)
    return root


@pytest.mark.slow
def test_an_audio_video_run_trains_with_map_and_resumes_bit_identically(tmp_path):
    root = write_av_manifest(tmp_path / "av", np.random.default_rng(0))
    config = C.build("av_manifest", {
        "data.data_dir": str(root), "data.num_classes": 3, "data.modality_dropout": "video=0.3",
        "model.num_latents": 16, "model.latent_dim": 32, "model.self_heads": 2,
        "train.steps": 8, "train.batch_size": 4, "train.log_every": 4,
        "train.checkpoint_every": 4, "train.keep_checkpoints": 3,
        "train.tensorboard": "false"})
    done = train_and_evaluate(config, tmp_path / "a", **QUIET)
    assert done["status"] == "completed" and 0 <= done["metrics"]["eval/mAP"] <= 1
    resumed = tmp_path / "b"
    shutil.copytree(tmp_path / "a", resumed)
    (resumed / "summary.json").unlink()
    shutil.rmtree(resumed / "checkpoints" / "8")
    again = train_and_evaluate(config, resumed, **QUIET)
    assert again["metrics"] == done["metrics"]
    rows = [json.loads(ln) for ln in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == [4, 8]


def test_mel_features_are_a_frames_by_bands_grid():
    config = C.build("shape_tone", {"data.audio_features": "mel",
                                    "data.patch_size": "audio=1x64,video=2x4x4"})
    audio = next(lay for lay in layouts(config) if lay.name == "audio")
    assert audio.dims == (1 + 4096 // 160, 64) and audio.grid == (26, 1)
    batch = next(iter(train_batches(load(config.data), 8, seed=0)))
    assert batch["inputs"]["audio"].shape == (8, 26, 64, 1)
    assert np.isfinite(batch["inputs"]["audio"]).all()
