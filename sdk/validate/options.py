"""Options of :class:`~sdk.Segmenter`: typed, in range, rejected at construction with :class:`OptionError`."""

from __future__ import annotations

import math
import os
from typing import Any, Optional

import numpy as np

from ..errors import OptionError
from .values import is_int, is_number

MAX_SIDE = 16384  # largest min_size/max_size accepted (a bigger side does not fit any backend)


def _int_option(name: str, value: Any, low: int, high: int, allow_none: bool = True) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if not is_int(value) or not low <= int(value) <= high:
        raise OptionError(
            f"{name}={value!r} is invalid: give an integer in {low}..{high}" + (" or None" if allow_none else "")
        )
    return int(value)


def check_sizes(min_size: Any, max_size: Any) -> None:
    """``min_size``: None, "bundle" or 1..16384; ``max_size``: None or 1..16384 (typed errors)."""
    if not (min_size is None or (isinstance(min_size, str) and min_size == "bundle")):
        _int_option("min_size", min_size, 1, MAX_SIDE)
    _int_option("max_size", max_size, 1, MAX_SIDE)


def check_options(
    *,
    min_size: Any = None,
    max_size: Any = None,
    threads: Any = None,
    clip_batch: Any = None,
    prune_threshold: Any = 0.02,
    text_batch: Any = 64,
    backend: Any = "auto",
    device: Any = "auto",
    mode: Any = "cropmask",
    bgr: Any = False,
    cache_dir: Any = None,
    checkpoint: Any = None,
) -> None:
    """Reject bad :class:`~sdk.Segmenter` options at construction with :class:`OptionError`."""
    check_sizes(min_size, max_size)
    _int_option("threads", threads, 0, 1024)
    _int_option("clip_batch", clip_batch, 1, 1 << 16)
    _int_option("text_batch", text_batch, 1, 1 << 16, allow_none=False)
    if not is_number(prune_threshold) or float(prune_threshold) < 0.0:
        raise OptionError(f"prune_threshold={prune_threshold!r} is invalid: give a finite number >= 0")
    for name, value in (("backend", backend), ("device", device), ("mode", mode)):
        if not isinstance(value, str):
            raise OptionError(f"{name}={value!r} is invalid: give a string")
    if not isinstance(bgr, (bool, np.bool_)):
        raise OptionError(f"bgr={bgr!r} is invalid: give True or False")
    if not (cache_dir is None or isinstance(cache_dir, (bool, str, os.PathLike))):
        raise OptionError(f"cache_dir={cache_dir!r} is invalid: give a directory, None or False")
    if not (checkpoint is None or isinstance(checkpoint, (str, os.PathLike))):
        raise OptionError(f"checkpoint={checkpoint!r} is invalid: give a path or None")
