"""The model registry: ``model.kind`` -> a class, and helpers to build, count and trace.

The only module that knows every architecture, so the Perceiver and the baselines
never import each other.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from suite.config import Config
from suite.config.layout import layouts
from suite.errors import ConfigError
from suite.models.baselines import ConvNet, TransformerClassifier, ViT
from suite.models.perceiver import Perceiver

MODELS: dict[str, type[nnx.Module]] = {
    "perceiver": Perceiver, "transformer": TransformerClassifier, "vit": ViT, "convnet": ConvNet,
}


def build_model(config: Config, *, rngs: nnx.Rngs) -> nnx.Module:
    """The model ``config.model.kind`` names, sized for ``config.data``'s inputs."""
    d = config.data
    cls = MODELS.get(config.model.kind)
    if cls is None:
        raise ConfigError(f"model.kind={config.model.kind!r} is not available")
    if cls is Perceiver:  # its inputs: one grid (perhaps in patches) or one per modality
        return cls(config.model, d.index_dims, d.channels, d.num_classes, d.pos_dim, rngs=rngs,
                   layouts=layouts(config))
    return cls(config.model, d.index_dims, d.channels, d.num_classes, d.pos_dim, rngs=rngs)


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
