"""The SDK's torch-free core: class files, prompts, manifest sections and defaults, backend registry."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sdk import VocabularyError
from sdk.classnames import normalise_name, read_class_file, split_names

CLASS_TEXT = "\ufeff# my classes\r\ncat  # pet\r\n\r\n   \r\ntree,bush\r\n red car ,  automobile ,\r\nsky\n"
EXPECTED = ["cat", "tree, bush", "red car, automobile", "sky"]


def test_class_file_rules(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_bytes(CLASS_TEXT.encode("utf-8"))
    assert read_class_file(path) == EXPECTED
    (tmp_path / "classes.json").write_text(json.dumps({"names": ["cat", {"name": "tree,bush"}]}), encoding="utf-8")
    assert read_class_file(tmp_path / "classes.json") == ["cat", "tree, bush"]
    assert normalise_name(" a ,b,, c ") == "a, b, c"
    assert split_names("cat; dog ;;sky,blue sky") == ["cat", "dog", "sky, blue sky"]


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("cat\ndog\ncat # again\n", r"'cat' twice \(line 1 and line 3\)"),
        ("tree, bush\ntree ,bush\n", "twice"),
        ("# nothing\n\n  \n", "lists no classes"),
    ],
)
def test_class_file_errors(tmp_path, text, pattern):
    path = tmp_path / "bad.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(VocabularyError, match=pattern):
        read_class_file(path)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(VocabularyError, match="latin1.txt is not UTF-8 text"):
        read_class_file(tmp_path / "latin1.txt")


def test_class_file_parses_alike_in_export_and_sdk(tmp_path):
    """The exporter reads class files with the SDK's parser: same names, same errors."""
    pytest.importorskip("torch")
    from export.errors import ExportError
    from export.vocab import resolve

    checkpoint = {"classes": {"names": ["cat"], "seen": [True]}}
    path = tmp_path / "classes.txt"
    path.write_bytes(CLASS_TEXT.encode("utf-8"))
    (request,) = resolve([str(path)], checkpoint)
    assert list(request.names) == read_class_file(path) == EXPECTED and request.name == "classes"
    path.write_text("cat\ncat\n", encoding="utf-8")
    with pytest.raises(ExportError, match="twice"):
        resolve([str(path)], checkpoint)


def test_prompts_and_pooling():
    from sdk.prompts import expand_prompts, pool_class_embeddings

    prompts, owner = expand_prompts(["a, b", "c"], ["x {}", "y {}"])
    assert prompts == ["x a", "x b", "y a", "y b", "x c", "y c"] and owner == [0, 0, 0, 0, 1, 1]
    with pytest.raises(VocabularyError):
        expand_prompts([], ["{}"])
    raw = np.array([[3, 4], [6, 8], [1, 0]], np.float32)
    pooled = pool_class_embeddings(raw, [0, 0, 1], 2)
    np.testing.assert_allclose(pooled, [[0.6, 0.8], [1, 0]], atol=1e-7)


def test_manifest_sections_fill_defaults_and_round_trip(tmp_path):
    from sdk import constants as C
    from sdk.errors import BundleError
    from sdk.manifest import (
        InferenceSettings,
        ModelInfo,
        PreprocessInfo,
        Settings,
        TokenizerInfo,
        new_manifest,
        read_manifest,
        write_manifest,
    )

    inf = InferenceSettings.from_dict({"min_size": 512, "unknown_key": 1})
    assert inf.min_size == 512 and inf.ensemble_lambda == C.ENSEMBLE_LAMBDA and inf.gzero_calibrate == 0.1
    model = ModelInfo(segment_logit_scale=100.0, clip_logit_scale=100.0)
    pre = PreprocessInfo([0.0] * 3, [1.0] * 3, [0.0] * 3, [1.0] * 3)
    manifest = new_manifest(
        model, pre, InferenceSettings(), TokenizerInfo(), classes={"names": ["a", "b"], "seen": [1, 0]}, graphs={}
    )
    (tmp_path / "x.bin").write_bytes(b"123")
    written = write_manifest(tmp_path, manifest)
    assert list(written["files"]) == ["x.bin"] and written["classes"]["seen"] == [True, False]
    read = read_manifest(tmp_path)
    settings = Settings.from_manifest(read)
    assert settings.model == model and settings.dense_size == (C.CROP_SIZE, C.CROP_SIZE)
    del read["inference"]["gzero_calibrate"]  # an older manifest: the default applies
    assert Settings.from_manifest(read).inference.gzero_calibrate == C.GZERO_CALIBRATE
    del read["model"]["segment_logit_scale"]
    with pytest.raises(BundleError, match="segment_logit_scale"):
        Settings.from_manifest(read)


def test_one_version_string():
    import re
    from pathlib import Path

    import sdk
    from sdk.version import __version__

    root = Path(__file__).resolve().parents[1]
    assert sdk.__version__ == __version__
    assert not re.search(r'version\s*=\s*"\d', (root / "setup.py").read_text())


def test_cli_backend_choices_come_from_the_registry():
    from sdk.backends import ALIASES, REGISTRY, backend_names
    from sdk.cli import build_parser

    parser = build_parser()
    for name in backend_names():
        assert parser.parse_args(["segment", "x.png", "--bundle", "b", "--backend", name]).backend == name
    assert {"onnxruntime", "tensorrt", "torch"} <= set(REGISTRY) and ALIASES["onnx"] == "onnxruntime"
