"""Hostile input on the surfaces added after the first hardening round: manifest fields the backends
read (graphs' precision and variants, engines, the precision table, the checkpoint), label PNGs,
image files whose values break the documented ranges, and the one image-decode path.

Runs without torch on the checked-in tiny bundle; each case is a typed one-line error naming the
file, or the correct result.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from tests.hostile_bytes import GOOD, bad_images, good_images
from tests.sdk_helpers import tiny_bundle

SHA = "ab" * 32


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


def full_manifest(bundle: Path) -> dict:
    """The tiny bundle's manifest with every optional section the SDK reads filled in validly."""
    m = json.loads((bundle / "manifest.json").read_text())
    m["graphs"]["clip_image"]["precision"] = "fp32"
    m["graphs"]["clip_image"]["variants"] = {
        "int8": {"file": "clip_image.int8.onnx", "precision": "int8", "calibration": {"images": 8, "method": "minmax"}},
        "fp16": {"file": "clip_image.fp16.onnx", "precision": "fp16", "io": "fp32"},
    }
    m["engines"] = {
        "proposal": {
            "file": "proposal.engine",
            "tensorrt": "10.3.0",
            "cuda": "12.6",
            "gpu": "NVIDIA H100",
            "compute_capability": "9.0",
            "precision": "fp16",
            "num_profiles": 2,
            "profiles": {"image": {"min": [1, 3, 32, 32], "opt": [1, 3, 640, 640], "max": [1, 3, 2560, 2560]}},
            "onnx_file": "proposal.onnx",
            "onnx_sha256": SHA,
        }
    }
    m["precision"] = {
        "agreement": {"int8": {"onnxruntime": 0.97, "openvino": 0.96}, "clip_image=int8": {"openvino": 1}},
        "bar": 0.99,
        "reference": "onnxruntime fp32",
        "measured_on": {"images": ["a.png"]},
    }
    m["checkpoint"] = {"path": "model.pth", "sha256": SHA}
    return m


def with_manifest(bundle: Path, tmp_path: Path, manifest: dict) -> Path:
    target = tmp_path / "b"
    if not target.exists():
        shutil.copytree(bundle, target)
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def test_the_full_manifest_is_valid(bundle, tmp_path):
    from sdk.bundle import Bundle

    b = Bundle(with_manifest(bundle, tmp_path, full_manifest(bundle)))
    assert b.graph("clip_image")["variants"]["int8"]["file"] == "clip_image.int8.onnx"


