"""The compiled CPU kernels against the official torch composition (train/model/postprocess.py)
and against the official outputs recorded in the shared reference fixture."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sdk import kernels
from train.model import postprocess as ref

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
CLIP_MEAN = np.array((122.7709383, 116.7460125, 104.09373615), np.float32)
CLIP_STD = np.array((68.5005327, 66.6321579, 70.3231630), np.float32)


# ---------- inputs ----------


def blob_logits(rng, b, q, h, w, scale=8.0):
    """One random elliptic blob per mask (positive inside), like the fixture's designed masks."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((b, q, h, w), np.float32)
    for i in range(b):
        for j in range(q):
            cy, cx = rng.uniform(-2, h + 2), rng.uniform(-2, w + 2)
            ry, rx = rng.uniform(1, h / 2), rng.uniform(1, w / 2)
            out[i, j] = (1 - ((yy - cy) / ry) ** 2 - ((xx - cx) / rx) ** 2) * scale
    return out


def noise_logits(rng, b, q, h, w):
    return (rng.standard_normal((b, q, h, w)) * 4).astype(np.float32)


def image(rng, b, c, h, w, valid=None):
    """A CLIP-normalised-like image, zero below/right of `valid` (the padding)."""
    img = rng.standard_normal((b, c, h, w)).astype(np.float32)
    if valid is not None:
        img[:, :, valid[0] :] = 0
        img[:, :, :, valid[1] :] = 0
    return img


# ---------- references ----------


def torch_crops(img, logits, crop_size, sampling_ratio=-1):
    up = ref.upsample_masks(torch.from_numpy(logits), img.shape[-2:])
    if sampling_ratio == -1:
        crops, boxes = ref.masked_crops(torch.from_numpy(img), up, crop_size)
        return crops.numpy(), boxes.numpy()
    from torchvision.ops import roi_align  # the same composition, other sampling ratio

    b, q, h, w = up.shape
    binary = ref.binarize(up)
    masked = (torch.from_numpy(img).unsqueeze(1) * binary.unsqueeze(2)).reshape(b * q, -1, h, w)
    boxes = ref.mask_boxes(binary.reshape(b * q, h, w))
    crops = roi_align(masked, [bx.reshape(1, -1).float() for bx in boxes], crop_size, 1.0, sampling_ratio, True)
    return crops.reshape(b, q, -1, crop_size, crop_size).numpy(), boxes.reshape(b, q, 4).numpy()


def torch_semantic(logits, probs, image_size, out_size, padded=None, seen=None, calibrate=0.0):
    padded = padded or (4 * logits.shape[2], 4 * logits.shape[3])
    up = ref.upsample_masks(torch.from_numpy(logits), padded)
    seen_t = None if seen is None else torch.from_numpy(seen)
    return np.stack(
        [
            ref.semantic_scores(torch.from_numpy(probs[b]), up[b], image_size, out_size, seen_t, calibrate).numpy()
            for b in range(logits.shape[0])
        ]
    )


def assert_crops_match(img, logits, crop_size=32, sampling_ratio=-1, atol=1e-4):
    crops, boxes = kernels.masked_crops(img, logits, crop_size, sampling_ratio=sampling_ratio)
    want_crops, want_boxes = torch_crops(img, logits, crop_size, sampling_ratio)
    assert boxes.dtype == np.int32 and boxes.shape == want_boxes.shape
    np.testing.assert_array_equal(boxes, want_boxes)
    assert crops.dtype == np.float32 and crops.shape == want_crops.shape
    np.testing.assert_allclose(crops, want_crops, rtol=0, atol=atol)
    return crops, boxes


def assert_labels_match(labels, scores_ref, margin=1e-5):
    """Labels equal the reference argmax wherever its top-2 margin exceeds `margin`."""
    top2 = np.sort(scores_ref, axis=1)[:, -2:]
    decided = (top2[:, 1] - top2[:, 0]) > margin
    np.testing.assert_array_equal(labels[decided], scores_ref.argmax(1)[decided])
    assert decided.mean() > 0.9


# ---------- build ----------


