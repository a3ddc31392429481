"""Paths inside a bundle: the bundle root, lexical confinement, and symlinks that leave the bundle."""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import Any, Union

from ..errors import REEXPORT, BundleError


def root_dir(root: Any) -> Path:
    """The absolute, resolved bundle directory (a bad path type or a symlink loop is a BundleError)."""
    if not isinstance(root, (str, os.PathLike)):
        raise BundleError(f"bundle_dir must be a path, not {type(root).__name__}")
    try:
        return Path(root).expanduser().resolve()
    except (OSError, RuntimeError, ValueError) as e:
        raise BundleError(f"bundle directory {root} cannot be resolved ({e})") from e


def lexically_confined(rel: str) -> bool:
    """True for a non-empty relative POSIX path with no ``..``, drive, backslash or NUL."""
    if not rel or "\x00" in rel or "\\" in rel or rel.startswith("/") or re.match(r"[A-Za-z]:", rel):
        return False
    parts = PurePosixPath(rel).parts
    return bool(parts) and all(p not in ("..", "") for p in parts)


def confined_path(root: Path, rel: str, manifest_path: Union[str, os.PathLike]) -> Path:
    """``root / rel`` after checking it stays inside ``root`` once symlinks are resolved."""
    if not isinstance(rel, str) or not lexically_confined(rel):
        raise BundleError(
            f"{manifest_path} names the file {rel!r}, which is not a relative path inside "
            f"the bundle; refusing to read it; {REEXPORT}"
        )
    path = root / rel
    try:
        real = path.resolve(strict=False)
        real_root = root.resolve(strict=True)
    except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop (Python < 3.13)
        raise BundleError(f"bundle file {path} cannot be resolved ({e}: a symlink loop?); {REEXPORT}") from e
    if real != real_root and real_root not in real.parents:
        raise BundleError(
            f"bundle file {path} is a symlink to {real}, outside the bundle; refusing to read it; {REEXPORT}"
        )
    return path


def is_relpath(v: Any) -> bool:
    return isinstance(v, str) and lexically_confined(v)
