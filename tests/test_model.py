"""The Perceiver matches the paper's parameter counts and FLOPs; sharing reuses modules."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from suite import config as C
from suite.models.flops import analytic_flops
from suite.models.perceiver import Perceiver, layer_schedule
from suite.models.registry import abstract_model, build_model, count_params


def imagenet(**overrides):
    return C.apply_overrides(C.preset("imagenet"), overrides)


def params(config):
    return count_params(abstract_model(config))


def test_imagenet_preset_has_the_papers_44_9m_parameters_with_sharing():
    assert params(imagenet()) == pytest.approx(44_912_254, rel=5e-4)


def test_imagenet_preset_has_326_2m_parameters_without_sharing():
    assert params(imagenet(**{"model.weight_sharing": False})) == pytest.approx(
        326_241_856, rel=5e-4
    )


@pytest.mark.parametrize(
    "cross_attends,expected", [(1, 42.1e6), (2, 44.9e6), (4, 44.9e6), (8, 44.9e6)]
)
def test_table6_interleaved_parameter_counts(cross_attends, expected):
    # Paper Table 6 (the "at start" 41.1M for 1 cross-attend is the same network as
    # interleaved, so it cannot differ; we check the interleaved column).
    config = imagenet(**{"model.num_cross_attends": cross_attends})
    assert params(config) == pytest.approx(expected, abs=0.05e6)


@pytest.mark.parametrize("n,expected_params,expected_gflops", [
    (4, 12.7e6, 173.1), (8, 23.8e6, 346.1), (12, 34.9e6, 519.2),
])
def test_table5_cross_attend_only_stacks(n, expected_params, expected_gflops):
    config = imagenet(**{
        "model.num_blocks": n, "model.num_cross_attends": n,
        "model.self_attends_per_block": 0, "model.weight_sharing": False,
    })
    assert params(config) == pytest.approx(expected_params, abs=0.05e6)
    assert analytic_flops(config)["total"] / 1e9 == pytest.approx(expected_gflops, rel=0.01)


@pytest.mark.parametrize("cross_attends,gflops", [(1, 404.3), (2, 447.6), (4, 534.1), (8, 707.2)])
def test_table6_analytic_flops_within_one_percent(cross_attends, gflops):
    config = imagenet(**{"model.num_cross_attends": cross_attends})
    assert analytic_flops(config)["total"] / 1e9 == pytest.approx(gflops, rel=0.01)


def test_flops_do_not_depend_on_sharing():
    shared, unshared = imagenet(), imagenet(**{"model.weight_sharing": False})
    assert analytic_flops(shared)["total"] == analytic_flops(unshared)["total"]


def test_weight_sharing_map_is_first_cross_own_rest_tied_tower_tied():
    m = imagenet(**{"model.num_blocks": 4, "model.num_cross_attends": 4}).model
    assert layer_schedule(m) == [
        ("cross", 0), *[("self", j) for j in range(6)],
        ("cross", 1), *[("self", j) for j in range(6)],
        ("cross", 1), *[("self", j) for j in range(6)],
        ("cross", 1), *[("self", j) for j in range(6)],
    ]
    m_first = dataclasses.replace(m, share_first_cross_attend=True)
    assert [i for kind, i in layer_schedule(m_first) if kind == "cross"] == [0, 0, 0, 0]


def test_start_placement_puts_every_cross_attend_first():
    m = imagenet(**{"model.num_cross_attends": 2,
                    "model.cross_attend_placement": "start"}).model
    kinds = [kind for kind, _ in layer_schedule(m)]
    assert kinds[:2] == ["cross", "cross"] and set(kinds[2:]) == {"self"}
    assert len(kinds) == 2 + 8 * 6


def small(**overrides):
    return C.build("synthetic", overrides)


def test_params_stay_flat_when_shared_depth_grows_and_grow_when_unshared():
    shared = [params(small(**{"model.num_blocks": b, "model.num_cross_attends": 1}))
              for b in (1, 2, 4)]
    unshared = [params(small(**{"model.num_blocks": b, "model.num_cross_attends": 1,
                                "model.weight_sharing": False})) for b in (1, 2, 4)]
    assert shared[0] == shared[1] == shared[2]
    assert unshared[0] < unshared[1] < unshared[2]


def test_tied_cross_attends_are_the_same_module_object():
    model = build_model(small(**{"model.num_blocks": 3, "model.num_cross_attends": 3}),
                        rngs=nnx.Rngs(0))
    assert len(model.cross) == 2  # CA1 and one tied CA2..3
    assert len(model.self_attends) == 1  # one tower layer reused by all 3 blocks


def test_latents_are_truncated_normal_with_the_configured_scale():
    config = small(**{"model.num_latents": 256, "model.latent_dim": 64,
                      "model.latent_init_scale": 0.02})
    latents = np.asarray(build_model(config, rngs=nnx.Rngs(0)).latents[...])
    assert np.abs(latents).max() <= 2 * 0.02 + 1e-7
    assert 0.015 < latents.std() < 0.02  # truncation at 2 sigma shrinks the std (~0.88x)


def test_logits_start_at_zero_from_the_zero_initialised_head():
    config = small()
    model = build_model(config, rngs=nnx.Rngs(0))
    x = jnp.ones((2, *config.data.index_dims, config.data.channels))
    np.testing.assert_array_equal(model(x), np.zeros((2, config.data.num_classes)))


def _random_head(model, seed=1):
    # The head starts at zero; give it weights so the logits depend on the input.
    k = model.head.kernel
    k[...] = jax.random.normal(jax.random.key(seed), k.shape)


@pytest.mark.parametrize("encoding", ["fourier", "learned"])
def test_permuting_items_with_their_positions_leaves_logits_unchanged(encoding):
    config = small(**{"data.index_dims": "6,5", "model.position_encoding": encoding})
    model = build_model(config, rngs=nnx.Rngs(0))
    _random_head(model)
    x = jax.random.normal(jax.random.key(2), (3, 6, 5, 1))
    perm = np.random.default_rng(0).permutation(30)
    flat = x.reshape(3, 30, 1)
    index = jnp.broadcast_to(jnp.asarray(perm), (3, 30))
    base = model(x)
    permuted = model(flat[:, perm], index=index)
    np.testing.assert_allclose(base, permuted, rtol=1e-5, atol=1e-5)
    # Without the positions following the items, the logits do change.
    assert not np.allclose(base, model(flat[:, perm].reshape(3, 6, 5, 1)), atol=1e-4)


def test_explicit_positions_equal_the_grid_and_permute_with_items():
    config = small(**{"data.index_dims": "4,4"})
    model = build_model(config, rngs=nnx.Rngs(0))
    _random_head(model)
    from suite.models.encodings import grid_positions

    x = jax.random.normal(jax.random.key(3), (2, 16, 1))
    pos = jnp.broadcast_to(jnp.asarray(grid_positions((4, 4))), (2, 16, 2))
    perm = np.random.default_rng(1).permutation(16)
    base = model(x.reshape(2, 4, 4, 1))
    np.testing.assert_allclose(model(x, positions=pos), base, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model(x[:, perm], positions=pos[:, perm]), base,
                               rtol=1e-5, atol=1e-5)


def test_point_cloud_model_consumes_explicit_coordinates():
    config = small(**{"data.task": "shapes3d"})
    assert config.data.pos_dim == 3 and config.model.max_resolution == (2240.0,) * 3
    model = build_model(config, rngs=nnx.Rngs(0))
    pts = jax.random.uniform(jax.random.key(0), (2, 512, 3), minval=-1, maxval=1)
    assert model(pts, positions=pts).shape == (2, 5)


def test_one_d_signals_and_add_combination_run_through_the_same_model():
    for overrides in ({"data.index_dims": "40"}, {"model.position_combine": "add"},
                      {"model.position_encoding": "none"}):
        config = small(**overrides)
        model = build_model(config, rngs=nnx.Rngs(0))
        x = jnp.ones((2, *config.data.index_dims, config.data.channels))
        assert model(x).shape == (2, config.data.num_classes)


def test_jitted_forward_traces_once_across_repeated_calls():
    config = small()
    graphdef, state = nnx.split(build_model(config, rngs=nnx.Rngs(0)))
    traces = []

    @jax.jit
    def forward(state, x):
        traces.append(1)
        return nnx.merge(graphdef, state)(x)

    for seed in range(4):
        x = jax.random.normal(jax.random.key(seed), (2, *config.data.index_dims, 1))
        forward(state, x).block_until_ready()
    assert len(traces) == 1


def test_perceiver_is_an_nnx_module_with_shapes_from_the_config():
    config = small()
    assert isinstance(build_model(config, rngs=nnx.Rngs(0)), Perceiver)
