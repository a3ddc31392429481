"""Atomic file writes: the one definition, used by the SDK, the exporter and training.

A file is written under a temporary name beside its target (same directory, so the rename
cannot cross file systems; same suffix, so writers that choose a format by extension still do),
flushed to disk with ``fsync``, then renamed over the target with :func:`os.replace`. A reader
sees the old file or the new one, never half of one; a writer that fails leaves no temporary; a
killed writer leaves a ``.NAME.tmp-XXXX`` file that :func:`remove_stale_temps` deletes. New files
get the usual ``0o666 & ~umask`` permissions (a bundle or a dataset is meant to be shared).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Union

import numpy as np

PathLike = Union[str, os.PathLike]
TEMP_MARK = ".tmp-"


def temp_name(path: Path) -> Path:
    """``dir/.STEM.tmp-XXXXXXXXXXXX.SUFFIX``: hidden, unique, same directory and suffix as ``path``."""
    return path.with_name(f".{path.stem}{TEMP_MARK}{uuid.uuid4().hex[:12]}{path.suffix}")


def current_umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path for a writer that needs one (PIL, cv2, ``torch.save``, a builder).

    On a normal exit the file is fsynced and renamed onto ``path``; on an exception it is deleted
    and ``path`` is left as it was. The temporary exists (empty) when the block starts.
    """
    path = Path(path)
    tmp = temp_name(path)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # umask applies, unlike mkstemp
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes_atomic(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: PathLike, data: Any, indent: Optional[int] = 2) -> None:
    """Write ``data`` as UTF-8 JSON (non-ASCII kept, a final newline) to ``path`` atomically."""
    write_text_atomic(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")


def write_npz_atomic(path: PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Write an uncompressed ``.npz`` of ``arrays`` to ``path`` atomically (whatever its suffix)."""
    buffer = io.BytesIO()
    # a file object: numpy appends no ".npz" to the name; numpy's stub checks **kwds against allow_pickle: bool
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    write_bytes_atomic(path, buffer.getvalue())


def remove_stale_temps(directory: PathLike) -> int:
    """Delete the temporaries that killed writers left in ``directory``; returns how many.

    Call it only when no writer of this directory is running (a live writer's file would go).
    """
    count = 0
    for p in Path(directory).glob(f".*{TEMP_MARK}*"):
        if p.is_file():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                count += 1
    return count
