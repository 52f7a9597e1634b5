"""suite.extend: a researcher's model and Perceiver part variants plug into a spec without
forking, their knobs are config keys, and the built-ins register the same way."""

import dataclasses
import json
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from suite import config as C
from suite import extend
from suite.cli import main
from suite.errors import ConfigError, PluginError, SuiteError
from suite.files import read_json
from suite.models.attention_maps import cross_attention_maps
from suite.models.flops import analytic_flops, flops_source
from suite.models.registry import abstract_model, build_model, count_params
from suite.sweeps.spec import run_id
from suite.training.trainer import train_and_evaluate

PLUGIN = textwrap.dedent('''
    """A researcher's variants: what suite.extend's contracts ask of each part."""
    import dataclasses

    import jax
    import jax.numpy as jnp
    from flax import nnx

    from suite import extend


    @dataclasses.dataclass(frozen=True)
    class InvertedKnobs:
        renorm_eps: float = 1e-8  # added before renormalising over the inputs

        def __post_init__(self):
            if self.renorm_eps <= 0:
                raise ValueError(f"renorm_eps={self.renorm_eps} must be > 0")


    @extend.register_cross_attention("inverted", knobs=InvertedKnobs)
    class Inverted(nnx.Module):
        """Softmax over the latents (they compete for inputs), renormalised over inputs."""

        def __init__(self, knobs, m, *, q_dim, kv_dim, qk_channels, out_dim, num_heads, rngs,
                     dtype=None):
            self.eps = knobs.renorm_eps
            self.q = nnx.Linear(q_dim, qk_channels, rngs=rngs)
            self.k = nnx.Linear(kv_dim, qk_channels, rngs=rngs)
            self.v = nnx.Linear(kv_dim, out_dim, rngs=rngs)

        def attention_logits(self, q_in, kv_in):
            q, k = self.q(q_in), self.k(kv_in)
            return jnp.einsum("bnc,bmc->bnm", q, k)[:, None] / jnp.sqrt(q.shape[-1])

        def __call__(self, q_in, kv_in, *, mask=None):
            attn = jax.nn.softmax(self.attention_logits(q_in, kv_in)[:, 0], axis=1)
            if mask is not None:
                attn = attn * mask[:, None, :]
            attn = attn / (attn.sum(axis=-1, keepdims=True) + self.eps)
            return jnp.einsum("bnm,bmc->bnc", attn, self.v(kv_in))


    @extend.register_cross_attention("uniform")
    class Uniform(nnx.Module):
        """Every latent reads the mean of the inputs' values (no maps to draw)."""

        def __init__(self, knobs, m, *, q_dim, kv_dim, qk_channels, out_dim, num_heads, rngs,
                     dtype=None):
            self.v = nnx.Linear(kv_dim, out_dim, rngs=rngs)

        def __call__(self, q_in, kv_in, *, mask=None):
            return jnp.broadcast_to(self.v(kv_in).mean(axis=1, keepdims=True),
                                    (*q_in.shape[:2], self.v.out_features))


    @extend.register_mlp("gated")
    class Gated(nnx.Module):
        def __init__(self, knobs, m, *, dim, widening_factor, rngs, dtype=None):
            self.gate = nnx.Linear(dim, dim * widening_factor, rngs=rngs)
            self.up = nnx.Linear(dim, dim * widening_factor, rngs=rngs)
            self.down = nnx.Linear(dim * widening_factor, dim, rngs=rngs)

        @classmethod
        def flops(cls, knobs, m, *, tokens, dim, widening_factor):
            return 2.0 * 3 * widening_factor * tokens * dim**2

        def __call__(self, x):
            return self.down(jax.nn.silu(self.gate(x)) * self.up(x))


    class Skip(nnx.Module):
        def __init__(self, knobs, m, *, dim, num_heads, rngs, dtype=None):
            pass

        def __call__(self, x):
            return jnp.zeros_like(x)


    extend.register_self_attention("skip", Skip, flops=lambda knobs, m, **shape: 0.0)


    @dataclasses.dataclass(frozen=True)
    class RampKnobs:
        scale: float = 1.0


    @extend.register_position_encoding("ramp", knobs=RampKnobs)
    class Ramp(nnx.Module):
        """One channel: the item's index, scaled to [0, scale]."""

        def __init__(self, knobs, m, *, grid, channels, pos_dim, modality, rngs):
            self.items, self.scale, self.width = 1, knobs.scale, 1
            for n in grid:
                self.items *= n

        def __call__(self, positions=None, index=None):
            ramp = jnp.linspace(0.0, self.scale, self.items)[:, None]
            return ramp if index is None else ramp[index]


    @dataclasses.dataclass(frozen=True)
    class ConstantKnobs:
        value: float = 0.5


    @extend.register_latent_init("constant", knobs=ConstantKnobs)
    def constant(knobs, m, key, shape):
        return jnp.full(shape, knobs.value, jnp.float32)


    @dataclasses.dataclass(frozen=True)
    class PooledKnobs:
        width: int = 16
        depth: int = 1


    @extend.register_model("pooled_mlp", knobs=PooledKnobs)
    class PooledMLP(nnx.Module):
        def __init__(self, knobs, m, inputs, *, rngs):
            self.embed = nnx.Linear(inputs.channels, knobs.width, rngs=rngs)
            self.layers = nnx.List([nnx.Linear(knobs.width, knobs.width, rngs=rngs)
                                    for _ in range(knobs.depth)])
            self.head = nnx.Linear(knobs.width, inputs.num_classes, rngs=rngs)

        def __call__(self, inputs, positions=None, index=None, keep=None):
            h = self.embed(inputs.reshape(inputs.shape[0], -1, inputs.shape[-1]))
            for layer in self.layers:
                h = jax.nn.gelu(layer(h))
            return self.head(h.mean(axis=1))
''')


