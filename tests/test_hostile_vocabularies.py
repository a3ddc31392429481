"""Hostile Segmenter options and vocabularies (lists, strings, files, user text features): each is
the documented typed error (or works), and a failed change leaves the Segmenter as it was."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.hostile_helpers import bundle, seg  # noqa: F401 (pytest fixtures)
from tests.sdk_helpers import block_image

pytest.importorskip("torch")  # the bundle is exported with torch


# ====================================================================== options
BAD_OPTIONS = [
    {"min_size": 0},
    {"min_size": -1},
    {"min_size": "abc"},
    {"min_size": float("nan")},
    {"min_size": float("inf")},
    {"min_size": 1.5},
    {"min_size": True},
    {"min_size": 10**9},
    {"min_size": [640]},
    {"max_size": 0},
    {"max_size": float("nan")},
    {"max_size": "big"},
    {"threads": -1},
    {"threads": "2"},
    {"threads": 2.5},
    {"clip_batch": 0},
    {"text_batch": 0},
    {"text_batch": None},
    {"prune_threshold": float("nan")},
    {"prune_threshold": -0.1},
    {"prune_threshold": "x"},
    {"prune_threshold": float("inf")},
    {"backend": 3},
    {"device": None},
    {"mode": 5},
    {"bgr": "yes"},
    {"cache_dir": 3},
    {"checkpoint": 42},
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

    for options in [
        {"min_size": np.int64(64)},
        {"min_size": 64.0},
        {"min_size": None},
        {"threads": 0},
        {"prune_threshold": 0},
        {"bgr": np.bool_(True)},
        {"max_size": 4096},
    ]:
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
    "nested.json": b'[["cat"]]',
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


@pytest.mark.parametrize(
    "names",
    [["cat", "\ud800"], ["x" * 5000], ["cat", None], [b"cat"], "cat"],
    ids=["surrogate", "long", "none", "bytes", "bare-string"],
)
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


@pytest.mark.parametrize("features", ["nan", "strings", "shape", "scalar", "ragged"])
def test_bad_user_text_features(seg, features):
    from sdk import VocabularyError

    good = np.eye(2, 32, dtype=np.float32)
    bad = {
        "nan": np.full((2, 32), np.nan),
        "strings": np.array([["a"] * 32] * 2),
        "shape": np.zeros((3, 32)),
        "scalar": 1.0,
        "ragged": [[1.0], [1.0, 2.0]],
    }[features]
    before = seg.class_names
    with pytest.raises(VocabularyError):
        seg.set_vocabulary(["a", "b"], text_features=bad, text_features_clip=good)
    assert seg.class_names == before
