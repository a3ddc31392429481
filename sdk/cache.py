"""Where the SDK's on-disk caches live: one rule for every cache.

The root is the ``cache_dir`` option when given, else ``$ZEGFORMER_CACHE``, else
``~/.cache/zegformer-sdk``; each cache keeps a folder of its own under it (``text/`` for text
embeddings, ``openvino/`` for compiled models). ``cache_dir=False``, or ``ZEGFORMER_CACHE`` set to
``off`` (or ``0``, ``none``, ``false``, or empty), turns every disk cache off; ``~`` is expanded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

CacheOption = Union[None, bool, str, os.PathLike]
ENV = "ZEGFORMER_CACHE"
OFF = ("", "0", "off", "none", "false")


def cache_root(option: CacheOption = None) -> Optional[Path]:
    """The root of the disk caches for ``option`` (``None``/``True``: the environment), or ``None`` when off."""
    if option is False:
        return None
    value: Any = option if option not in (None, True) else os.environ.get(ENV)
    if value is None:
        return Path.home() / ".cache" / "zegformer-sdk"
    if str(value).strip().lower() in OFF:
        return None
    return Path(os.fspath(value)).expanduser()


def cache_dir(name: str, option: CacheOption = None) -> Optional[Path]:
    """The folder of the cache called ``name`` (``"text"``, ``"openvino"``) under :func:`cache_root`, or ``None``."""
    root = cache_root(option)
    return None if root is None else root / name
