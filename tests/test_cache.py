"""One cache root (``sdk.cache``) for every disk cache: the text embeddings and OpenVINO's compiled models.

``ZEGFORMER_CACHE=off`` (or empty, ``0``, ``none``, ``false``) and ``cache_dir=False`` turn every cache
off — no ``./off`` folder, nothing under the home directory; ``~`` expands to the home directory.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.sdk_helpers import NAMES, block_image, tiny_bundle


@pytest.fixture()
def home(tmp_path, monkeypatch):
    """A private home directory and working directory (so nothing escapes into the real ones)."""
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    return home


def files_under(root: Path) -> list:
    """Files under ``root``, except OpenVINO's telemetry id (``~/intel/openvino_ga_cid``: not a cache of ours)."""
    files = [p.relative_to(root) for p in root.rglob("*") if p.is_file()]
    return sorted(str(p) for p in files if p.parts[0] != "intel")


@pytest.mark.parametrize("value", ["off", "OFF", " off ", "", "0", "none", "false"])
def test_off_values_disable_the_root(home, monkeypatch, value):
    from sdk.cache import cache_dir, cache_root

    monkeypatch.setenv("ZEGFORMER_CACHE", value)
    assert cache_root() is None and cache_root(True) is None and cache_dir("openvino") is None


def test_root_rules(home, monkeypatch, tmp_path):
    from sdk.cache import cache_dir, cache_root

    monkeypatch.delenv("ZEGFORMER_CACHE", raising=False)
    assert cache_root() == home / ".cache" / "zegformer-sdk"
    monkeypatch.setenv("ZEGFORMER_CACHE", "~/x")
    assert cache_root() == home / "x" and cache_dir("text") == home / "x" / "text"
    assert cache_root("~/y") == home / "y" and cache_root(tmp_path / "z") == tmp_path / "z"
    assert cache_root(False) is None  # the option wins over the environment
    monkeypatch.setenv("ZEGFORMER_CACHE", "off")
    assert cache_root(tmp_path / "z") == tmp_path / "z"  # an explicit directory wins over "off"


def segment_with_caches(bundle, **kw):
    """A Segmenter on OpenVINO (compiled-model cache) that embeds new names (text cache) and runs an image."""
    from sdk import Segmenter

    seg = Segmenter(bundle, backend="openvino", min_size=None, **kw)
    seg.set_vocabulary(NAMES[:3] + ["a brand new name"])
    assert seg.text_graph_runs > 0
    seg(block_image(64, 64))
    return seg


@pytest.mark.parametrize("setting", ["env-off", "option-false"])
def test_off_turns_off_every_cache(home, monkeypatch, tmp_path_factory, setting):
    pytest.importorskip("openvino", reason="OpenVINO is optional: pip install 'zegformer-sdk[openvino]'")
    bundle = tiny_bundle(tmp_path_factory)
    if setting == "env-off":
        monkeypatch.setenv("ZEGFORMER_CACHE", "off")
        seg = segment_with_caches(bundle)
    else:
        monkeypatch.delenv("ZEGFORMER_CACHE", raising=False)
        seg = segment_with_caches(bundle, cache_dir=False)
    assert seg.backend.cache_root is None
    assert files_under(Path.cwd()) == [] and not (Path.cwd() / "off").exists()
    assert files_under(home) == []


def test_tilde_root_holds_every_cache(home, monkeypatch, tmp_path_factory):
    pytest.importorskip("openvino", reason="OpenVINO is optional: pip install 'zegformer-sdk[openvino]'")
    monkeypatch.setenv("ZEGFORMER_CACHE", "~/x")
    segment_with_caches(tiny_bundle(tmp_path_factory))
    assert not (Path.cwd() / "~").exists() and files_under(Path.cwd()) == []
    written = files_under(home / "x")
    assert any(f.startswith("text/") for f in written) and any(f.startswith("openvino/") for f in written)
    assert files_under(home) == [f"x/{f}" for f in written]  # nothing outside the root
