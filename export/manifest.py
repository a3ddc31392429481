"""Manifest I/O, file hashes and the all-or-nothing bundle directory (no torch here).

``export.tensorrt`` uses this module too, so it must stay importable without torch.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Union

from sdk.bundle_format import FORMAT, FORMAT_VERSION, MANIFEST, sha256_file

from .errors import ExportError
from .publish import publish_atomic, recover, staging_prefix

log = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_hashes(bundle_dir: PathLike) -> Dict[str, str]:
    """``{relative posix path: sha256}`` of every file of the bundle except the manifest.

    Hidden paths (a component starting with ``.``: temporary files being written) are skipped.
    """
    root = Path(bundle_dir)
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if rel.as_posix() != MANIFEST and not any(part.startswith(".") for part in rel.parts):
            out[rel.as_posix()] = sha256_file(path)
    return out


def write_json_atomic(path: PathLike, obj: Any) -> None:
    """Write JSON to a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; a bundle is shareable
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_manifest(bundle_dir: PathLike, manifest: Dict[str, Any]) -> Dict[str, Any]:
    """Refresh ``manifest["files"]`` from the directory and write ``manifest.json``."""
    manifest = dict(manifest)
    manifest["files"] = file_hashes(bundle_dir)
    write_json_atomic(Path(bundle_dir) / MANIFEST, manifest)
    return manifest


def read_manifest(bundle_dir: PathLike) -> Dict[str, Any]:
    """Load and sanity-check a bundle's manifest."""
    path = Path(bundle_dir) / MANIFEST
    if not path.is_file():
        raise ExportError(f"{bundle_dir} is not a bundle: {MANIFEST} not found")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot read {path}: {e}") from e
    if manifest.get("format") != FORMAT:
        raise ExportError(f"{path} is not a {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ExportError(f"{path} has format version {manifest.get('format_version')}; "
                          f"this exporter writes version {FORMAT_VERSION}")
    return manifest


def is_bundle(path: Path) -> bool:
    """True for a directory holding a manifest of our format."""
    try:
        return json.loads((path / MANIFEST).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_destination(out: Path, force: bool) -> None:
    """Refuse an existing ``out`` unless ``force``; never replace something that is not a bundle."""
    if not os.path.lexists(out):
        return
    if not force:
        raise ExportError(f"{out} already exists (use --force to replace it)")
    if out.is_symlink() or not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory; refusing to replace it")
    if any(out.iterdir()) and not is_bundle(out):
        raise ExportError(f"{out} is a non-empty directory that is not a bundle; "
                          "refusing to replace it even with --force")


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
        os.chmod(staging, 0o777 & ~_umask())
    except OSError as e:
        raise ExportError(f"cannot create a directory beside {out}: {e}") from e
    try:
        yield staging
        publish(staging, out, force)
        log.info("wrote bundle %s", out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
