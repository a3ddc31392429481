"""The all-or-nothing bundle directory, and the manifest's reader/writer (``sdk.manifest``) for the exporter.

``export.tensorrt`` uses this module too, so it must stay importable without torch.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Union

from sdk import manifest as sdk_manifest
from sdk.atomicio import current_umask
from sdk.errors import BundleError
from sdk.manifest import is_bundle, write_manifest  # noqa: F401 - the exporter writes through the SDK

from .errors import ExportError
from .publish import publish_atomic, recover, staging_prefix

log = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]


def read_manifest(bundle_dir: PathLike) -> Dict[str, Any]:
    """The bundle's manifest, read by the SDK's reader; its errors become :class:`ExportError`."""
    try:
        return sdk_manifest.read_manifest(bundle_dir)
    except BundleError as e:
        raise ExportError(str(e)) from e


def check_destination(out: Path, force: bool) -> None:
    """Refuse an existing ``out`` unless ``force``; never replace something that is not a bundle."""
    if not os.path.lexists(out):
        return
    if not force:
        raise ExportError(f"{out} already exists (use --force to replace it)")
    if out.is_symlink() or not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory; refusing to replace it")
    if any(out.iterdir()) and not is_bundle(out):
        raise ExportError(
            f"{out} is a non-empty directory that is not a bundle; refusing to replace it even with --force"
        )


def publish(staging: Path, out: Path, force: bool) -> None:
    """Move the finished ``staging`` directory to ``out`` (replacing an old bundle when ``force``)."""
    check_destination(out, force)
    publish_atomic(staging, out)  # out is the old or the new bundle at every instant


@contextmanager
def staging_dir(out: PathLike, force: bool = False) -> Iterator[Path]:
    """A temporary sibling of ``out`` to write the bundle into; published only on success.

    On any exception (or Ctrl-C) the temporary directory is deleted and ``out`` is untouched.
    """
    out = Path(out).absolute()
    recover(out)  # roll forward an interrupted publish; delete dead exporters' staging folders
    check_destination(out, force)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=staging_prefix(out), dir=out.parent))
        os.chmod(staging, 0o777 & ~current_umask())
    except OSError as e:
        raise ExportError(f"cannot create a directory beside {out}: {e}") from e
    try:
        yield staging
        publish(staging, out, force)
        log.info("wrote bundle %s", out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
