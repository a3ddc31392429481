"""Arrays of a bundle and of the embedding cache: ``.npy``/``.npz`` loading (no pickles) and shape checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, Optional

import numpy as np

from ..errors import REEXPORT, BundleError


def load_npy(path: Path) -> np.ndarray:
    """A ``.npy`` of the bundle (no pickles); a broken file is a :class:`BundleError` naming it."""
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:  # numpy raises ValueError/OSError/EOFError/... for broken files
        raise BundleError(
            f"bundle file {path} is not a readable .npy array ({type(e).__name__}: {e}); {REEXPORT}"
        ) from e


def load_npz(path: Path, required: Iterable[str]) -> Dict[str, np.ndarray]:
    """All arrays of a ``.npz`` of the bundle, checking ``required`` keys are present."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as e:  # BadZipFile, ValueError (pickled objects), OSError, EOFError, ...
        raise BundleError(
            f"bundle file {path} is not a readable .npz archive ({type(e).__name__}: {e}); {REEXPORT}"
        ) from e
    missing = sorted(set(required) - set(data))
    if missing:
        raise BundleError(f"bundle file {path} lacks the arrays {missing}; {REEXPORT}")
    return data


def check_embedding_rows(path: Path, data: Dict[str, np.ndarray], dim: Optional[int]) -> None:
    """A vocabulary archive: ``names [K]`` strings, both feature sets ``[K, dim]`` and finite."""
    names = data["names"]
    if names.ndim != 1 or names.dtype.kind not in "US" or len(names) == 0:
        raise BundleError(f"bundle file {path}: names must be a non-empty 1-D string array; {REEXPORT}")
    for key in ("text_features", "text_features_clip"):
        arr = data[key]
        want = (len(names), dim if dim else (arr.shape[-1] if arr.ndim == 2 else -1))
        if arr.shape != want or arr.dtype.kind != "f" or not np.isfinite(arr).all():
            raise BundleError(
                f"bundle file {path}: {key} has shape {arr.shape} ({arr.dtype}); expected finite "
                f"floats of shape {want}; {REEXPORT}"
            )


def cached_embeddings_ok(hit: Any, rows: int, dim: Optional[int]) -> bool:
    """A disk-cache entry is two finite ``[rows, dim]`` float arrays (else it is rebuilt)."""
    a, b = hit
    want = (rows, dim or (a.shape[-1] if a.ndim == 2 else -1))
    return a.shape == want and b.shape == want and bool(np.isfinite(a).all() and np.isfinite(b).all())


def as_features(label: str, value: Any, shape: tuple, error: type) -> np.ndarray:
    """User-given text embeddings → contiguous float32 of ``shape``, finite (else ``error``)."""
    try:
        arr = np.ascontiguousarray(value, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise error(f"{label} is not an array of numbers ({e})") from e
    if arr.shape != shape:
        raise error(f"{label} has shape {arr.shape}; expected {shape}")
    if not np.isfinite(arr).all():
        raise error(f"{label} holds NaN or infinite values")
    return arr


def check_background(path: Path, bg: np.ndarray, dim: Optional[int]) -> None:
    if bg.dtype.kind != "f" or bg.size == 0 or (dim and bg.size != dim) or not np.isfinite(bg).all():
        raise BundleError(
            f"bundle file {path} holds a {bg.dtype} array of shape {bg.shape}; expected "
            f"{dim or 'D'} finite floats (the background embedding); {REEXPORT}"
        )
