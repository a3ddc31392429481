"""Datasets, augmentation and training batches."""

from .base import IGNORE, Sample, SegmentationDataset
from .datasets import build_dataset
from .errors import DatasetError, LabelRangeError, MissingFileError, SizeMismatchError

__all__ = [
    "IGNORE",
    "Sample",
    "SegmentationDataset",
    "build_dataset",
    "DatasetError",
    "LabelRangeError",
    "MissingFileError",
    "SizeMismatchError",
]