# (path of keys, a description) -> values of the wrong type for that key, built for the class:
# every JSON type that is not the one documented, plus the out-of-range values of the right type.
WRONG = {
    "null": None,
    "bool": True,
    "int": 3,
    "negative": -1,
    "float": 1.5,
    "string": "x",
    "empty_string": "",
    "list": [1],
    "empty_list": [],
    "object": {"a": 1},
    "empty_object": {},
}
FIELDS = {
    ("graphs", "clip_image", "precision"): {
        "null",
        "bool",
        "int",
        "negative",
        "float",
        "string",
        "empty_string",
        "list",
        "empty_list",
        "object",
        "empty_object",
    },
    ("graphs", "clip_image", "variants"): {
        "bool",
        "int",
        "negative",
        "float",
        "string",
        "empty_string",
        "list",
        "empty_list",
    },
    ("graphs", "clip_image", "variants", "int8"): {
        "null",
        "bool",
        "int",
        "negative",
        "float",
        "string",
        "empty_string",
        "list",
        "empty_list",
        "empty_object",
        "object",
    },
    ("graphs", "clip_image", "variants", "int8", "file"): {
        "null",
        "bool",
        "int",
        "negative",
        "float",
        "empty_string",
        "list",
        "empty_list",
        "object",
        "empty_object",
    },
    ("graphs", "clip_image", "variants", "int8", "precision"): {
        "null",
        "bool",
        "int",
        "float",
        "string",
        "empty_string",
        "list",
        "object",
    },
    ("graphs", "clip_image", "variants", "int8", "calibration"): {"bool", "int", "float", "string", "list"},
    ("graphs", "clip_image", "inputs"): {"bool", "int", "string", "list", "empty_list"},
    ("graphs", "clip_image", "outputs"): {"bool", "int", "string", "list"},
    ("engines", "proposal"): {"bool", "int", "string", "list", "empty_object"},
    ("engines", "proposal", "file"): {"null", "bool", "int", "empty_string", "list", "object"},
    ("engines", "proposal", "precision"): {"null", "bool", "int", "string", "list"},
    ("engines", "proposal", "num_profiles"): {"null", "bool", "negative", "float", "string", "list", "object"},
    ("engines", "proposal", "profiles"): {"null", "bool", "int", "string", "list"},
    ("engines", "proposal", "compute_capability"): {"null", "bool", "list", "object"},
    ("engines", "proposal", "tensorrt"): {"null", "bool", "int", "list", "object"},
    ("engines", "proposal", "onnx_sha256"): {"bool", "int", "string", "list"},
    ("engines", "proposal", "onnx_file"): {"bool", "int", "empty_string", "list"},
    ("precision",): {"bool", "int", "float", "string", "list"},
    ("precision", "agreement"): {"null", "bool", "int", "string", "list"},
    ("precision", "agreement", "int8"): {"null", "bool", "int", "string", "list"},
    ("precision", "agreement", "int8", "onnxruntime"): {
        "null",
        "bool",
        "negative",
        "float",
        "string",
        "list",
        "object",
    },
    ("precision", "bar"): {"null", "bool", "negative", "float", "string", "list"},
    ("checkpoint",): {"bool", "int", "string", "list"},
    ("checkpoint", "path"): {"bool", "int", "empty_string", "list", "object"},
    ("checkpoint", "sha256"): {"bool", "int", "string", "list"},
    ("created",): {"bool", "int", "list", "object"},
    ("versions",): {"bool", "int", "string", "list"},
}
CASES = [(keys, kind) for keys, kinds in FIELDS.items() for kind in sorted(kinds)]


def _set(manifest: dict, keys, value) -> dict:
    node = manifest
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
    return manifest


@pytest.mark.parametrize("keys,kind", CASES, ids=[f"{'.'.join(k)}={kind}" for k, kind in CASES])
def test_wrong_manifest_types_are_bundle_errors_naming_the_key(bundle, tmp_path, keys, kind):
    from sdk import BundleError
    from sdk.bundle import Bundle

    manifest = _set(copy.deepcopy(full_manifest(bundle)), keys, WRONG[kind])
    with pytest.raises(BundleError) as info:
        Bundle(with_manifest(bundle, tmp_path, manifest))
    message = str(info.value)
    assert "manifest.json" in message and any(k in message for k in keys) and "\n" not in message, message


@pytest.mark.parametrize(
    "change",
    [
        "variant_without_file",
        "unknown_tier",
        "tier_mismatch",
        "variant_escapes",
        "engine_without_file",
        "agreement_nan",
        "agreement_above_1",
    ],
)
def test_variant_and_precision_shapes(bundle, tmp_path, change):
    from sdk import BundleError
    from sdk.bundle import Bundle

    m = full_manifest(bundle)
    variants = m["graphs"]["clip_image"]["variants"]
    if change == "variant_without_file":
        del variants["int8"]["file"]
    elif change == "unknown_tier":
        variants["int4"] = {"file": "clip_image.int4.onnx"}
    elif change == "tier_mismatch":
        variants["int8"]["precision"] = "fp16"
    elif change == "variant_escapes":
        variants["int8"]["file"] = "../clip_image.int8.onnx"
    elif change == "engine_without_file":
        del m["engines"]["proposal"]["file"]
    elif change == "agreement_nan":
        m["precision"]["agreement"]["int8"]["onnxruntime"] = math.nan
    else:
        m["precision"]["agreement"]["int8"]["onnxruntime"] = 1.5
    path = with_manifest(bundle, tmp_path, m)
    with pytest.raises(BundleError, match="manifest.json"):
        Bundle(path)


