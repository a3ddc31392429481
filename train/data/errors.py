"""Typed dataset errors: each message names the file and says how to fix it."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset is malformed (base class of every error below)."""


class MissingFileError(DatasetError, FileNotFoundError):
    """An image, label image or class list the dataset needs does not exist."""


class LabelRangeError(DatasetError):
    """A label image holds a value that is neither a class index nor the ignore value."""


class SizeMismatchError(DatasetError):
    """A label image's size differs from its image's size."""
