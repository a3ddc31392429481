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


def test_text_cache_is_per_text_precision(home, monkeypatch, tmp_path_factory, tmp_path):
    """Embeddings computed with a reduced-precision text graph are never served to an fp32 Segmenter
    (nor the reverse): the cache key holds the text graph's tier."""
    pytest.importorskip("openvino", reason="OpenVINO is optional: pip install 'zegformer-sdk[openvino]'")
    import numpy as np

    from sdk import Segmenter

    bundle = tiny_bundle(tmp_path_factory)
    names = ["a brand new name", "another new name"]
    made = {}
    for precision in ("clip_text=bf16", "fp32", "clip_text=bf16"):
        seg = Segmenter(bundle, backend="openvino", precision=precision, cache_dir=tmp_path / "cache")
        seg.set_vocabulary(names)
        made.setdefault(precision, []).append((seg.text_graph_runs, seg.vocabulary.text_features))
    assert made["fp32"][0][0] > 0  # fp32 computed its own rows: the bf16 ones in the cache were not its
    assert made["clip_text=bf16"][1][0] == 0  # the second bf16 Segmenter read bf16's rows from the cache
    assert np.array_equal(made["clip_text=bf16"][0][1], made["clip_text=bf16"][1][1])
    assert not np.array_equal(made["fp32"][0][1], made["clip_text=bf16"][0][1])
