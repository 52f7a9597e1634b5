"""Perceiver IO: the query decoder as an ablation axis, the official ImageNet classifier's
size and FLOPs, and its input pipeline (fixed normalisation, the official eval crop,
MixUp and CutMix)."""

import numpy as np
import pytest
from flax import nnx

from suite import config as C
from suite.analysis.describe import describe
from suite.data import load, train_batches
from suite.data.images import EVAL_CROP, center_crop
from suite.errors import ConfigError
from suite.models.flops import analytic_flops
from suite.models.registry import abstract_model, build_model, count_params
from suite.training.trainer import train_and_evaluate

QUIET = {"progress": False, "log": lambda m: None}


def test_the_imagenet_io_preset_has_the_official_parameter_count_and_the_papers_flops():
    config = C.build("imagenet_io", {})
    assert count_params(abstract_model(config)) == 48_440_627  # the official code's count
    assert analytic_flops(config)["total"] == pytest.approx(407e9, rel=0.01)  # IO Table 7
    assert count_params(abstract_model(C.build("imagenet", {}))) == 44_912_254  # unchanged


def tiny(**overrides):
    return C.build("digits", {"model.num_latents": 8, "model.latent_dim": 32,
                              "model.self_heads": 2, "model.decoder": "query", **overrides})


def test_the_query_decoder_reads_the_latents_with_one_learned_query():
    model = build_model(tiny(), rngs=nnx.Rngs(0))
    assert model.decoder.query.shape == (1, 32) and not hasattr(model, "head")
    logits = model(np.zeros((3, 8, 8, 1), np.float32))
    assert logits.shape == (3, 10)
    wide = build_model(tiny(**{"model.decoder_queries": 4, "model.decoder_query_dim": 16,
                               "model.decoder_heads": 2}), rngs=nnx.Rngs(0))
    assert wide.decoder.query.shape == (4, 16)
    assert wide(np.zeros((2, 8, 8, 1), np.float32)).shape == (2, 10)


def test_without_the_query_residual_the_decoder_output_does_not_carry_the_query():
    with_res = build_model(tiny(), rngs=nnx.Rngs(0))
    without = build_model(tiny(**{"model.decoder_query_residual": False}), rngs=nnx.Rngs(0))
    z = np.random.default_rng(0).normal(size=(2, 8, 32)).astype(np.float32)
    q = np.broadcast_to(np.asarray(with_res.decoder.query[...]), (2, 1, 32))
    a = np.asarray(with_res.decoder.attend(q, z))
    b = np.asarray(without.decoder.attend(q, z))
    assert not np.allclose(a, b)
    assert count_params(with_res) == count_params(without)  # the same parameters


def test_the_decoders_analytic_flops_match_xla_and_the_decoder_is_the_perceivers_alone():
    info = describe(tiny(**{"data.index_dims": "8,8"}))
    assert info["flops_analytic_breakdown"]["decoder"] > 0
    assert info["flops_xla"] == pytest.approx(info["flops_analytic"], rel=0.25)
    with pytest.raises(ConfigError, match="model.decoder='query' is the Perceiver's"):
        C.build("digits", {"model.kind": "convnet", "model.decoder": "query"})


def test_the_official_eval_crop_is_the_centred_0_875_window_resized_bicubically():
    img = np.arange(300 * 400 * 3, dtype=np.float32).reshape(300, 400, 3) % 251
    out = center_crop(img.astype(np.uint8), (224, 224))
    side = int(EVAL_CROP * 300)  # [DM]: int(224 / 256 * min(h, w)), offsets (h - s + 1) // 2
    top, left = (300 - side + 1) // 2, (400 - side + 1) // 2
    window = img.astype(np.uint8)[top:top + side, left:left + side]
    assert out.shape == (224, 224, 3) and out.dtype == np.float32
    from PIL import Image

    expected = np.asarray(Image.fromarray(window[..., 0].astype(np.float32)).resize(
        (224, 224), Image.BICUBIC))
    np.testing.assert_allclose(out[..., 0], expected, rtol=0, atol=1e-4)


def test_imagenet_normalisation_uses_the_official_constants(tmp_path):
    from test_bad_data import jpeg_folders

    root = jpeg_folders(tmp_path / "imgs", per_class=4, val=1)
    ds = load(C.build("cifar10", {"data.task": "image_folder", "data.data_dir": str(root),
                                  "data.num_classes": 3, "data.index_dims": "32,32",
                                  "data.normalization": "imagenet"}).data)
    np.testing.assert_allclose(ds.mean, [123.675, 116.28, 103.53], rtol=1e-6)
    np.testing.assert_allclose(ds.std, [58.395, 57.12, 57.375], rtol=1e-6)


def mixed(**overrides):
    return C.build("digits", {"data.mixup": 0.2, "data.cutmix": 1.0, **overrides})


def test_mixup_and_cutmix_mix_each_example_with_its_partner_and_say_how_much():
    from suite.data.pipeline import _MixBatch

    rng = np.random.default_rng(0)
    p = rng.normal(size=(16, 8, 8, 1)).astype(np.float32)  # no two pixels alike
    batch = _MixBatch(0.2, 1.0).random_map({"inputs": p, "label": np.arange(16)}, rng)
    np.testing.assert_array_equal(batch["mix_label"], np.arange(16)[::-1])
    x, r = batch["inputs"], batch["mix_ratio"]
    assert r.shape == (16,) and ((0 <= r) & (r <= 1)).all()
    for i in range(8):  # the first half: MixUp, a blend of the whole images
        np.testing.assert_allclose(x[i], r[i] * p[i] + (1 - r[i]) * p[15 - i], atol=1e-5)
    for i in range(8, 16):  # the second half: CutMix, pixels from one or the other
        own = (x[i] == p[i]).all(-1)
        assert (own | (x[i] == p[15 - i]).all(-1)).all()
        assert own.mean() == pytest.approx(r[i], abs=1e-6)


def test_the_pipeline_mixes_the_same_examples_the_same_way_every_time():
    ds = load(mixed().data)
    plain = next(iter(train_batches(load(C.build("digits", {}).data), 16, seed=0)))
    batch = next(iter(train_batches(ds, 16, seed=0)))
    np.testing.assert_array_equal(batch["label"], plain["label"])  # the same examples
    np.testing.assert_array_equal(batch["mix_label"], plain["label"][::-1])
    again = next(iter(train_batches(ds, 16, seed=0)))
    np.testing.assert_array_equal(again["inputs"], batch["inputs"])  # grain's generator


def test_a_mixed_run_trains_and_resumes_bit_identically(tmp_path):
    import shutil

    config = mixed(**{"train.steps": 20, "train.log_every": 10, "train.checkpoint_every": 10,
                      "train.tensorboard": "false", "model.num_latents": 8,
                      "model.latent_dim": 32, "model.self_heads": 2})
    done = train_and_evaluate(config, tmp_path / "a", **QUIET)
    assert done["status"] == "completed"
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    (tmp_path / "b" / "summary.json").unlink()
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "20")
    assert train_and_evaluate(config, tmp_path / "b", **QUIET)["metrics"] == done["metrics"]


def test_cutmix_needs_an_image_grid():
    with pytest.raises(ConfigError, match="data.cutmix=1.0 pastes image boxes"):
        C.build("mnist1d", {"data.cutmix": 1.0})
