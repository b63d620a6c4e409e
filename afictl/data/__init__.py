"""Datasets and input pipelines: ``build_dataset(name, root, split)`` and the loaders."""

from .datasets import (
    DATASETS,
    DatasetSpec,
    build_dataset,
    dataset_spec,
    default_data_root,
    resolve_data_root,
)
from .errors import BrokenImage, CorruptImageError, DataMissingError, UnsafeDataError
from .loaders import Batch, collate_skip_broken, make_loader
from .shapes import SHAPE_CLASSES, ShapesDataset
from .transforms import NORMALIZATION, eval_transform, normalization, train_transform

__all__ = [
    "DATASETS",
    "NORMALIZATION",
    "SHAPE_CLASSES",
    "Batch",
    "BrokenImage",
    "CorruptImageError",
    "DataMissingError",
    "DatasetSpec",
    "ShapesDataset",
    "UnsafeDataError",
    "build_dataset",
    "collate_skip_broken",
    "dataset_spec",
    "default_data_root",
    "eval_transform",
    "make_loader",
    "normalization",
    "resolve_data_root",
    "train_transform",
]
