"""Attention maps: every latent's scaled pre-softmax cross-attention logits over the
inputs, per cross-attend; exact whatever path the model computes with; for images, 1-D
signals and point clouds; written and drawn by ``perceiver-suite attention``."""

import numpy as np
import pytest
from flax import nnx

from suite import config as C
from suite.analysis.attention import check_overrides, example_of, maps_for
from suite.cli import main
from suite.errors import SuiteError
from suite.models.attention_maps import cross_attention_maps
from suite.models.registry import build_model
from suite.training.trainer import train_and_evaluate

QUIET = {"progress": False, "log": lambda m: None}


def test_a_latent_whose_query_is_an_inputs_key_direction_peaks_at_that_input():
    config = C.build("synthetic", {"data.index_dims": "16", "data.channels": 8,
                                   "model.position_encoding": "none", "model.latent_dim": 8,
                                   "model.cross_qk_channels": 8, "model.num_latents": 4,
                                   "model.self_heads": 2})
    model = build_model(config, rngs=nnx.Rngs(0))
    attn = model.cross[0].attn
    for proj in (attn.q, attn.k):  # queries and keys: the normalised vectors themselves
        proj.kernel[...] = np.eye(8, dtype=np.float32)
        proj.bias[...] = np.zeros(8, np.float32)
    x = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)
    target = 11
    v = (x[target] - x[target].mean()) / np.sqrt(x[target].var() + 1e-5)
    latents = np.asarray(model.latents[...]).copy()
    latents[0] = v
    model.latents[...] = latents
    maps = cross_attention_maps(model, x.reshape(16, 8))
    assert int(np.argmax(maps[1][0, 0])) == target
    np.testing.assert_allclose(maps[1][0, 0, target], v @ v / np.sqrt(8), rtol=1e-4)


def digits(**overrides):
    return C.build("digits", {"model.num_latents": 8, "model.latent_dim": 32,
                              "model.self_heads": 2, **overrides})


@pytest.mark.parametrize("fast,tol", [
    ({"model.scan_repeats": True, "model.cross_attention_chunk": 16}, 1e-4),
    ({"model.scan_repeats": False, "model.remat": True}, 1e-4),
    ({"model.weight_sharing": False}, None),
    ({"model.precision": "bfloat16"}, 0.1),
], ids=["scanned+chunked", "unrolled+remat", "unshared", "bfloat16"])
def test_the_maps_of_every_compute_path_equal_the_plain_float32_path(fast, tol):
    x = np.random.default_rng(0).normal(size=(8, 8, 1)).astype(np.float32)
    plain = digits(**{"model.scan_repeats": False, **{k: v for k, v in fast.items()
                                                      if k == "model.weight_sharing"}})
    ref = cross_attention_maps(build_model(plain, rngs=nnx.Rngs(0)), x)
    got = cross_attention_maps(build_model(digits(**fast), rngs=nnx.Rngs(0)), x)
    assert sorted(got) == [1, 2] and got[1].shape == (1, 8, 64)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], atol=tol or 1e-5, rtol=tol or 1e-5)


@pytest.mark.parametrize("preset,overrides,shape", [
    ("digits", {}, (1, 32, 8, 8)),
    ("mnist1d", {}, (1, 32, 40)),
    ("shapes3d", {}, (1, 32, 512)),
    ("digits", {"model.cross_heads": 3, "model.cross_qk_channels": 6}, (3, 32, 8, 8)),
    ("digits", {"data.permutation": "fixed"}, (1, 32, 8, 8)),
], ids=["image", "1-D signal", "point cloud", "three heads", "permuted pixels"])
def test_maps_have_the_shape_of_the_input_grid(preset, overrides, shape):
    config = C.build(preset, overrides)
    model = build_model(config, rngs=nnx.Rngs(0))
    example = example_of(config, "eval", None, 0)
    maps = maps_for(model, config, example, None)
    assert all(m.shape == shape for m in maps.values())


def test_a_permuted_inputs_maps_are_put_back_on_its_grid():
    plain, permuted = digits(), digits(**{"data.permutation": "fixed"})
    model = build_model(plain, rngs=nnx.Rngs(0))  # the same parameters either way
    a = maps_for(model, plain, example_of(plain, "eval", None, 0), [1])[1]
    b = maps_for(model, permuted, example_of(permuted, "eval", None, 0), [1])[1]
    np.testing.assert_allclose(a, b, atol=1e-4)  # a Perceiver sees a set


def test_an_override_that_changes_the_parameters_is_refused():
    check_overrides({"model.precision": "bfloat16", "model.cross_attention_chunk": "16"})
    with pytest.raises(SuiteError, match="model.num_latents=4: attention maps are of the "
                                         "trained model"):
        check_overrides({"model.num_latents": "4"})


@pytest.mark.slow
def test_the_attention_command_on_a_digits_run_writes_both_maps_and_the_figure(tmp_path,
                                                                               capsys):
    run = tmp_path / "run"
    train_and_evaluate(C.build("digits", {"train.steps": 10, "train.log_every": 5,
                                          "train.tensorboard": "false"}), run, **QUIET)
    out = tmp_path / "maps"
    assert main(["attention", str(run), "--split", "eval", "--example", "2", "--out",
                 str(out), "model.cross_attention_chunk=16"]) == 0
    for k in (1, 2):
        assert np.load(out / f"cross_attend_{k}.npy").shape == (32, 8, 8)
    assert (out / "attention.png").stat().st_size > 10_000 and (out / "attention.svg").exists()
    said = (out / "maps.txt").read_text()  # what was drawn and how to draw it again
    assert f"command: perceiver-suite attention {run} --split eval --example 2 --out {out} " \
        "model.cross_attention_chunk=16" in said and "step 10" in said and "machine: " in said
    assert main(["attention", str(run), "--split", "eval", "--out", str(out),
                 "model.num_latents=8"]) == 2
    assert "attention maps are of the trained model" in capsys.readouterr().err
