"""Hostile inputs to the SDK: each is the documented typed error (or works), and nothing is lost.

Classes covered: image files and arrays, vocabularies (lists, strings, files), Segmenter options,
manifests (types, nulls, missing keys, nesting, paths), bundle files that pass their hash but are
wrong, symlinks, and the embedding disk cache.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.sdk_helpers import NAMES, block_image, copy_bundle, shared_bundle

pytest.importorskip("torch")  # the bundle is exported with torch


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


# ====================================================================== images: files
def png_with_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width×height`` (a decompression bomb's header)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def encoded(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


GOOD = block_image(48, 64)
PNG = encoded(Image.fromarray(GOOD), "PNG")
JPEG = encoded(Image.fromarray(GOOD), "JPEG")
BAD_FILES = {
    "empty.png": b"",
    "random.png": bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
    "text.jpg": b"hello, not an image\n",
    "truncated.png": PNG[: len(PNG) // 2],
    "truncated.jpg": JPEG[: len(JPEG) // 3],
    "header_only.png": PNG[:33],
    "bomb.png": png_with_size(60000, 60000),
    "bomb_wide.png": png_with_size(2 ** 31 - 1, 1),
    "bad_crc.png": PNG[:20] + bytes([PNG[20] ^ 0xFF]) + PNG[21:],
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_image_files_are_image_errors(seg, tmp_path, name):
    from sdk import ImageError

    path = tmp_path / name
    path.write_bytes(BAD_FILES[name])
    with pytest.raises(ImageError, match=str(path.name)):
        seg(path)
    assert path.read_bytes() == BAD_FILES[name]


@pytest.mark.parametrize("target", ["missing.png", "a_directory", "nul\x00.png"])
def test_bad_image_paths(seg, tmp_path, target):
    from sdk import ImageError

    (tmp_path / "a_directory").mkdir()
    with pytest.raises(ImageError):
        seg(str(tmp_path / target))


def _modes():
    rgb = Image.fromarray(GOOD)
    gray16 = Image.fromarray((GOOD[..., 0].astype(np.uint16) * 257))
    return {
        "rgb.png": encoded(rgb, "PNG"), "gray.png": encoded(rgb.convert("L"), "PNG"),
        "la.png": encoded(rgb.convert("LA"), "PNG"), "rgba.png": encoded(rgb.convert("RGBA"), "PNG"),
        "palette.png": encoded(rgb.convert("P"), "PNG"), "bilevel.png": encoded(rgb.convert("1"), "PNG"),
        "gray16.png": encoded(gray16, "PNG"), "cmyk.jpg": encoded(rgb.convert("CMYK"), "JPEG"),
        "float.tif": encoded(Image.fromarray(GOOD[..., 0].astype(np.float32)), "TIFF"),
        "int32.tif": encoded(rgb.convert("I"), "TIFF"), "gif.gif": encoded(rgb.convert("P"), "GIF"),
        "bmp.bmp": encoded(rgb, "BMP"), "webp.webp": encoded(rgb, "WEBP"),
    }


@pytest.mark.parametrize("name", sorted(_modes()))
def test_image_modes_segment(seg, tmp_path, name):
    path = tmp_path / name
    path.write_bytes(_modes()[name])
    result = seg(path)
    assert result.label_map.shape == (48, 64) and result.label_map.dtype == np.int32


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    from sdk.preprocess import load_image

    path = tmp_path / "g16.png"
    Image.fromarray(np.full((8, 8), 0x8000, np.uint16)).save(path)
    assert (load_image(path) == 0x80).all()


# ====================================================================== images: arrays
BAD_ARRAYS = {
    "object": np.empty((4, 4, 3), object), "bool": np.ones((4, 4, 3), bool),
    "complex": np.ones((4, 4, 3), np.complex64), "nan": np.full((4, 4, 3), np.nan, np.float32),
    "float_255": np.full((4, 4, 3), 255.0, np.float32), "negative": np.full((4, 4, 3), -1, np.int16),
    "int_too_big": np.full((4, 4, 3), 70000, np.int32), "empty": np.zeros((0, 5, 3), np.uint8),
    "4d": np.zeros((1, 4, 4, 3), np.uint8), "two_channels": np.zeros((4, 4, 2), np.uint8),
    "scalar": np.zeros((), np.uint8), "vector": np.zeros(12, np.uint8),
    "huge": np.broadcast_to(np.zeros(1, np.uint8), (20000, 20000, 3)),
}


@pytest.mark.parametrize("name", sorted(BAD_ARRAYS))
def test_bad_arrays_are_image_errors(seg, name):
    from sdk import ImageError

    with pytest.raises(ImageError):
        seg(BAD_ARRAYS[name])


@pytest.mark.parametrize("value", [None, 3, b"\x89PNG", [[1, 2, 3]], {"a": 1}])
def test_non_images_are_image_errors(seg, value):
    from sdk import ImageError

    with pytest.raises(ImageError):
        seg(value)


@pytest.mark.parametrize("shape", [(1, 20000), (20000, 1), (2, 12000)])
def test_extreme_aspect_ratio_is_an_image_error(bundle, shape):
    from sdk import ImageError, Segmenter

    s = Segmenter(bundle, backend="onnxruntime", mode="proposal", cache_dir=False)  # min_size 640
    with pytest.raises(ImageError, match="aspect ratio"):
        s(np.zeros((*shape, 3), np.uint8))


def test_small_and_thin_images_work(seg):
    for shape in [(1, 1), (1, 7), (7, 1), (3, 200)]:
        assert seg(np.full((*shape, 3), 90, np.uint8)).label_map.shape == shape


def test_input_array_is_not_modified(seg):
    image = block_image(40, 50)
    before = image.copy()
    seg(image)
    seg(image[..., ::-1], bgr=True)
    np.testing.assert_array_equal(image, before)


# ====================================================================== options
BAD_OPTIONS = [
    {"min_size": 0}, {"min_size": -1}, {"min_size": "abc"}, {"min_size": float("nan")},
    {"min_size": float("inf")}, {"min_size": 1.5}, {"min_size": True}, {"min_size": 10 ** 9},
    {"min_size": [640]}, {"max_size": 0}, {"max_size": float("nan")}, {"max_size": "big"},
    {"threads": -1}, {"threads": "2"}, {"threads": 2.5}, {"clip_batch": 0}, {"text_batch": 0},
    {"text_batch": None}, {"prune_threshold": float("nan")}, {"prune_threshold": -0.1},
    {"prune_threshold": "x"}, {"prune_threshold": float("inf")}, {"backend": 3}, {"device": None},
    {"mode": 5}, {"bgr": "yes"}, {"cache_dir": 3}, {"checkpoint": 42},
]


@pytest.mark.parametrize("options", BAD_OPTIONS, ids=lambda o: repr(o))
def test_bad_options_rejected_at_construction(tmp_path, options):
    """Checked before the bundle is even opened (the path here does not exist)."""
    from sdk import OptionError, Segmenter

    with pytest.raises(OptionError, match=next(iter(options))):
        Segmenter(tmp_path / "no-bundle", **options)
    assert issubclass(OptionError, ValueError)


def test_good_unusual_options_are_accepted(bundle):
    from sdk import Segmenter

    for options in [{"min_size": np.int64(64)}, {"min_size": 64.0}, {"min_size": None}, {"threads": 0},
                    {"prune_threshold": 0}, {"bgr": np.bool_(True)}, {"max_size": 4096}]:
        Segmenter(bundle, backend="onnxruntime", mode="proposal", cache_dir=False, **options)


def test_bad_mode_backend_device_values(bundle):
    from sdk import BackendError, Segmenter, SegmenterError

    with pytest.raises(SegmenterError, match="unknown mode"):
        Segmenter(bundle, mode="fast")
    with pytest.raises(BackendError):
        Segmenter(bundle, backend="cuda-magic")
    with pytest.raises(BackendError):
        Segmenter(bundle, device="tpu")


# ====================================================================== vocabularies
def vocab_file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


BAD_VOCAB_FILES = {
    "latin1.txt": "café\nsofa\n".encode("latin-1"),
    "utf16.txt": "cat\nsofa\n".encode("utf-16"),
    "binary.txt": bytes(range(256)),
    "nul.txt": b"cat\x00\nsofa\n",
    "empty.txt": b"",
    "comments.txt": b"# only\n# comments\n\n",
    "string.json": b'"cat, dog"',
    "number.json": b"42",
    "null.json": b"null",
    "object.json": b'{"labels": ["cat"]}',
    "ints.json": b"[1, 2, 3]",
    "nested.json": b"[[\"cat\"]]",
    "surrogate.json": b'["cat", "\\ud800"]',
    "malformed.json": b'["cat", ',
    "deep.json": b"[" * 100000 + b"]" * 100000,
    "empty_name.json": b'["cat", "  "]',
    "nameless.json": b'[{"label": "cat"}]',
    "long.txt": ("x" * 5000 + "\n").encode(),
}


@pytest.mark.parametrize("name", sorted(BAD_VOCAB_FILES))
def test_bad_vocabulary_files(seg, tmp_path, name):
    from sdk import VocabularyError

    path = vocab_file(tmp_path, name, BAD_VOCAB_FILES[name])
    before = seg.class_names
    with pytest.raises(VocabularyError, match=str(path.name)):
        seg.set_vocabulary(str(path))
    with pytest.raises(VocabularyError):
        seg.set_vocabulary(path)
    assert seg.class_names == before and path.read_bytes() == BAD_VOCAB_FILES[name]


def test_json_string_is_not_split_into_characters(seg, tmp_path):
    from sdk import VocabularyError

    path = vocab_file(tmp_path, "v.json", b'"cat"')
    with pytest.raises(VocabularyError, match="not a list"):
        seg.set_vocabulary(str(path))


def test_bom_and_crlf_files(seg, tmp_path):
    txt = vocab_file(tmp_path, "bom.txt", b"\xef\xbb\xbfsky\r\ntree\r\n\r\n# c\r\nroad\r")
    assert seg.resolve_vocabulary(str(txt)).names == ("sky", "tree", "road")
    js = vocab_file(tmp_path, "bom.json", b'\xef\xbb\xbf{"names": ["sky", "road"]}\r\n')
    assert seg.resolve_vocabulary(str(js)).names == ("sky", "road")


def test_vocabulary_path_with_semicolon_is_a_file(seg, tmp_path):
    folder = tmp_path / "a;b"
    folder.mkdir()
    path = vocab_file(folder, "my;classes.txt", b"sky\nroad\n")
    assert seg.resolve_vocabulary(str(path)).names == ("sky", "road")
    assert seg.resolve_vocabulary("sky;road").names == ("sky", "road")  # names still work


@pytest.mark.parametrize("names", [["cat", "\ud800"], ["x" * 5000], ["cat", None], [b"cat"], "cat"],
                         ids=["surrogate", "long", "none", "bytes", "bare-string"])
def test_bad_vocabulary_lists(seg, names):
    from sdk import VocabularyError

    with pytest.raises(VocabularyError):
        seg(block_image(), vocabulary=names)


def test_a_directory_as_vocabulary(seg, tmp_path):
    from sdk import VocabularyError

    with pytest.raises(VocabularyError):
        seg.set_vocabulary(Path(tmp_path))


def test_unicode_names_work(seg):
    names = ["chat noir", "狗", "🐱 cat", "sofa, couch", "naïve café"]
    assert seg(block_image(), vocabulary=names).class_names == tuple(names)


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
    "model-null": _set(["model"], None), "model-list": _set(["model"], []),
    "no-model": _del(["model"]), "no-files": _del(["files"]), "no-graphs": _del(["graphs"]),
    "no-classes": _del(["classes"]), "no-preprocess": _del(["preprocess"]), "no-inference": _del(["inference"]),
    "scale-null": _set(["model", "segment_logit_scale"], None),
    "scale-string": _set(["model", "segment_logit_scale"], "20"),
    "scale-missing": _del(["model", "clip_logit_scale"]),
    "queries-string": _set(["model", "num_queries"], "10"), "queries-bool": _set(["model", "num_queries"], True),
    "embed-negative": _set(["model", "embed_dim"], -32), "stride-zero": _set(["model", "mask_stride"], 0),
    "mean-short": _set(["preprocess", "pixel_mean"], [1, 2]), "std-zero": _set(["preprocess", "pixel_std"], [0, 1, 1]),
    "mean-strings": _set(["preprocess", "clip_pixel_mean"], ["a", "b", "c"]),
    "min-size-negative": _set(["inference", "min_size"], -1), "max-size-float": _set(["inference", "max_size"], 1.5),
    "lambda-2": _set(["inference", "ensemble_lambda"], 2), "dense-zero": _set(["inference", "dense_size"], [0, 64]),
    "names-string": _set(["classes", "names"], "person"), "seen-short": _set(["classes", "seen"], [True]),
    "seen-ints": _set(["classes", "seen"], [1] * len(NAMES)), "names-null": _set(["classes", "names"], None),
    "graph-null": _set(["graphs", "proposal"], None), "graph-file-int": _set(["graphs", "proposal", "file"], 3),
    "graph-io-list": _set(["graphs", "proposal", "outputs"], ["x"]),
    "files-list": _set(["files"], []), "digest-short": _set(["files", "proposal.onnx"], "abc"),
    "digest-null": _set(["files", "proposal.onnx"], None),
    "vocabularies-list": _set(["vocabularies"], ["vocab/all.npz"]),
    "default-unknown": _set(["default_vocabulary"], "nope"), "default-int": _set(["default_vocabulary"], 3),
    "tokenizer-context": _set(["tokenizer", "context_length"], "77"),
    "engines-list": _set(["engines"], [1]), "format-version-string": _set(["format_version"], "1"),
    "graph-parent": _set(["graphs", "proposal", "file"], "../proposal.onnx"),
    "graph-absolute": _set(["graphs", "proposal", "file"], "/etc/passwd"),
    "graph-backslash": _set(["graphs", "proposal", "file"], "..\\proposal.onnx"),
    "files-parent": lambda m: m["files"].update({"../x": "0" * 64}),
    "background-absolute": _set(["background"], "/etc/hostname"),
    "vocab-parent": _set(["vocabularies", "all"], "../../all.npz"),
    "tokenizer-parent": _set(["tokenizer", "file"], "../bpe.txt.gz"),
    "engine-parent": _set(["engines"], {"proposal": {"file": "../x.engine"}}),
    "crop-huge": _set(["model", "crop_size"], 10 ** 6), "context-huge": _set(["tokenizer", "context_length"], 10 ** 9),
    "dense-huge": _set(["inference", "dense_size"], [10 ** 6, 64]), "queries-huge": _set(["model", "num_queries"], 10 ** 9),
}


@pytest.mark.parametrize("name", sorted(BAD_MANIFESTS))
def test_bad_manifests_are_bundle_errors(bundle, tmp_path, name):
    from sdk import BundleError, Segmenter

    path = edit(bundle, tmp_path, BAD_MANIFESTS[name])
    with pytest.raises(BundleError, match="manifest.json|format version"):
        Segmenter(path, backend="onnxruntime", cache_dir=False)


@pytest.mark.parametrize("text", ["[]", "null", '"bundle"', "[" * 100000 + "]" * 100000,
                                  '{"format": "zegformer-sdk/bundle", "format_version": 1, ' * 1 + '"model": ' * 0 + "}",
                                  "\xff\xfe not utf-8"], ids=["list", "null", "string", "deep", "bare", "binary"])
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
    "vocab-nan": ("vocab/all.npz", lambda p: _vocab(p, text_features_clip=np.full((8, 32), np.nan, np.float32)),
                  "proposal", None),
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
        tf = {"wide": np.zeros((2, 7)), "nan": np.full((2, 32), np.nan), "rows": np.zeros((5, 32)),
              "names": good.text_features}[damage].astype(np.float32)
        entry.write_bytes(npz_bytes(names=np.array(names if damage != "names" else ["a", "b"]),
                                    text_features=tf, text_features_clip=tf))
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


def test_keep_size_refuses_images_beyond_max_size(bundle):
    from sdk import ImageError, Segmenter

    s = Segmenter(bundle, backend="onnxruntime", mode="proposal", min_size=None, max_size=256, cache_dir=False)
    with pytest.raises(ImageError, match="max_size"):
        s(np.zeros((40, 300, 3), np.uint8))
    assert s(np.zeros((40, 256, 3), np.uint8)).label_map.shape == (40, 256)


@pytest.mark.parametrize("features", ["nan", "strings", "shape", "scalar", "ragged"])
def test_bad_user_text_features(seg, features):
    from sdk import VocabularyError

    good = np.eye(2, 32, dtype=np.float32)
    bad = {"nan": np.full((2, 32), np.nan), "strings": np.array([["a"] * 32] * 2), "shape": np.zeros((3, 32)),
           "scalar": 1.0, "ragged": [[1.0], [1.0, 2.0]]}[features]
    before = seg.class_names
    with pytest.raises(VocabularyError):
        seg.set_vocabulary(["a", "b"], text_features=bad, text_features_clip=good)
    assert seg.class_names == before
