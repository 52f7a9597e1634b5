"""Data: readers for real formats (``sources``) and grain pipelines (``pipeline``)."""

from suite.data.pipeline import (
    Dataset,
    eval_batches,
    load,
    model_kwargs,
    pop_bad,
    train_batches,
    train_eval_split,
)
from suite.data.sources import Split

__all__ = ["Dataset", "Split", "eval_batches", "load", "model_kwargs", "pop_bad", "train_batches",
           "train_eval_split"]
