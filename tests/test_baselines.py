"""Baselines share the schema, the position encodings and the training step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from suite import config as C
from suite.errors import ConfigError
from suite.models.registry import build_model
from suite.training.trainer import train_and_evaluate

TINY = {"model.hidden_dim": 16, "model.num_layers": 1, "model.self_heads": 2,
        "model.patch_size": 2}


@pytest.mark.parametrize("kind", ["transformer", "vit", "convnet"])
def test_baselines_train_a_few_steps_on_digits(kind, tmp_path):
    config = C.build("digits", {**TINY, "model.kind": kind, "train.steps": 20,
                                "train.log_every": 10, "train.eval_every": 0})
    summary = train_and_evaluate(config, tmp_path, progress=False, log=lambda m: None)
    assert summary["status"] == "completed"
    assert summary["metrics"]["train/loss"] < np.log(10) + 0.5
    assert summary["flops_per_step_xla"] > 0


def test_transformer_is_permutation_invariant_and_vit_is_not():
    perm = np.random.default_rng(0).permutation(64)
    x = jax.random.normal(jax.random.key(0), (2, 64, 1))
    index = jnp.broadcast_to(jnp.asarray(perm), (2, 64))
    outs = {}
    for kind in ("transformer", "vit"):
        config = C.build("digits", {**TINY, "model.kind": kind})
        model = build_model(config, rngs=nnx.Rngs(0))
        k = model.trunk.head.kernel
        k[...] = jax.random.normal(jax.random.key(1), k.shape)
        outs[kind] = (model(x.reshape(2, 8, 8, 1)), model(x[:, perm], index=index))
    np.testing.assert_allclose(*outs["transformer"], rtol=1e-4, atol=1e-4)
    assert not np.allclose(*outs["vit"], atol=1e-3)


def test_image_baselines_reject_non_image_tasks_and_bad_patches():
    with pytest.raises(ConfigError, match="needs a 2-D image task"):
        C.build("shapes3d", {"model.kind": "convnet"})
    with pytest.raises(ConfigError, match="model.patch_size=3 must divide"):
        C.build("digits", {"model.kind": "vit", "model.patch_size": 3})
