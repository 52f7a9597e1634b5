"""perceiver-suite: a Flax NNX ablation and benchmarking suite for the Perceiver."""

__version__ = "0.2.0"
