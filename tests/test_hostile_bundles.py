"""Hostile bundles: manifests (types, nulls, missing keys, nesting, paths), symlinks, files that pass
their hash but are wrong, and the embedding disk cache — each a BundleError naming the file, or
rebuilt with a warning."""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from tests.hostile_helpers import (
    bundle,  # noqa: F401 (pytest fixtures)
    digest,
    manifest_of,
    rehash,
    write_manifest,
)
from tests.sdk_helpers import NAMES, block_image, copy_bundle

pytest.importorskip("torch")  # the bundle is exported with torch


# ====================================================================== manifests
def edit(bundle, tmp_path, change):
    path = copy_bundle(bundle, tmp_path / "b")
    m = manifest_of(path)
    change(m)
    write_manifest(path, m)
    return path


def _set(keys, value):
    def change(m):
        node = m
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value

    return change


def _del(keys):
    def change(m):
        node = m
        for k in keys[:-1]:
            node = node[k]
        del node[keys[-1]]

    return change


BAD_MANIFESTS = {
    "model-null": _set(["model"], None),
    "model-list": _set(["model"], []),
    "no-model": _del(["model"]),
    "no-files": _del(["files"]),
    "no-graphs": _del(["graphs"]),
    "no-classes": _del(["classes"]),
    "no-preprocess": _del(["preprocess"]),
    "no-inference": _del(["inference"]),
    "scale-null": _set(["model", "segment_logit_scale"], None),
    "scale-string": _set(["model", "segment_logit_scale"], "20"),
    "scale-missing": _del(["model", "clip_logit_scale"]),
    "queries-string": _set(["model", "num_queries"], "10"),
    "queries-bool": _set(["model", "num_queries"], True),
    "embed-negative": _set(["model", "embed_dim"], -32),
    "stride-zero": _set(["model", "mask_stride"], 0),
    "mean-short": _set(["preprocess", "pixel_mean"], [1, 2]),
    "std-zero": _set(["preprocess", "pixel_std"], [0, 1, 1]),
    "mean-strings": _set(["preprocess", "clip_pixel_mean"], ["a", "b", "c"]),
    "min-size-negative": _set(["inference", "min_size"], -1),
    "max-size-float": _set(["inference", "max_size"], 1.5),
    "lambda-2": _set(["inference", "ensemble_lambda"], 2),
    "dense-zero": _set(["inference", "dense_size"], [0, 64]),
    "names-string": _set(["classes", "names"], "person"),
    "seen-short": _set(["classes", "seen"], [True]),
    "seen-ints": _set(["classes", "seen"], [1] * len(NAMES)),
    "names-null": _set(["classes", "names"], None),
    "graph-null": _set(["graphs", "proposal"], None),
    "graph-file-int": _set(["graphs", "proposal", "file"], 3),
    "graph-io-list": _set(["graphs", "proposal", "outputs"], ["x"]),
    "files-list": _set(["files"], []),
    "digest-short": _set(["files", "proposal.onnx"], "abc"),
    "digest-null": _set(["files", "proposal.onnx"], None),
    "vocabularies-list": _set(["vocabularies"], ["vocab/all.npz"]),
    "default-unknown": _set(["default_vocabulary"], "nope"),
    "default-int": _set(["default_vocabulary"], 3),
    "tokenizer-context": _set(["tokenizer", "context_length"], "77"),
    "engines-list": _set(["engines"], [1]),
    "format-version-string": _set(["format_version"], "1"),
    "graph-parent": _set(["graphs", "proposal", "file"], "../proposal.onnx"),
    "graph-absolute": _set(["graphs", "proposal", "file"], "/etc/passwd"),
    "graph-backslash": _set(["graphs", "proposal", "file"], "..\\proposal.onnx"),
    "files-parent": lambda m: m["files"].update({"../x": "0" * 64}),
    "background-absolute": _set(["background"], "/etc/hostname"),
    "vocab-parent": _set(["vocabularies", "all"], "../../all.npz"),
    "tokenizer-parent": _set(["tokenizer", "file"], "../bpe.txt.gz"),
    "engine-parent": _set(["engines"], {"proposal": {"file": "../x.engine"}}),
    "crop-huge": _set(["model", "crop_size"], 10**6),
    "context-huge": _set(["tokenizer", "context_length"], 10**9),
    "dense-huge": _set(["inference", "dense_size"], [10**6, 64]),
    "queries-huge": _set(["model", "num_queries"], 10**9),
}