@pytest.fixture(scope="session")
def plugin(tmp_path_factory) -> Path:
    """The plugin file, written once per session (a second load of a path is a no-op)."""
    path = tmp_path_factory.getbasetemp() / "plugins" / "my_variants.py"
    path.parent.mkdir(exist_ok=True)
    if not path.exists():
        path.write_text(PLUGIN)
    extend.load_plugins([str(path)])
    return path


def digits(**overrides):
    return C.build("digits", overrides)


def test_the_built_ins_are_registered_through_suite_extend_from_suite_models():
    built_in = {part: [e.name for e in extend.entries(part) if e.plugin is None]
                for part in extend.PARTS}
    assert built_in == {
        "model": ["perceiver", "transformer", "vit", "convnet"],
        "cross_attention": ["standard"], "self_attention": ["standard"], "mlp": ["standard"],
        "position_encoding": ["fourier", "learned", "none"],
        "latent_init": ["truncated_normal"]}
    assert all(e.where.startswith("suite.models.") for e in extend.entries() if e.plugin is None)
    assert extend.get("model", "perceiver").where == "suite.models.perceiver:Perceiver"


@pytest.mark.parametrize("overrides,params", [
    ({}, 76_908), ({"model.position_encoding": "learned"}, 179_480),
    ({"model.position_combine": "add"}, 70_699), ({"model.decoder": "query"}, 102_316),
    ({"model.kind": "transformer", "model.hidden_dim": 32, "model.num_layers": 2}, 13_962),
    ({"model.kind": "vit", "model.hidden_dim": 32, "model.num_layers": 2}, 23_082),
    ({"model.kind": "convnet", "model.hidden_dim": 8}, 45_706),
])
def test_built_in_models_keep_their_parameter_counts(overrides, params):
    assert count_params(abstract_model(digits(**overrides))) == params


@pytest.mark.parametrize("overrides,expected", [
    ({}, "ec7d0848"), ({"model.num_latents": 16}, "f9216049"),
    ({"model.position_encoding": "learned", "model.kind": "transformer"}, "7e04e704"),
])
def test_run_ids_of_built_in_configs_are_those_of_earlier_versions(overrides, expected):
    assert run_id({}, digits(**overrides)) == expected


def test_a_variant_knob_is_a_config_key_set_coerced_and_shown(plugin):
    config = digits(**{"model.cross_attention": "inverted", "model.inverted.renorm_eps": "1e-6"})
    assert dict(config.model.variants)["inverted"].renorm_eps == 1e-6
    assert C.flatten(config)["model.inverted.renorm_eps"] == 1e-6
    assert "model.inverted.renorm_eps" in C.known_keys()
    chosen = digits(**{"model.cross_attention": "inverted"})  # chosen: its defaults are held
    assert C.to_dict(chosen)["model"]["inverted.renorm_eps"] == 1e-8