def test_segmenter_refuses_a_variant_without_file_at_construction(bundle, tmp_path):
    from sdk import BundleError, Segmenter

    m = json.loads((bundle / "manifest.json").read_text())
    m["graphs"]["clip_image"]["variants"] = {"int8": {"precision": "int8"}}
    with pytest.raises(BundleError, match=r"variants\.int8\.file"):
        Segmenter(with_manifest(bundle, tmp_path, m), backend="onnxruntime", precision="int8", cache_dir=False)


# ---------------------------------------------------------------------------------------- label PNGs
def test_label_png_refuses_more_classes_than_16_bits(tmp_path):
    from sdk import ImageError
    from sdk.formats import load_label_png, save_label_png

    names = [f"c{i}" for i in range(70_000)]
    labels = np.array([[0, 65_535], [65_536, 69_999]], np.int32)
    with pytest.raises(ImageError, match="65536 classes"):
        save_label_png(tmp_path / "x.png", labels, names)
    assert not (tmp_path / "x.png").exists()
    save_label_png(tmp_path / "ok.png", np.array([[0, 65_535]], np.int32), names[:65_536])  # the largest that fits
    back, back_names = load_label_png(tmp_path / "ok.png")
    assert back.tolist() == [[0, 65_535]] and len(back_names) == 65_536


@pytest.mark.parametrize(
    "labels,names",
    [
        (np.array([[0, 3]]), ["a", "b"]),
        (np.array([[-1, 0]]), ["a"]),
        (np.zeros((2, 2), np.float32), ["a"]),
        (np.zeros((2, 2, 3), np.int32), ["a"]),
        (np.zeros((0, 4), np.int32), ["a"]),
        (np.zeros((2, 2), bool), ["a"]),
        (np.zeros((2, 2), np.int32), [1, 2]),
        (np.zeros((2, 2), np.int32), "ab"),
        (np.zeros((2, 2), np.int32), []),
    ],
    ids=["index_too_big", "negative", "float", "3d", "empty", "bool", "names_not_str", "names_str", "no_names"],
)
def test_label_png_refuses_what_it_cannot_represent(tmp_path, labels, names):
    from sdk import ImageError
    from sdk.formats import save_label_png

    with pytest.raises(ImageError):
        save_label_png(tmp_path / "x.png", labels, names)
    assert not (tmp_path / "x.png").exists()


def _png_with_chunk(path: Path, text: str, labels=None) -> Path:
    from sdk.formats import PNG_CLASSES_KEY

    meta = PngImagePlugin.PngInfo()
    meta.add_itxt(PNG_CLASSES_KEY, text)
    Image.fromarray(np.zeros((4, 4), np.uint8) if labels is None else labels).save(path, pnginfo=meta)
    return path


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "{",
        '{"a": 1}',
        "3",
        '"cat"',
        "[1, 2]",
        '["a", null]',
        "null",
        "[" * 5000 + "]" * 5000,
        '["only one"]',
    ],
    ids=["text", "truncated", "object", "number", "string", "ints", "null_item", "null", "deep", "too_few_names"],
)
def test_label_png_with_a_bad_class_chunk_is_an_image_error(tmp_path, text):
    from sdk import ImageError
    from sdk.formats import load_label_png

    path = _png_with_chunk(tmp_path / "x.png", text, labels=np.array([[0, 1], [1, 0]], np.uint8))
    with pytest.raises(ImageError, match="x.png"):
        load_label_png(path)


@pytest.mark.parametrize("name", ["empty", "text", "png_cut_0.5", "bomb_png_1bit", "png_declares_100k"])
def test_unreadable_label_pngs_are_image_errors(tmp_path, name):
    from sdk import ImageError
    from sdk.formats import load_label_png

    path = tmp_path / "x.png"
    path.write_bytes(bad_images()[name])
    with pytest.raises(ImageError, match="x.png"):
        load_label_png(path)


