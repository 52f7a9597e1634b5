"""Models: the Perceiver, its baselines, position encodings, FLOP counts and the registry."""

from suite.models.registry import MODELS, abstract_model, build_model, count_params, example_inputs

__all__ = ["MODELS", "abstract_model", "build_model", "count_params", "example_inputs"]
