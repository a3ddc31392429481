"""The bundle exported from the reference fixture's weights reproduces the official outputs.

The fixture's deterministic recipe weights (``tests/recipe.py``) are saved in the official format,
imported with ``train.convert_official.convert`` and exported with ``python -m export``'s library
function; then ONNX Runtime runs ``proposal.onnx`` on the fixture image (240×320 padded to 256×320
with the pixel mean; the graph was traced at 320×320), ``clip_image.onnx`` on the official cropmask
crops and ``clip_text.onnx`` on the official tokens. Tolerances follow the fixture's README.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tests.conftest import FIXTURE_TRACE as TRACE

pytestmark = pytest.mark.slow

ATOL = RTOL = 1e-3


@pytest.fixture(scope="module")
def exported(fixture_bundle):
    """The bundle exported from the imported fixture weights (``tests/conftest.py``)."""
    return fixture_bundle


@pytest.fixture(scope="module")
def arrays(reference_dir):
    return dict(np.load(reference_dir / "reference_r101_vit16_cocostuff.npz"))


def session(bundle: Path, graph: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(bundle / f"{graph}.onnx"), providers=["CPUExecutionProvider"])


def assert_close(name: str, got: np.ndarray, ref: np.ndarray, atol: float = ATOL, rtol: float = RTOL) -> None:
    err = np.abs(got.astype(np.float64) - ref)
    print(
        f"{name}: max abs {err.max():.3e} (max |ref| {np.abs(ref).max():.3g}, "
        f"scale-relative {err.max() / max(np.abs(ref).max(), 1e-12):.3e})"
    )
    np.testing.assert_allclose(got, ref, atol=atol, rtol=rtol, err_msg=name)


def padded_image(arrays, manifest) -> np.ndarray:
    """The fixture image as the SDK feeds it: float RGB, padded bottom/right with the pixel mean."""
    h, w = (int(v) for v in arrays["padded_size"])
    img = np.empty((1, 3, h, w), np.float32)
    img[:] = np.asarray(manifest["preprocess"]["pixel_mean"], np.float32).reshape(1, 3, 1, 1)
    ih, iw = arrays["image"].shape[:2]
    img[0, :, :ih, :iw] = arrays["image"].transpose(2, 0, 1)
    return img


@pytest.fixture(scope="module")
def proposal_outputs(exported, arrays):
    bundle = exported
    manifest = json.loads((bundle / "manifest.json").read_text())
    masks, emb = session(bundle, "proposal").run(None, {"image": padded_image(arrays, manifest)})
    return manifest, masks, emb


def test_trace_size_differs_from_the_fixture_size(arrays):
    assert tuple(arrays["padded_size"]) != TRACE  # the checks below run at a size never traced


def test_proposal_masks_and_embeddings(proposal_outputs, arrays):
    _, masks, emb = proposal_outputs
    assert masks.shape == arrays["pred_masks"].shape == (1, 100, 64, 80)
    assert_close("pred_masks", masks, arrays["pred_masks"])
    assert_close("segment_embeddings", emb[0], arrays["segment_embeddings"])


def test_segment_logits(proposal_outputs, arrays, exported):
    manifest, _, emb = proposal_outputs
    bg = np.load(exported / manifest["background"])
    np.testing.assert_array_equal(bg, arrays["bg_feature"])
    scale = np.float32(manifest["model"]["segment_logit_scale"])
    assert scale == np.float32(100.0000076)
    e = emb[0]
    logits = np.concatenate([(scale * e) @ arrays["text_features_test"].T, (scale * e) @ bg.T], axis=1)
    assert_close("pred_logits", logits, arrays["pred_logits"][0])


def test_clip_image_on_official_crops(exported, arrays):
    """Crops from the torch cropmask path (on the fixture's masks) → clip_image.onnx → features."""
    from train.model import postprocess as P

    bundle = exported
    manifest = json.loads((bundle / "manifest.json").read_text())
    pre = manifest["preprocess"]
    image = torch.from_numpy(arrays["image"].transpose(2, 0, 1).astype(np.float32))[None]
    mean = torch.tensor(pre["clip_pixel_mean"]).view(1, 3, 1, 1)
    std = torch.tensor(pre["clip_pixel_std"]).view(1, 3, 1, 1)
    clip_image = P.pad_to_multiple((image - mean) / std, manifest["model"]["size_divisibility"])
    up = P.upsample_masks(torch.from_numpy(arrays["pred_masks"]), clip_image.shape[-2:])
    crops, boxes = P.masked_crops(clip_image, up, manifest["model"]["crop_size"])
    np.testing.assert_array_equal(boxes[0].numpy(), arrays["clip_boxes"])
    # float16 storage, and a few mask-threshold flips (README: "99.9 % of values within 1e-2")
    crop_err = np.abs(crops[0, :4].numpy() - arrays["clip_input_crops_q0_3_f16"].astype(np.float32))
    assert (crop_err <= 1e-2).mean() >= 0.999
    sess = session(bundle, "clip_image")
    flat = crops[0].numpy()
    feats = np.concatenate([sess.run(None, {"crops": flat[i : i + 25]})[0] for i in range(0, len(flat), 25)])
    assert_close("clip_image_features", feats, arrays["clip_image_features"])
    clip_logits = manifest["model"]["clip_logit_scale"] * feats @ arrays["text_features_test_clip"].T
    assert_close("clip_logits_per_image", clip_logits, arrays["clip_logits_per_image"], atol=5e-2)


def test_clip_text_on_official_tokens(exported, arrays):
    from train.checkpoint import load_model
    from train.model.clip import encode_text

    bundle = exported
    manifest = json.loads((bundle / "manifest.json").read_text())
    rows = [0, 1, 57, 156, 170]
    tokens = arrays["text_tokens_test_single"][rows]
    (raw,) = session(bundle, "clip_text").run(None, {"tokens": tokens})
    model, _ = load_model(manifest["checkpoint"]["path"])
    with torch.no_grad():
        ref_raw = encode_text(model.clip, torch.from_numpy(tokens)).numpy()
    assert_close("clip_text raw vs torch", raw, ref_raw, atol=1e-4, rtol=1e-4)
    # "single" template: one prompt per class; pooling = normalise, mean of one, normalise.
    feats = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    assert_close("text_features_test rows", feats, arrays["text_features_test"][rows], atol=1e-5, rtol=0)


def test_clip_dense_is_unit_norm(exported):
    bundle = exported
    manifest = json.loads((bundle / "manifest.json").read_text())
    hd, wd = manifest["inference"]["dense_size"]
    image = np.random.default_rng(0).standard_normal((1, 3, hd, wd)).astype(np.float32)
    (feats,) = session(bundle, "clip_dense").run(None, {"image": image})
    assert feats.shape == (1, 512, hd // 16, wd // 16)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("graph", ["proposal", "clip_image", "clip_text", "clip_dense"])
def test_full_size_graph_operators(exported, graph):
    from tests.test_export_ops import check_graph_ops

    check_graph_ops(exported / f"{graph}.onnx", graph)
