"""Publish a finished bundle so that ``--out`` is always the old bundle or the new one.

On Linux the staging directory and ``--out`` are swapped in one atomic ``renameat2(RENAME_EXCHANGE)``.
Elsewhere (or on a filesystem without it) a rename sequence is used whose every intermediate
state the next run rolls forward (:func:`recover`)::

    .NAME.tmp-PID-*  (being written)  →  .NAME.new  (complete)  →  NAME
    NAME (old)  →  .NAME.old  →  deleted

Staging folders of exporters that are no longer running are deleted by :func:`recover`.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)
RENAME_EXCHANGE = 2
AT_FDCWD = -100


def staging_prefix(out: Path) -> str:
    return f".{out.name}.tmp-{os.getpid()}-"


def _new(out: Path) -> Path:
    return out.parent / f".{out.name}.new"


def _old(out: Path) -> Path:
    return out.parent / f".{out.name}.old"


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2``); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, f"cannot swap {a} and {b}: {os.strerror(err)}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(out: Path) -> None:
    """Finish or undo what an interrupted publish of ``out`` left; delete dead exporters' staging."""
    out = Path(out).absolute()
    new, old = _new(out), _old(out)
    if not os.path.lexists(out):
        if new.is_dir():
            os.rename(new, out)  # the new bundle was complete: roll forward
            log.warning("finished publishing %s (an earlier export was interrupted)", out)
        elif old.is_dir():
            os.rename(old, out)  # no new bundle: put the old one back
            log.warning("restored %s from %s (an earlier export was interrupted)", out, old)
    for leftover in (new, old):
        if os.path.lexists(leftover) and os.path.lexists(out):
            shutil.rmtree(leftover, ignore_errors=True)
    if out.parent.is_dir():
        for p in out.parent.glob(f".{out.name}.tmp-*"):
            pid = _staging_pid(p.name, out.name)
            if pid is not None and pid != os.getpid() and not _pid_alive(pid):
                log.info("removing %s, left by an interrupted export", p)
                shutil.rmtree(p, ignore_errors=True)


def _staging_pid(name: str, out_name: str) -> Optional[int]:
    rest = name[len(f".{out_name}.tmp-") :]
    head = rest.split("-", 1)[0]
    return int(head) if head.isdigit() else None


def publish_atomic(staging: Path, out: Path) -> None:
    """Make the complete ``staging`` directory ``out``; an existing ``out`` is replaced atomically."""
    staging, out = Path(staging), Path(out)
    if not os.path.lexists(out):
        os.rename(staging, out)
        return
    if _exchange(staging, out):  # out is now the new bundle, staging holds the old one
        shutil.rmtree(staging, ignore_errors=True)
        return
    new, old = _new(out), _old(out)
    for leftover in (new, old):
        if os.path.lexists(leftover):
            shutil.rmtree(leftover)
    os.rename(staging, new)  # complete: from here on the next run rolls forward
    os.rename(out, old)
    os.rename(new, out)
    shutil.rmtree(old, ignore_errors=True)
