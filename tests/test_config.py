"""Configs: presets resolve, overrides are typed, and every invalid value is named."""

import dataclasses

import pytest

from suite import config as C
from suite.errors import ConfigError


def test_every_preset_resolves_and_validates():
    for name in C.PRESETS:
        config = C.preset(name)
        assert config.data.index_dims is not None and config.data.num_classes >= 2


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        C.preset("digits").model.num_latents = 3


def test_overrides_are_coerced_to_the_field_types():
    config = C.build("digits", {
        "model.num_latents": "48", "model.weight_sharing": "false",
        "model.dropout": "0.1", "model.max_resolution": "16,16", "seed": "7",
        "train.grad_clip": "none", "data.index_dims": "[4, 16]",
    })
    assert config.model.num_latents == 48 and config.model.weight_sharing is False
    assert config.model.dropout == 0.1 and config.model.max_resolution == (16.0, 16.0)
    assert config.seed == 7 and config.train.grad_clip is None
    assert config.data.index_dims == (4, 16)


def test_toml_native_values_are_accepted():
    config = C.build("digits", {"model.num_latents": 16, "model.weight_sharing": True,
                                "data.index_dims": [8, 8], "train.learning_rate": 1})
    assert config.train.learning_rate == 1.0 and config.data.index_dims == (8, 8)


def test_cross_attend_every_is_derived_and_printed():
    config = C.build("imagenet", {"model.num_cross_attends": 2})
    assert config.model.cross_attend_every == 4
    assert C.flatten(config)["model.cross_attend_every"] == 4
    start = C.build("imagenet", {"model.cross_attend_placement": "start"})
    assert start.model.cross_attend_every is None


def test_config_round_trips_through_its_dict():
    config = C.build("shapes3d", {"model.num_latents": 24, "seed": 3})
    assert C.from_dict(C.to_dict(config)) == config


@pytest.mark.parametrize("key,value,message", [
    ("model.num_latents", "0", "model.num_latents=0 must be > 0"),
    ("model.num_latents", "abc", "model.num_latents='abc' is not an integer"),
    ("model.fourier_bands", "-1", "model.fourier_bands=-1 must be > 0"),
    ("model.num_cross_attends", "3",
     "model.num_cross_attends=3 must divide model.num_blocks=2 when placement is interleaved"),
    ("model.cross_attend_placement", "middle",
     "model.cross_attend_placement='middle' is not one of 'interleaved', 'start'"),
    ("model.position_encoding", "sinusoid", "model.position_encoding='sinusoid' is not one of"),
    ("model.weight_sharing", "maybe", "model.weight_sharing='maybe' is not true or false"),
    ("model.self_heads", "3", "model.self_heads=3 must divide model.latent_dim=64"),
    ("model.dropout", "1.5", "model.dropout=1.5 must be in [0, 1)"),
    ("model.max_resolution", "8,8,8", "needs 1 or 2 values"),
    ("data.task", "imagenet21k", "data.task='imagenet21k' is unknown"),
    ("data.permutation", "random", "data.permutation='random' is not one of 'none', 'fixed'"),
    ("data.fps", "-25", "data.fps=-25.0 must be >= 0"),
    ("data.frame_stride", "0", "data.frame_stride=0 must be > 0"),
    ("data.sample_rate", "0", "data.sample_rate=0 must be > 0"),
    ("train.steps", "0", "train.steps=0 must be > 0"),
    ("train.optimizer", "adam", "train.optimizer='adam' is not one of"),
    ("train.warmup_steps", "5000", "train.warmup_steps=5000 must be < train.steps=600"),
    ("seed", "-1", "seed=-1 must be in 0..4294967295"),
])
def test_invalid_values_raise_config_error_naming_key_and_value(key, value, message):
    with pytest.raises(ConfigError, match=None) as err:
        C.build("digits", {key: value})
    assert message in str(err.value)


@pytest.mark.parametrize("key,value,message", [
    ("model.num_blocks", "1000000000000", "model.num_blocks=1000000000000 is over the limit of "
     "4,096 (sizes are bounded so that a typo fails before anything is built)"),
    ("model.self_attends_per_block", "5000", "model.self_attends_per_block=5000 is over the "
     "limit of 4,096"),
    ("model.num_latents", "2000000", "model.num_latents=2000000 is over the limit of 1,048,576"),
    ("model.latent_dim", "100000", "model.latent_dim=100000 is over the limit of 65,536"),
    ("model.self_heads", "2048", "model.self_heads=2048 is over the limit of 1,024"),
    ("model.fourier_bands", "100000", "model.fourier_bands=100000 is over the limit of 1,024"),
    ("data.index_dims", "100000000,100000000", "data.index_dims=100000000x100000000 has 1e+16 "
     "items, over the limit of 2,147,483,648 (2**31) an input may have"),
    ("data.index_dims", "1,1,1,1,1,1,1,1,1", "data.index_dims=1x1x1x1x1x1x1x1x1 has 9 "
     "dimensions; at most 8"),
    ("train.batch_size", "10000000", "train.batch_size=10000000 is over the limit of 1,048,576"),
])
def test_structural_sizes_over_their_limits_are_one_line_naming_key_value_and_limit(
        key, value, message):
    with pytest.raises(ConfigError) as err:
        C.build("digits", {key: value})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_depth_times_tower_is_bounded_too():
    with pytest.raises(ConfigError) as err:
        C.build("digits", {"model.num_blocks": "4096", "model.num_cross_attends": "1",
                           "model.self_attends_per_block": "4096"})
    assert str(err.value) == ("model.num_blocks=4096 x model.self_attends_per_block=4096 = "
                              "16,777,216 self-attends, over the limit of 65,536")


def test_the_limits_admit_the_papers_largest_models():
    C.build("imagenet", {"model.num_latents": "2048", "model.num_blocks": "48",
                         "model.num_cross_attends": "1", "data.index_dims": "16,224,224",
                         "model.fourier_bands": "256", "model.self_heads": "64"})


def test_unknown_keys_are_rejected_with_a_suggestion():
    with pytest.raises(ConfigError, match="unknown config key 'model.num_latent'.*num_latents"):
        C.build("digits", {"model.num_latent": "3"})
    with pytest.raises(ConfigError, match="unknown config key 'optim.lr'"):
        C.build("digits", {"optim.lr": "3"})


def test_unknown_preset_and_malformed_override():
    with pytest.raises(ConfigError, match="unknown preset 'cifar'"):
        C.build("cifar", {})
    with pytest.raises(ConfigError, match="not of the form key=value"):
        C.parse_overrides(["model.num_latents"])