@pytest.mark.parametrize("name", sorted(BAD_MANIFESTS))
def test_bad_manifests_are_bundle_errors(bundle, tmp_path, name):
    from sdk import BundleError, Segmenter

    path = edit(bundle, tmp_path, BAD_MANIFESTS[name])
    with pytest.raises(BundleError, match="manifest.json|format version"):
        Segmenter(path, backend="onnxruntime", cache_dir=False)


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        "null",
        '"bundle"',
        "[" * 100000 + "]" * 100000,
        '{"format": "zegformer-sdk/bundle", "format_version": 1, ' * 1 + '"model": ' * 0 + "}",
        "\xff\xfe not utf-8",
    ],
    ids=["list", "null", "string", "deep", "bare", "binary"],
)
def test_unparseable_manifests(bundle, tmp_path, text):
    from sdk import BundleError, Segmenter

    path = copy_bundle(bundle, tmp_path / "b")
    (path / "manifest.json").write_bytes(text.encode("latin-1") if "\xff" in text else text.encode())
    with pytest.raises(BundleError):
        Segmenter(path, backend="onnxruntime", cache_dir=False)


def test_manifest_with_nan_numbers(bundle, tmp_path):
    from sdk import BundleError, Segmenter

    path = copy_bundle(bundle, tmp_path / "b")
    text = (path / "manifest.json").read_text()
    m = manifest_of(path)
    text = text.replace(json.dumps(m["model"]["segment_logit_scale"]), "NaN", 1)
    (path / "manifest.json").write_text(text)
    with pytest.raises(BundleError, match="segment_logit_scale"):
        Segmenter(path, backend="onnxruntime", cache_dir=False)


def test_graph_outside_the_bundle_is_refused_even_with_its_hash(bundle, tmp_path):
    """A manifest pointing at ``../file`` (whose sha256 it records correctly) is refused."""
    from sdk import BundleError, Segmenter

    path = copy_bundle(bundle, tmp_path / "b")
    outside = tmp_path / "evil.onnx"
    outside.write_bytes((path / "proposal.onnx").read_bytes())
    m = manifest_of(path)
    m["graphs"]["proposal"]["file"] = "../evil.onnx"
    m["files"]["../evil.onnx"] = digest(outside)
    write_manifest(path, m)
    with pytest.raises(BundleError, match="inside the bundle"):
        Segmenter(path, backend="onnxruntime", mode="proposal", cache_dir=False)(block_image())


@pytest.mark.parametrize("rel", ["proposal.onnx", "background.npy", "vocab/all.npz", "manifest.json"])
def test_symlink_escaping_the_bundle_is_refused(bundle, tmp_path, rel):
    from sdk import BundleError, Segmenter

    path = copy_bundle(bundle, tmp_path / "b")
    outside = tmp_path / ("outside_" + Path(rel).name)
    (path / rel).rename(outside)
    os.symlink(outside, path / rel)
    with pytest.raises(BundleError, match="outside the bundle"):
        Segmenter(path, backend="onnxruntime", mode="proposal", min_size=None, cache_dir=False)(block_image())
    assert outside.is_file()  # nothing deleted


def test_symlink_inside_the_bundle_is_fine(bundle, tmp_path):
    from sdk import Segmenter

    path = copy_bundle(bundle, tmp_path / "b")
    (path / "proposal.onnx").rename(path / "real.onnx")
    os.symlink("real.onnx", path / "proposal.onnx")
    Segmenter(path, backend="onnxruntime", mode="proposal", min_size=None, cache_dir=False)(block_image())


@pytest.mark.parametrize("rel", ["proposal.onnx", "manifest.json"])
def test_symlink_loops(bundle, tmp_path, rel):
    from sdk import BundleError, Segmenter

    path = copy_bundle(bundle, tmp_path / "b")
    (path / rel).unlink()
    os.symlink(path / "loop_b", path / "loop_a")
    os.symlink(path / "loop_a", path / "loop_b")
    os.symlink(path / "loop_a", path / rel)
    with pytest.raises(BundleError):
        Segmenter(path, backend="onnxruntime", mode="proposal", min_size=None, cache_dir=False)(block_image())


def test_bundle_directory_symlink_loop(tmp_path):
    from sdk import BundleError, Segmenter

    os.symlink(tmp_path / "y", tmp_path / "x")
    os.symlink(tmp_path / "x", tmp_path / "y")
    with pytest.raises(BundleError):
        Segmenter(tmp_path / "x")


@pytest.mark.parametrize("value", [3, None, b"bundle", ["a"]])
def test_bundle_dir_of_the_wrong_type(value):
    from sdk import BundleError, Segmenter

    with pytest.raises(BundleError):
        Segmenter(value)


# ====================================================================== files that pass their hash but are wrong
def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _vocab(path, **over):
    with np.load(path / "vocab/all.npz") as z:
        data = {k: z[k] for k in z.files}
    data.update(over)
    return npz_bytes(**{k: v for k, v in data.items() if v is not None})


