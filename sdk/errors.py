"""The SDK's exceptions and warnings. Every message says what went wrong and what to do."""

from __future__ import annotations

REEXPORT = "re-export the bundle (python -m export --checkpoint MODEL.pth --out DIR)"  # BundleError hint


class SegmenterError(Exception):
    """Base class of every error the SDK raises on purpose."""


class BundleError(SegmenterError):
    """A bundle file is missing, tampered with (sha256 mismatch) or of an unknown format version."""


class BackendError(SegmenterError):
    """A backend cannot run here (library, GPU or engine missing) or failed while running."""


class VocabularyError(SegmenterError, ValueError):
    """A vocabulary is empty, absurdly large, has non-string/empty names, or is unknown."""


class ImageError(SegmenterError, ValueError):
    """An image cannot be read, is empty, or has an unsupported dtype/shape."""


class EngineMismatchWarning(UserWarning):
    """A TensorRT engine was built for another GPU or TensorRT version; ONNX is used instead."""


class OptionError(SegmenterError, ValueError):
    """An option (``min_size``, ``threads``, ``prune_threshold``, ...) has a wrong type or value."""
