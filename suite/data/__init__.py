"""Data: readers for real formats (``sources``) and grain pipelines (``pipeline``)."""

from suite.data.pipeline import Dataset, eval_batches, load, model_kwargs, train_batches

__all__ = ["Dataset", "eval_batches", "load", "model_kwargs", "train_batches"]