def test_build_info_reports_cuda_when_nvcc_present():
    info = kernels.build_info()
    assert isinstance(info["cuda"], bool) and isinstance(info["cuda_archs"], list)
    if shutil.which("nvcc") and os.environ.get("ZEGFORMER_NO_CUDA", "") in ("", "0"):
        assert info["cuda"], "nvcc is on PATH but the module was built without CUDA"
        assert "sm_80" in info["cuda_archs"] and "sm_90" in info["cuda_archs"]
    if not info["cuda"]:
        assert not kernels.cuda_available()


def test_import_needs_no_gpu():
    assert isinstance(kernels.cuda_available(), bool)  # no CUDA call at import; this one must not raise


def test_threshold_is_float32_sigmoid_half():
    t = np.float32(kernels.MASK_THRESHOLD)
    below = np.nextafter(t, np.float32(0))
    sig = torch.tensor([below, t]).sigmoid()
    assert sig[0].item() == 0.5 and sig[1].item() > 0.5
    assert 0 < t < 1e-7


# ---------- masked_crops ----------


@pytest.mark.parametrize("kind", ["blobs", "noise"])
@pytest.mark.parametrize("b,q,h,w,scale", [(1, 6, 16, 20, 4), (2, 5, 13, 17, 4), (1, 1, 9, 31, 4), (2, 3, 12, 12, 3)])
def test_masked_crops_random(kind, b, q, h, w, scale):
    rng = np.random.default_rng(h * w + q)
    logits = (blob_logits if kind == "blobs" else noise_logits)(rng, b, q, h, w)
    img = image(rng, b, 3, h * scale, w * scale, valid=(h * scale - 5, w * scale - 3))
    assert_crops_match(img, logits, crop_size=24)


def test_masked_crops_non_integer_scale_and_channels():
    rng = np.random.default_rng(3)
    logits = blob_logits(rng, 2, 4, 11, 14)
    assert_crops_match(image(rng, 2, 5, 70, 61), logits, crop_size=17)


@pytest.mark.parametrize("crop_size,sampling_ratio", [(1, -1), (7, -1), (224, -1), (30, 2), (30, 1)])
def test_masked_crops_sizes_and_sampling(crop_size, sampling_ratio):
    rng = np.random.default_rng(crop_size)
    logits = blob_logits(rng, 1, 4, 16, 20)
    assert_crops_match(image(rng, 1, 3, 64, 80), logits, crop_size, sampling_ratio)


def test_masked_crops_empty_and_full_masks():
    rng = np.random.default_rng(5)
    logits = np.stack([np.full((16, 20), -3, np.float32), np.full((16, 20), 3, np.float32)])[None]
    img = image(rng, 1, 3, 64, 80)
    crops, boxes = assert_crops_match(img, logits)
    np.testing.assert_array_equal(boxes[0], [[0, 0, 80, 64], [0, 0, 79, 63]])
    assert not crops[0, 0].any()


def test_masked_crops_border_and_padding_masks():
    rng = np.random.default_rng(6)
    logits = np.full((1, 4, 16, 20), -5, np.float32)
    logits[0, 0, :3, :4] = 5  # top-left corner
    logits[0, 1, -3:, -4:] = 5  # bottom-right corner, in the padding
    logits[0, 2, :, -1] = 5  # right border column
    logits[0, 3, -1, :] = 5  # bottom border row
    assert_crops_match(image(rng, 1, 3, 64, 80, valid=(57, 70)), logits)


def test_masked_crops_thin_masks_fall_back_to_full_box():
    # Scale 1 (h == H): a logit row/column maps to exactly one mask row/column.
    rng = np.random.default_rng(7)
    logits = np.full((1, 4, 40, 48), -5, np.float32)
    logits[0, 0, 11, 5:30] = 5  # one row
    logits[0, 1, 3:20, 17] = 5  # one column
    logits[0, 2, 22, 9] = 5  # one pixel
    logits[0, 3, 30:32, 40:42] = 5
    crops, boxes = assert_crops_match(image(rng, 1, 3, 40, 48), logits, crop_size=20)
    np.testing.assert_array_equal(boxes[0, :3], [[0, 0, 48, 40]] * 3)
    assert crops[0, :3].any()  # fallback box, but the masked pixels are still there


