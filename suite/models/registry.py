"""Building models by name: ``model.kind`` -> the class registered for it in
``suite.extend`` (the built-ins in ``suite.models.builtins``), and helpers to build,
count and trace.

The Perceiver and the baselines never import each other; this module knows none of them.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from suite import extend
from suite.config import Config
from suite.config.layout import layouts


def model_inputs(config: Config) -> extend.Inputs:
    """The task's shapes as a model's constructor takes them (``suite.extend.Inputs``)."""
    d = config.data
    return extend.Inputs(tuple(d.index_dims), d.channels, d.num_classes, d.pos_dim,
                         layouts(config))


def build_model(config: Config, *, rngs: nnx.Rngs) -> nnx.Module:
    """The model ``config.model.kind`` names, sized for ``config.data``'s inputs."""
    m = config.model
    entry = extend.get("model", m.kind)
    return entry.obj(extend.knobs_of(m, "model"), m, model_inputs(config), rngs=rngs)


def abstract_model(config: Config) -> nnx.Module:
    """The model with shapes only (no weights allocated): for counting and compiling."""
    return nnx.eval_shape(lambda: build_model(config, rngs=nnx.Rngs(0)))


def count_params(model: nnx.Module) -> int:
    """Unique parameters: a module called several times counts once."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def example_inputs(config: Config, batch: int) -> dict[str, jax.ShapeDtypeStruct]:
    """Abstract model inputs for ``batch`` examples (keyword arguments of the model)."""
    d = config.data
    if d.modalities:
        return {"inputs": {lay.name: jax.ShapeDtypeStruct((batch, *lay.dims, lay.channels),
                                                          jnp.float32)
                           for lay in layouts(config)}}
    shapes = {"inputs": jax.ShapeDtypeStruct((batch, *d.index_dims, d.channels), jnp.float32)}
    if d.pos_dim is not None:
        m = math.prod(d.index_dims)
        shapes["positions"] = jax.ShapeDtypeStruct((batch, m, d.pos_dim), jnp.float32)
    return shapes