# ---------------------------------------------------------------------------------------- image files
@pytest.mark.parametrize("name", sorted(bad_images()))
def test_bad_image_files_are_image_errors_naming_the_file(tmp_path, name):
    from sdk import ImageError
    from sdk.preprocess import load_image

    path = tmp_path / f"{name}.img"
    path.write_bytes(bad_images()[name])
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("name", sorted(bad_images()))
def test_bad_image_bytes_are_image_errors(name):
    from sdk import ImageError
    from sdk.preprocess import check_image_bytes, decode_image

    with pytest.raises(ImageError):
        decode_image(bad_images()[name])
    header_only = {
        "png_declares_12k",
        "png_cut_0.1",
        "png_cut_0.5",
        "png_cut_0.9",
        "jpeg_cut_0.5",
        "jpeg_cut_0.9",
        "float_tiff_negative",
        "float_tiff_nan",
        "float_tiff_fraction_above_1",
        "float_tiff_above_65535",
        "int32_tiff_negative",
        "int32_tiff_above_65535",
    }  # only a full decode can tell
    if name not in header_only:
        with pytest.raises(ImageError):
            check_image_bytes(bad_images()[name])


def test_float_and_wide_integer_files_follow_the_documented_ranges():
    from sdk.preprocess import decode_image

    values = GOOD[..., 0]
    expected = np.repeat(values[..., None], 3, axis=2)
    assert np.array_equal(decode_image(good_images()["float_unit"]), expected)  # [0, 1] × 255, rounded
    assert np.array_equal(decode_image(good_images()["float_0_255"]), expected)  # whole numbers 0..255 as is
    wide = Image.fromarray(values.astype(np.float32) * 257)  # whole numbers 0..65535 >> 8
    from tests.hostile_bytes import encoded

    assert np.array_equal(decode_image(encoded(wide, "TIFF")), expected)
    int32 = Image.fromarray(values.astype(np.int32) * 257)
    assert np.array_equal(decode_image(encoded(int32, "TIFF")), expected)


def test_cli_segment_reports_each_bad_file_in_one_line(bundle, tmp_path, capsys, caplog):
    from sdk.cli import main

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("bomb_png_1bit", "float_tiff_fraction_above_1", "jpeg_cut_0.5", "png_declares_100k"):
        (folder / f"{name}.png").write_bytes(bad_images()[name])
    (folder / "good.png").write_bytes(good_images()["png"])
    rc = main(
        [
            "segment",
            str(folder),
            "--bundle",
            str(bundle),
            "--out",
            str(tmp_path / "out"),
            "--backend",
            "onnxruntime",
            "--mode",
            "proposal",
            "--min-size",
            "none",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err, err
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 4 and all("\n" not in e and "/in/" in e for e in errors), errors
    assert (tmp_path / "out" / "good.png").is_file()


@pytest.mark.parametrize(
    "name", ["bomb_png_1bit", "png_declares_100k", "float_tiff_fraction_above_1", "text", "jpeg_cut_0.5", "empty"]
)
def test_demo_uploads_decode_through_the_sdk_path(tmp_path, name):
    """The demo's uploads (files Gradio stored, or webcam data URLs) go through sdk.preprocess.decode_image."""
    import base64
    from types import SimpleNamespace

    from sdk import ImageError
    from sdk.demo import decode_upload

    path = tmp_path / "upload.bin"
    path.write_bytes(bad_images()[name])
    with pytest.raises(ImageError, match="photo.png"):
        decode_upload(SimpleNamespace(path=str(path), url=None), "photo.png")
    url = "data:image/png;base64," + base64.b64encode(bad_images()[name]).decode()
    with pytest.raises(ImageError, match="snapshot"):
        decode_upload(SimpleNamespace(path=None, url=url), "snapshot")
    good = "data:image/png;base64," + base64.b64encode(good_images()["png"]).decode()
    assert np.array_equal(decode_upload(SimpleNamespace(path=None, url=good), "snapshot"), GOOD)


@pytest.mark.parametrize(
    "args",
    [["--port", "99999"], ["--port", "0"], ["--concurrency", "0"], ["--threads", "-1"], ["--device", "tpu"]],
    ids=["port_high", "port_zero", "concurrency", "threads", "device"],
)
def test_demo_options_are_one_line(bundle, capsys, args):
    pytest.importorskip("gradio", reason="pip install 'zegformer-sdk[demo]'")
    from sdk.cli import main

    rc = main(["demo", "--bundle", str(bundle), *args])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
