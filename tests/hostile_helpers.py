"""Shared pieces of the hostile-input tests (``tests/test_hostile_*.py``): the exported tiny bundle,
a Segmenter on it, and manifest editing that keeps (or deliberately breaks) the file hashes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.sdk_helpers import shared_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return shared_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def seg(bundle):
    from sdk import Segmenter

    return Segmenter(bundle, backend="onnxruntime", mode="proposal", min_size=None, cache_dir=False)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest_of(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def write_manifest(path: Path, manifest) -> None:
    (path / "manifest.json").write_text(json.dumps(manifest))


def rehash(path: Path, rel: str) -> None:
    """Record the current sha256 of ``rel`` in the manifest (a file that *passes* its hash)."""
    m = manifest_of(path)
    m["files"][rel] = digest(path / rel)
    write_manifest(path, m)
