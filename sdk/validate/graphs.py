"""ONNX Runtime sessions: whose fault a failure to load a graph is (the I/O check is ``backends.base.check_io``)."""

from __future__ import annotations

from pathlib import Path

from ..errors import REEXPORT, BackendError, BundleError


def graph_load_error(path: Path, error: Exception) -> Exception:
    """ONNX Runtime's failure to open a (hash-verified) graph: the file's fault unless it is the device's."""
    text = " ".join(str(error).split())[:300]
    if any(w in text for w in ("CUDA", "cuda", "provider", "Provider", "out of memory")):
        return BackendError(f"ONNX Runtime cannot load {path} on this device: {text}")
    return BundleError(f"bundle file {path} is not a graph this ONNX Runtime can load ({text}); {REEXPORT}")
