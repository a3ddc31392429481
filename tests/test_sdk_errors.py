"""Every SDK error type, raised with a message that says what is wrong and what to do."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from tests.sdk_helpers import NAMES, block_image, copy_bundle, tiny_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


def segmenter(path, **kw):
    from sdk import Segmenter

    return Segmenter(path, backend="onnxruntime", cache_dir=False, **kw)


def edit_manifest(path, **changes):
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(changes)
    (path / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def flip_byte(path, offset=-100):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_hierarchy():
    import sdk

    for cls in (sdk.BundleError, sdk.BackendError, sdk.VocabularyError, sdk.ImageError):
        assert issubclass(cls, sdk.SegmenterError)
    assert issubclass(sdk.EngineMismatchWarning, UserWarning)
    assert issubclass(sdk.ImageError, ValueError) and issubclass(sdk.VocabularyError, ValueError)


def test_missing_bundle_and_manifest(tmp_path):
    from sdk import BundleError

    with pytest.raises(BundleError, match="not found"):
        segmenter(tmp_path / "nope")
    with pytest.raises(BundleError, match="manifest.json is missing"):
        segmenter(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        segmenter(tmp_path)


def test_unknown_format_version(bundle, tmp_path):
    from sdk import BundleError

    path = copy_bundle(bundle, tmp_path / "b")
    edit_manifest(path, format_version=99)
    with pytest.raises(BundleError, match="format version 99.*upgrade"):
        segmenter(path)
    edit_manifest(path, format="something-else", format_version=1)
    with pytest.raises(BundleError, match="not a zegformer-sdk/bundle manifest"):
        segmenter(path)


@pytest.mark.parametrize("name", ["proposal.onnx", "clip_image.onnx", "background.npy", "vocab/all.npz"])
def test_tampered_file_is_named(bundle, tmp_path, name):
    from sdk import BundleError

    path = copy_bundle(bundle, tmp_path / "b")
    flip_byte(path / name)
    with pytest.raises(BundleError, match=rf"{name}.*(corrupted|modified).*re-export"):
        segmenter(path, min_size=None)(block_image())


def test_missing_file_and_unlisted_file(bundle, tmp_path):
    from sdk import BundleError

    path = copy_bundle(bundle, tmp_path / "b")
    (path / "clip_image.onnx").unlink()
    with pytest.raises(BundleError, match="clip_image.onnx is missing"):
        segmenter(path, min_size=None)(block_image())
    seg = segmenter(path, min_size=None, mode="proposal")  # the proposal mode never opens it
    assert seg(block_image()).label_map.shape == (90, 120)
    manifest = edit_manifest(path)
    del manifest["files"]["proposal.onnx"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="proposal.onnx is not listed"):
        segmenter(path, mode="proposal")(block_image())


def test_vocabulary_errors(bundle):
    from sdk import VocabularyError

    seg = segmenter(bundle)
    for bad, pattern in [
        ([], "empty"),
        ([f"c{i}" for i in range(10001)], "at most 10000"),
        (["cat", 3], "not a string"),
        (["cat", "  "], "empty"),
        ("nope", "not a built-in"),
        (42, "list of class names"),
    ]:
        with pytest.raises(VocabularyError, match=pattern):
            seg.set_vocabulary(bad)
    with pytest.raises(VocabularyError, match="shape"):
        seg.set_vocabulary(["a", "b"], text_features=np.zeros((3, 32)), text_features_clip=np.zeros((3, 32)))
    with pytest.raises(VocabularyError, match="both"):
        seg.set_vocabulary(["a"], text_features=np.zeros((1, 32)))
    with pytest.raises(VocabularyError):
        seg(block_image(), vocabulary=[])
    assert seg.class_names == tuple(NAMES)  # failed calls leave the vocabulary alone


def test_vocabulary_files(bundle, tmp_path):
    seg = segmenter(bundle)
    txt = tmp_path / "classes.txt"
    txt.write_text("# my classes\ncat\n\nsofa, couch\n")
    assert seg.set_vocabulary(str(txt)).names == ("cat", "sofa, couch")
    js = tmp_path / "classes.json"
    js.write_text(json.dumps({"names": ["sky", "sea"]}))
    assert seg.set_vocabulary(js).names == ("sky", "sea")


@pytest.mark.parametrize(
    "image, pattern",
    [
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        (np.zeros((10, 10, 2), np.uint8), "shape"),
        (np.zeros((1, 10, 10, 3), np.uint8), "shape"),
        (np.zeros((10, 10, 3), np.complex64), "dtype"),
        (np.zeros((10, 10, 3), bool), "dtype"),
        (np.full((10, 10, 3), 2.0, np.float32), r"\[0, 1\]"),
        (np.full((10, 10, 3), -3, np.int32), "outside"),
        ("/no/such/image.png", "not found"),
        ([[1, 2, 3]], "unsupported image type"),
    ],
)
def test_image_errors(bundle, image, pattern):
    from sdk import ImageError

    with pytest.raises(ImageError, match=pattern):
        segmenter(bundle, min_size=None, mode="proposal")(image)


def test_unreadable_image_file(bundle, tmp_path):
    from sdk import ImageError

    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageError, match="cannot read image"):
        segmenter(bundle, mode="proposal")(path)


def test_unknown_mode_backend_device(bundle):
    from sdk import BackendError, SegmenterError

    with pytest.raises(SegmenterError, match="unknown mode"):
        segmenter(bundle, mode="fast")
    from sdk import Segmenter

    with pytest.raises(BackendError, match="unknown backend"):
        Segmenter(bundle, backend="tflite")
    with pytest.raises(BackendError, match="unknown device"):
        Segmenter(bundle, device="tpu")


def test_tensorrt_unavailable_fails_loudly(bundle, monkeypatch):
    from sdk import BackendError, Segmenter

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendError, match="tensorrt"):
        Segmenter(bundle, backend="tensorrt", device="cuda")
    with pytest.raises(BackendError, match="CUDA GPU"):
        Segmenter(bundle, backend="tensorrt", device="cpu")
    auto = Segmenter(bundle, cache_dir=False)  # auto: falls back to ONNX Runtime on the CPU
    assert auto.backend.name == "onnxruntime" and auto.backend.device == "cpu"


def fake_tensorrt(monkeypatch, version="10.3.0", cc=(8, 9)):
    """Stand-ins for ``tensorrt`` and ``pycuda.driver`` (enough for the compatibility check)."""
    from tests.trt_standins import FakePyCuda, install

    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    install(monkeypatch, FakePyCuda(cc=cc), trt)


def test_engine_mismatch_warns_and_falls_back(bundle, tmp_path, monkeypatch):
    from sdk import EngineMismatchWarning, Segmenter
    from sdk.bundle_format import sha256_file

    path = copy_bundle(bundle, tmp_path / "b")
    (path / "proposal.engine").write_bytes(b"plan")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["proposal.engine"] = sha256_file(path / "proposal.engine")
    manifest["engines"] = {
        "proposal": {
            "file": "proposal.engine",
            "tensorrt": "10.3.0",
            "gpu": "Other GPU",
            "compute_capability": "9.0",
            "precision": "fp32",
            "onnx_sha256": manifest["files"]["proposal.onnx"],
        }
    }
    (path / "manifest.json").write_text(json.dumps(manifest))
    fake_tensorrt(monkeypatch)
    with pytest.warns(EngineMismatchWarning, match="compute capability 9.0"):
        seg = Segmenter(path, cache_dir=False, device="auto")
    assert seg.backend.name == "onnxruntime"
    from sdk.backends.tensorrt import engine_mismatch, normalize_cc
    from sdk.bundle import Bundle

    b = Bundle(path)
    entry = manifest["engines"]["proposal"]
    assert engine_mismatch(entry, b, "proposal", "10.3.0", "9.0") is None
    assert "TensorRT 10.3.0" in engine_mismatch(entry, b, "proposal", "10.5.1", "9.0")
    assert "another proposal.onnx" in engine_mismatch(
        {**entry, "onnx_sha256": "0" * 64}, b, "proposal", "10.3.0", "9.0"
    )
    assert normalize_cc([8, 6]) == normalize_cc("sm_86") == normalize_cc(86) == "8.6"


def test_missing_kernels_is_a_backend_error(bundle, monkeypatch):
    import sdk
    from sdk import BackendError

    monkeypatch.delattr(sdk, "kernels", raising=False)
    monkeypatch.setitem(sys.modules, "sdk.kernels", None)
    with pytest.raises(BackendError, match="pip install -e"):
        segmenter(bundle)