@pytest.mark.parametrize("key,value,message", [
    ("model.inverted.renorm_ep", "1", "unknown config key 'model.inverted.renorm_ep'; did you "
     "mean 'model.inverted.renorm_eps'?"),
    ("model.inverted.renorm_eps", "abc", "model.inverted.renorm_eps='abc' is not a number"),
    ("model.inverted.renorm_eps", "inf", "model.inverted.renorm_eps=inf must be a finite number"),
    ("model.inverted.renorm_eps", "0", "model.inverted.renorm_eps=0.0: renorm_eps=0.0 must be > 0"),
    ("model.cross_attention", "inverse", "model.cross_attention='inverse' is not one of the "
     "registered cross-attention variants ('standard', 'inverted', "),
    ("model.cross_attention", "inverse", "; did you mean 'inverted'?"),
    ("model.kind", "pooled", "did you mean 'pooled_mlp'?"),
])
def test_knobs_and_names_are_validated_in_one_line(plugin, key, value, message):
    with pytest.raises(ConfigError) as err:
        digits(**{"model.cross_attention": "inverted", key: value})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_knobs_are_in_the_run_identity_only_off_their_defaults(plugin):
    at_default = digits(**{"model.cross_attention": "inverted"})
    tuned = digits(**{"model.cross_attention": "inverted", "model.inverted.renorm_eps": 1e-6})
    assert "model.inverted.renorm_eps" not in C.non_default(at_default)
    assert C.non_default(tuned)["model.inverted.renorm_eps"] == 1e-6
    assert run_id({}, at_default) != run_id({}, tuned)


def test_a_config_with_variants_round_trips_through_its_dict_with_its_plugin(plugin):
    config = digits(**{"model.cross_attention": "inverted", "model.inverted.renorm_eps": 1e-6,
                       "model.position_encoding": "ramp", "model.ramp.scale": 2})
    data = json.loads(json.dumps(C.to_dict(config)))
    assert data["model"]["inverted.renorm_eps"] == 1e-6 and data["model"]["ramp.scale"] == 2.0
    assert [p["plugin"] for p in data["plugins"]] == [str(plugin)]
    assert C.from_dict(data) == config
    assert "plugins" not in C.to_dict(digits())  # a built-in config records none


def test_a_taken_name_is_one_line_naming_both_places(plugin):
    class Clash(nnx.Module):
        pass

    with pytest.raises(PluginError) as err:
        extend.register_cross_attention("inverted", Clash)
    message = str(err.value)
    assert f"{plugin}:Inverted" in message and "Clash" in message and "\n" not in message
    assert extend.get("cross_attention", "inverted").where == f"{plugin}:Inverted"


def test_knobs_must_be_a_frozen_dataclass_with_defaults():
    @dataclasses.dataclass
    class Loose:
        x: int = 1

    @dataclasses.dataclass(frozen=True)
    class NoDefault:
        x: int

    with pytest.raises(PluginError, match="must be a frozen dataclass"):
        extend.register_mlp("loose", object, knobs=Loose)
    with pytest.raises(PluginError, match=r"knob NoDefault.x needs a default"):
        extend.register_mlp("no_default", object, knobs=NoDefault)


def test_describe_gives_a_plugin_models_params_and_xla_flops(plugin, capsys):
    argv = ["describe", "--plugin", str(plugin), "--preset", "digits", "model.kind=pooled_mlp",
            "model.pooled_mlp.width=8", "--json"]
    assert main(argv) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == (1 * 8 + 8) + (8 * 8 + 8) + (8 * 10 + 10)
    assert info["flops_count"].startswith("XLA's count: model.kind='pooled_mlp'")
    assert info["flops_xla"] > 0 and info["flops_analytic"] == info["flops_xla"]
    assert info["config"]["model"]["pooled_mlp.width"] == 8


def test_a_perceiver_with_a_variant_counts_its_params_and_falls_back_to_xla(plugin):
    config = digits(**{"model.cross_attention": "inverted"})
    # each of the 2 unique cross-attends: v maps C=19 to D=64 instead of to F=19 and back
    assert count_params(abstract_model(config)) == 76_908 - 2 * (19 * 19 + 19)
    assert "model.cross_attention='inverted'" in flops_source(config)
    assert analytic_flops(config)["total"] > 0  # XLA's count stands in