def test_masked_crops_pixel_exactly_at_threshold():
    t = np.float32(kernels.MASK_THRESHOLD)
    below = np.nextafter(t, np.float32(0))
    logits = np.full((1, 3, 40, 48), -1, np.float32)
    logits[0, 0, 5:9, 6:20] = t  # on: sigmoid(t) > 0.5 in float32
    logits[0, 1, 5:9, 6:20] = below  # off: sigmoid rounds to exactly 0.5
    logits[0, 2, 5:9, 6:20] = 0.0
    logits[0, 2, 7, 10] = t
    logits[0, 2, 30, 40] = t
    rng = np.random.default_rng(8)
    _, boxes = assert_crops_match(image(rng, 1, 3, 40, 48), logits)
    np.testing.assert_array_equal(boxes[0], [[6, 5, 19, 8], [0, 0, 48, 40], [10, 7, 40, 30]])


def test_masked_crops_threshold_through_upsampling():
    """Values within a few ulp of the threshold after the stride-4 upsample."""
    t = np.float32(kernels.MASK_THRESHOLD)
    rng = np.random.default_rng(9)
    logits = (t * rng.integers(-3, 4, (1, 4, 16, 20))).astype(np.float32)
    logits[0, 3] = rng.choice([t, np.nextafter(t, np.float32(1)), np.nextafter(t, np.float32(0))], (16, 20))
    assert_crops_match(image(rng, 1, 3, 64, 80), logits)


def test_masked_crops_threads_agree():
    rng = np.random.default_rng(10)
    logits, img = blob_logits(rng, 2, 7, 16, 20), image(rng, 2, 3, 64, 80)
    one = kernels.masked_crops(img, logits, 40, num_threads=1)
    two = kernels.masked_crops(img, logits, 40, num_threads=3)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


# ---------- semantic_inference ----------


@pytest.mark.parametrize(
    "image_size,out_size",
    [((60, 80), (60, 80)), ((57, 75), (40, 50)), ((64, 80), (90, 110)), ((50, 70), (50, 140)), ((64, 80), (1, 1))],
)
def test_semantic_inference_random(image_size, out_size):
    rng = np.random.default_rng(sum(out_size))
    logits = blob_logits(rng, 2, 9, 16, 20, scale=4)
    probs = rng.random((2, 9, 13)).astype(np.float32)
    seen = rng.random(13) < 0.6
    want = torch_semantic(logits, probs, image_size, out_size, seen=seen, calibrate=0.1)
    labels, scores = kernels.semantic_inference(logits, probs, image_size, out_size, seen, 0.1, return_scores=True)
    assert labels.dtype == np.int32 and labels.shape == (2,) + tuple(out_size)
    assert scores.dtype == np.float32 and scores.shape == want.shape
    np.testing.assert_allclose(scores, want, rtol=1e-5, atol=2e-6)
    assert_labels_match(labels, want)
    np.testing.assert_array_equal(kernels.semantic_inference(logits, probs, image_size, out_size, seen, 0.1), labels)


@pytest.mark.parametrize("negative", [False, True])
def test_semantic_labels_only_bounds_skipped_queries(negative):
    """Labels-only calls skip queries far from a tile and bound their contribution."""
    rng = np.random.default_rng(13)
    logits = blob_logits(rng, 2, 40, 24, 30, scale=30)  # sharp masks: few queries active per tile
    probs = rng.dirichlet(np.full(17, 0.3), size=(2, 40)).astype(np.float32)
    if negative:  # bounds need probabilities >= 0: the dense product must take over
        probs[0, 3, 5] = -0.5
    seen = np.arange(17) < 11
    want = torch_semantic(logits, probs, (90, 120), (90, 120), seen=seen, calibrate=0.1)
    labels = kernels.semantic_inference(logits, probs, (90, 120), (90, 120), seen, 0.1)
    assert_labels_match(labels, want, margin=1e-6)
    dense, _ = kernels.semantic_inference(logits, probs, (90, 120), (90, 120), seen, 0.1, return_scores=True)
    assert (labels != dense).mean() < 1e-3


def test_semantic_inference_large_upscale():
    """Many queries and a large upscale: scores are computed at image size, then resized."""
    rng = np.random.default_rng(11)
    logits = blob_logits(rng, 1, 80, 8, 10, scale=4)
    probs = rng.random((1, 80, 7)).astype(np.float32)
    seen = np.arange(7) < 4
    want = torch_semantic(logits, probs, (30, 37), (97, 131), seen=seen, calibrate=0.1)
    labels, scores = kernels.semantic_inference(logits, probs, (30, 37), (97, 131), seen, 0.1, return_scores=True)
    np.testing.assert_allclose(scores, want, rtol=1e-5, atol=2e-6)
    assert_labels_match(labels, want)


