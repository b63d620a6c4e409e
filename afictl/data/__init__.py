"""Datasets and input pipelines."""

from .transforms import NORMALIZATION, eval_transform, normalization, train_transform

__all__ = ["NORMALIZATION", "eval_transform", "normalization", "train_transform"]
