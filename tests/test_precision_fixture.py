"""Reduced precision on the full R101 + ViT-B/16 model: the official fixture's label map through int8,
bf16 and fp16, compared with fp32 (slow: int8 calibration and six 100-crop runs of the full model).

fp32 is checked against the official map by ``test_sdk_conformance.py`` (≥ 99.9 %); here each tier's
map is compared with ONNX Runtime fp32's on the same image and 171-class vocabulary.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)
# floors on label-map agreement with fp32 (measured here: see the README's precision table)
FLOORS = {"fp16": 0.995, "bf16": 0.995, "int8": 0.97}


@pytest.fixture(scope="module")
def tiered_bundle(fixture_bundle, tmp_path_factory):
    """The shared fixture bundle's files linked into a new directory, plus int8 and fp16 graphs."""
    pytest.importorskip("skimage", reason="the default int8 calibration set is scikit-image's photographs")
    from export.manifest import read_manifest
    from export.precision import PrecisionOptions, add_precisions

    root = tmp_path_factory.mktemp("fixture_tiers") / "bundle"
    root.mkdir()
    for path in fixture_bundle.rglob("*"):
        dest = root / path.relative_to(fixture_bundle)
        if path.is_dir():
            dest.mkdir(exist_ok=True)
        elif path.name != "manifest.json":
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, dest)  # a hard link: bundles refuse symlinks that leave them
    (root / "manifest.json").write_text((fixture_bundle / "manifest.json").read_text())
    add_precisions(
        root, read_manifest(root), PrecisionOptions(fp16=True, int8=True, measure=False, calibration_images=6)
    )
    return root


@pytest.fixture(scope="module")
def inputs(reference_dir, fixture_arrays):
    names = json.loads((reference_dir / "cocostuff_all_classnames.json").read_text())
    return names, fixture_arrays


def label_map(bundle, names, arrays, backend, precision):
    from sdk import Segmenter

    seg = Segmenter(bundle, backend=backend, precision=precision, min_size=None, cache_dir=False)
    seg.set_vocabulary(
        names, text_features=arrays["text_features_test"], text_features_clip=arrays["text_features_test_clip"]
    )
    result = seg(arrays["image"])
    assert result.info["precision"] == precision and result.info["backend"] == backend
    return result.label_map


@pytest.fixture(scope="module")
def fp32_map(tiered_bundle, inputs):
    labels = label_map(tiered_bundle, *inputs, "onnxruntime", "fp32")
    assert float((labels == inputs[1]["sem_seg_argmax"]).mean()) >= 0.999  # the faithful path
    return labels


@pytest.mark.parametrize(
    "backend,precision", [("onnxruntime", "int8"), ("onnxruntime", "fp16"), ("openvino", "bf16"), ("openvino", "int8")]
)
def test_fixture_label_map_agreement(tiered_bundle, inputs, fp32_map, backend, precision):
    if backend == "openvino":
        pytest.importorskip("openvino", reason="OpenVINO is optional: pip install 'zegformer-sdk[openvino]'")
    labels = label_map(tiered_bundle, *inputs, backend, precision)
    agree = float((labels == fp32_map).mean())
    official = float((labels == inputs[1]["sem_seg_argmax"]).mean())
    log.warning(
        "fixture %s %s: agreement with fp32 %.5f, with the official map %.5f", backend, precision, agree, official
    )
    assert agree >= FLOORS[precision], f"{backend} {precision}: {agree:.4f} < {FLOORS[precision]}"
    assert len(np.unique(labels)) > 1