def test_semantic_inference_padded_size_q1_and_no_calibration():
    rng = np.random.default_rng(12)
    logits = noise_logits(rng, 1, 1, 10, 13)
    probs = rng.random((1, 1, 5)).astype(np.float32)
    want = torch_semantic(logits, probs, (33, 41), (33, 41), padded=(35, 47))
    labels, scores = kernels.semantic_inference(
        logits, probs, (33, 41), (33, 41), padded_size=(35, 47), return_scores=True
    )
    np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(labels, want.argmax(1))  # one query: class order is fixed, no near ties


def test_semantic_inference_ties_pick_first_class():
    logits = np.zeros((1, 2, 4, 4), np.float32)
    probs = np.full((1, 2, 6), 0.25, np.float32)
    labels = kernels.semantic_inference(logits, probs, (16, 16), (16, 16))
    assert not labels.any()


# ---------- mask_pool ----------


@pytest.mark.parametrize("mode", ["soft", "hard"])
@pytest.mark.parametrize("shape", [(1, 16, 10, 12, 5, 40, 48), (2, 9, 13, 7, 3, 5, 6), (1, 3, 20, 20, 1, 20, 20)])
def test_mask_pool(mode, shape):
    b, c, hf, wf, q, hm, wm = shape
    rng = np.random.default_rng(hf * wf)
    feats = rng.standard_normal((b, c, hf, wf)).astype(np.float32)
    logits = blob_logits(rng, b, q, hm, wm)
    logits[0, 0] = -30  # empty in hard mode
    up = F.interpolate(torch.from_numpy(logits), size=(hf, wf), mode="bilinear", align_corners=False)
    weights = up.sigmoid() if mode == "soft" else ref.binarize(up).float()
    want = torch.einsum("bqhw,bchw->bqc", weights, torch.from_numpy(feats)) / weights.sum((2, 3))[..., None]
    want = torch.nan_to_num(want, nan=0.0).numpy()
    got = kernels.mask_pool(feats, logits, mode)
    assert got.shape == (b, q, c) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    if mode == "hard":
        assert not got[0, 0].any()


# ---------- the official fixture ----------


@pytest.fixture(scope="module")
def fixture():
    if not (REFERENCE / "reference_designed_masks.npz").exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"reference fixture missing: {REFERENCE}")
        pytest.skip(f"reference fixture missing: {REFERENCE}")
    designed = dict(np.load(REFERENCE / "reference_designed_masks.npz"))
    main = np.load(REFERENCE / "reference_r101_vit16_cocostuff.npz")
    img = (main["image"].astype(np.float32) - CLIP_MEAN) / CLIP_STD
    padded = np.zeros((1, 3, 256, 320), np.float32)
    padded[0, :, :240] = img.transpose(2, 0, 1)
    designed["clip_image"] = padded
    return designed


def test_fixture_boxes_and_crops(fixture):
    crops, boxes = kernels.masked_crops(fixture["clip_image"], fixture["designed_pred_masks"], 224)
    np.testing.assert_array_equal(boxes[0], fixture["clip_boxes"].astype(np.int32))
    np.testing.assert_allclose(crops[0, :4], fixture["clip_input_crops_q0_3_f16"].astype(np.float32), atol=1e-3)
    np.testing.assert_allclose(crops[0, 4:8], fixture["clip_input_crops_q4_7_f16"].astype(np.float32), atol=1e-3)
    want, _ = torch_crops(fixture["clip_image"], fixture["designed_pred_masks"], 224)
    np.testing.assert_allclose(crops, want, atol=1e-4, rtol=0)


def test_fixture_semantic_map(fixture):
    seen = np.arange(171) < 156
    labels, scores = kernels.semantic_inference(
        fixture["designed_pred_masks"],
        fixture["mask_cls_ensembled"][None],
        (240, 320),
        (240, 320),
        seen,
        0.1,
        return_scores=True,
    )
    np.testing.assert_array_equal(labels[0], fixture["sem_seg_argmax"])
    y, x = fixture["sem_seg_f32_window_origin"]
    np.testing.assert_allclose(
        scores[0, :, y : y + 16, x : x + 16], fixture["sem_seg_f32_window"], atol=1e-5, rtol=1e-5
    )
