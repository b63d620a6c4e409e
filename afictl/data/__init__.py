"""Datasets and input pipelines: ``build_dataset(name, root, split)`` and the loaders."""

from .datasets import (
    DATASETS,
    DatasetSpec,
    build_dataset,
    dataset_spec,
    default_data_root,
    resolve_data_root,
)
from .decode import AUTO_DECODE, DECODE_CHOICES, on_device
from .errors import BrokenImage, CorruptImageError, DataMissingError, UnsafeDataError
from .loaders import Batch, collate_skip_broken, make_loader
from .mixing import BatchMixer, build_mixer, dominant_label
from .shapes import SHAPE_CLASSES, ShapesDataset
from .transforms import (
    AA_CHOICES,
    NORMALIZATION,
    eval_transform,
    normalization,
    train_transform,
)

__all__ = [
    "AA_CHOICES",
    "AUTO_DECODE",
    "DATASETS",
    "DECODE_CHOICES",
    "NORMALIZATION",
    "SHAPE_CLASSES",
    "Batch",
    "BatchMixer",
    "BrokenImage",
    "CorruptImageError",
    "DataMissingError",
    "DatasetSpec",
    "ShapesDataset",
    "UnsafeDataError",
    "build_dataset",
    "build_mixer",
    "collate_skip_broken",
    "dataset_spec",
    "default_data_root",
    "dominant_label",
    "eval_transform",
    "make_loader",
    "normalization",
    "on_device",
    "resolve_data_root",
    "train_transform",
]
