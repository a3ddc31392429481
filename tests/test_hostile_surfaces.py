"""Hostile manifests on the surfaces added after the first hardening round: the fields the backends
read (graphs' precision and variants, engines, the precision table, the checkpoint). Label PNGs and
image files: ``tests/test_hostile_files.py``.

Runs without torch on the checked-in tiny bundle; each case is a typed one-line error naming the
file, or the correct result.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import pytest

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