WRONG_FILES = {
    # name: (relative path, new content from the bundle path, mode that reads it, vocabulary)
    "proposal-is-dense": ("proposal.onnx", lambda p: (p / "clip_dense.onnx").read_bytes(), "proposal", None),
    "clip-image-is-text": ("clip_image.onnx", lambda p: (p / "clip_text.onnx").read_bytes(), "cropmask", None),
    "proposal-random": ("proposal.onnx", lambda p: os.urandom(5000), "proposal", None),
    "proposal-empty": ("proposal.onnx", lambda p: b"", "proposal", None),
    "background-garbage": ("background.npy", lambda p: b"garbage", "proposal", None),
    "background-wide": ("background.npy", lambda p: _npy(np.zeros((1, 7), np.float32)), "proposal", None),
    "background-nan": ("background.npy", lambda p: _npy(np.full((1, 32), np.nan, np.float32)), "proposal", None),
    "background-pickle": ("background.npy", lambda p: _npy(np.array([{"a": 1}], object)), "proposal", None),
    "vocab-not-zip": ("vocab/all.npz", lambda p: b"PK\x03\x04 broken", "proposal", None),
    "vocab-truncated": ("vocab/all.npz", lambda p: (p / "vocab/all.npz").read_bytes()[:300], "proposal", None),
    "vocab-wide": ("vocab/all.npz", lambda p: _vocab(p, text_features=np.zeros((8, 5), np.float32)), "proposal", None),
    "vocab-nan": (
        "vocab/all.npz",
        lambda p: _vocab(p, text_features_clip=np.full((8, 32), np.nan, np.float32)),
        "proposal",
        None,
    ),
    "vocab-no-names": ("vocab/all.npz", lambda p: _vocab(p, names=None), "proposal", None),
    "vocab-object": ("vocab/all.npz", lambda p: _vocab(p, names=np.array(NAMES, object)), "proposal", None),
    "tokenizer-garbage": ("bpe_simple_vocab_16e6.txt.gz", lambda p: b"\x1f\x8b garbage", "proposal", ["zebra"]),
    "tokenizer-plain": ("bpe_simple_vocab_16e6.txt.gz", lambda p: b"#version\nnot gz\n", "proposal", ["zebra"]),
    "text-is-image": ("clip_text.onnx", lambda p: (p / "clip_image.onnx").read_bytes(), "proposal", ["zebra"]),
}


def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


@pytest.mark.parametrize("name", sorted(WRONG_FILES))
def test_files_passing_their_hash_but_wrong(bundle, tmp_path, name):
    from sdk import BundleError, Segmenter

    rel, content, mode, vocabulary = WRONG_FILES[name]
    path = copy_bundle(bundle, tmp_path / "b")
    (path / rel).write_bytes(content(path))
    rehash(path, rel)
    with pytest.raises(BundleError, match=Path(rel).name):
        s = Segmenter(path, backend="onnxruntime", mode=mode, min_size=None, cache_dir=False)
        s(block_image(), vocabulary=vocabulary)


# ====================================================================== the embedding cache
@pytest.mark.parametrize("damage", ["wide", "nan", "rows", "garbage", "names"])
def test_damaged_cache_entries_are_rebuilt(bundle, tmp_path, damage, caplog):
    from sdk import Segmenter

    names = ["zebra", "lamp post"]
    cache = tmp_path / "cache"
    s = Segmenter(bundle, backend="onnxruntime", mode="proposal", min_size=None, cache_dir=cache)
    good = s.resolve_vocabulary(names)
    (entry,) = (cache / "text").glob("*.npz")
    if damage == "garbage":
        entry.write_bytes(b"not a zip")
    else:
        tf = {
            "wide": np.zeros((2, 7)),
            "nan": np.full((2, 32), np.nan),
            "rows": np.zeros((5, 32)),
            "names": good.text_features,
        }[damage].astype(np.float32)
        entry.write_bytes(
            npz_bytes(
                names=np.array(names if damage != "names" else ["a", "b"]), text_features=tf, text_features_clip=tf
            )
        )
    fresh = Segmenter(bundle, backend="onnxruntime", mode="proposal", min_size=None, cache_dir=cache)
    with caplog.at_level(logging.WARNING):
        again = fresh.resolve_vocabulary(names)
    assert fresh.text_graph_runs > 0  # recomputed, not fatal
    np.testing.assert_allclose(again.text_features, good.text_features, atol=1e-6)
    if damage in ("wide", "nan", "rows"):
        assert "rebuilding" in caplog.text
    with np.load(entry) as z:  # rewritten valid
        assert z["text_features"].shape == (2, 32) and np.isfinite(z["text_features"]).all()


def test_cache_dir_that_is_a_file(bundle, tmp_path):
    from sdk import Segmenter

    blocker = tmp_path / "file"
    blocker.write_text("x")
    s = Segmenter(bundle, backend="onnxruntime", mode="proposal", min_size=None, cache_dir=blocker)
    assert s(block_image(), vocabulary=["zebra"]).class_names == ("zebra",)
    assert blocker.read_text() == "x"