def test_variants_with_their_own_count_keep_the_analytic_flops(plugin):
    base, variant = digits(), digits(**{"model.mlp": "gated", "model.self_attention": "skip"})
    assert flops_source(variant) is None
    m = base.model
    n, d, w = m.num_latents, m.latent_dim, m.widening_factor
    cross, tower = 2, 2 * 2  # the digits preset: 2 blocks of 2 self-attends, 2 cross-attends
    self_attention = 2.0 * (4 * n * d**2 + 2 * n**2 * d) * tower
    mlp_more = (2.0 * 3 * w * n * d**2 - 2.0 * 2 * w * n * d**2) * (cross + tower)
    assert analytic_flops(variant)["total"] == analytic_flops(base)["total"] - self_attention \
        + mlp_more


def test_position_encoding_and_latent_init_variants_follow_their_contracts(plugin):
    config = digits(**{"model.position_encoding": "ramp", "model.ramp.scale": 3,
                       "model.latent_init": "constant", "model.constant.value": 0.25})
    model = build_model(config, rngs=nnx.Rngs(0))
    assert model.adapter.out_channels == config.data.channels + 1
    np.testing.assert_array_equal(model.latents[...], 0.25)
    x = jnp.zeros((2, 8, 8, 1))
    features = model.encode_inputs(x)[0]
    np.testing.assert_allclose(np.asarray(features)[0, [0, -1], -1], [0.0, 3.0])  # the ramp
    assert model(x).shape == (2, 10)


def test_attention_maps_come_from_the_hook_and_without_one_say_so(plugin):
    config = digits(**{"model.cross_attention": "inverted"})
    model = build_model(config, rngs=nnx.Rngs(0))
    maps = cross_attention_maps(model, np.ones((8, 8, 1), np.float32))
    assert sorted(maps) == [1, 2] and maps[1].shape == (1, 32, 64)
    plain = build_model(digits(**{"model.cross_attention": "uniform"}), rngs=nnx.Rngs(0))
    with pytest.raises(SuiteError, match="gives no attention maps: its class defines no "
                       "attention_logits") as err:
        cross_attention_maps(plain, np.ones((8, 8, 1), np.float32))
    assert "\n" not in str(err.value)


def test_modality_dropout_masks_reach_a_variant(plugin):
    config = C.build("shape_tone", {"model.cross_attention": "inverted", "model.num_latents": 8,
                                    "model.latent_dim": 16, "model.self_heads": 2})
    model = build_model(config, rngs=nnx.Rngs(0))
    lay = {n: jnp.ones((2, *s.shape[1:])) for n, s in
           abstract_inputs(config).items()}
    keep = {name: jnp.array([1.0, 0.0]) for name in lay}  # the second example drops all
    out = model(lay, keep=keep)
    assert out.shape == (2, config.data.num_classes) and bool(jnp.all(jnp.isfinite(out)))


def abstract_inputs(config):
    from suite.models.registry import example_inputs

    return example_inputs(config, 2)["inputs"]


def test_training_a_few_steps_with_a_variant_records_its_plugin(plugin, tmp_path):
    config = digits(**{"model.cross_attention": "inverted", "model.inverted.renorm_eps": 1e-6,
                       "train.steps": 2, "train.batch_size": 16, "train.log_every": 1,
                       "train.eval_train_examples": 0})
    summary = train_and_evaluate(config, tmp_path, progress=False, log=lambda m: None)
    assert summary["status"] == "completed"
    saved = read_json(tmp_path / "config.json")
    assert C.from_dict(saved) == config
    sha = next(p.sha256 for p in extend.loaded_plugins() if p.source == str(plugin))
    assert saved["plugins"] == [{"plugin": str(plugin), "path": str(plugin), "sha256": sha}]
    recorded = {p["plugin"]: p["sha256"] for p in summary["provenance"]["plugins"]}
    assert recorded[str(plugin)] == sha and len(sha) == 64
    assert summary["flops_count"].startswith("XLA's count") and summary["mfu"] > 0
    assert summary["flops_per_step_analytic"] == summary["flops_per_step_xla"]


def test_the_standard_parts_give_the_numbers_they_always_did():
    config = digits()
    model = build_model(config, rngs=nnx.Rngs(params=3, dropout=4))
    head = model.head.kernel
    head[...] = jax.random.normal(jax.random.key(7), head.shape) * 0.1
    x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 1), minval=-1, maxval=1)
    np.testing.assert_allclose(model(x)[0, :3], [6.292966, -1.046719, 0.177897], rtol=1e-5)
