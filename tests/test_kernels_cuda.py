"""The CUDA kernels against the CPU kernels and the torch reference (skipped without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sdk import kernels
from tests.test_kernels import assert_labels_match, blob_logits, image, noise_logits, torch_crops, torch_semantic

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not (torch.cuda.is_available() and kernels.cuda_available()),
        reason="needs a CUDA device and a CUDA build of sdk._kernels",
    ),
]


def gpu(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).cuda()


def host(device_array) -> np.ndarray:
    """A DeviceArray back on the host, through __cuda_array_interface__ (as users will do)."""
    return torch.as_tensor(device_array, device="cuda").cpu().numpy()


@pytest.mark.parametrize("kind", ["blobs", "noise"])
@pytest.mark.parametrize("b,q,h,w,crop", [(1, 6, 16, 20, 24), (2, 5, 17, 19, 224), (1, 3, 40, 40, 1)])
def test_masked_crops_gpu_matches_cpu_and_torch(kind, b, q, h, w, crop):
    rng = np.random.default_rng(q * h)
    logits = (blob_logits if kind == "blobs" else noise_logits)(rng, b, q, h, w)
    img = image(rng, b, 3, 4 * h, 4 * w, valid=(4 * h - 6, 4 * w - 2))
    crops_d, boxes_d = kernels.masked_crops(gpu(img), gpu(logits), crop)
    crops_c, boxes_c = kernels.masked_crops(img, logits, crop)
    want_crops, want_boxes = torch_crops(img, logits, crop)
    np.testing.assert_array_equal(host(boxes_d), boxes_c)
    np.testing.assert_array_equal(host(boxes_d), want_boxes)
    np.testing.assert_allclose(host(crops_d), want_crops, atol=1e-4, rtol=0)
    np.testing.assert_allclose(host(crops_d), crops_c, atol=1e-4, rtol=0)


def test_masked_crops_gpu_edge_masks():
    t = np.float32(kernels.MASK_THRESHOLD)
    logits = np.full((1, 6, 40, 48), -5, np.float32)
    logits[0, 1] = 5  # full
    logits[0, 2, 11, 5:30] = 5  # one row: fallback box, non-empty crop
    logits[0, 3, 5:9, 6:20] = t  # exactly at the threshold: on
    logits[0, 4, 5:9, 6:20] = np.nextafter(t, np.float32(0))  # just below: off
    logits[0, 5, -3:, -4:] = 5  # corner
    img = image(np.random.default_rng(1), 1, 3, 40, 48)
    crops_d, boxes_d = kernels.masked_crops(gpu(img), gpu(logits), 20)
    want_crops, want_boxes = torch_crops(img, logits, 20)
    np.testing.assert_array_equal(host(boxes_d), want_boxes)
    np.testing.assert_allclose(host(crops_d), want_crops, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "q,image_size,out_size",
    [(9, (60, 80), (60, 80)), (9, (57, 75), (40, 50)), (9, (64, 80), (90, 110)), (300, (30, 40), (33, 47))],
)
def test_semantic_inference_gpu(q, image_size, out_size):
    rng = np.random.default_rng(q + out_size[0])
    logits = blob_logits(rng, 2, q, 16, 20, scale=4)
    probs = rng.random((2, q, 13)).astype(np.float32)
    seen = rng.random(13) < 0.6
    want = torch_semantic(logits, probs, image_size, out_size, seen=seen, calibrate=0.1)
    labels, scores = kernels.semantic_inference(
        gpu(logits), gpu(probs), image_size, out_size, seen, 0.1, return_scores=True
    )
    np.testing.assert_allclose(host(scores), want, rtol=1e-5, atol=2e-6)
    assert_labels_match(host(labels), want)
    only_labels = kernels.semantic_inference(gpu(logits), gpu(probs), image_size, out_size, seen, 0.1)
    np.testing.assert_array_equal(host(only_labels), host(labels))


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_mask_pool_gpu_matches_cpu(mode):
    rng = np.random.default_rng(3)
    feats = rng.standard_normal((2, 64, 20, 24)).astype(np.float32)
    logits = blob_logits(rng, 2, 7, 40, 48)
    logits[1, 2] = -30
    got = host(kernels.mask_pool(gpu(feats), gpu(logits), mode))
    np.testing.assert_allclose(got, kernels.mask_pool(feats, logits, mode), rtol=1e-4, atol=1e-5)
    assert not got[1, 2].any() or mode == "soft"


def test_user_stream_and_producer_stream():
    rng = np.random.default_rng(4)
    logits, img = blob_logits(rng, 1, 5, 16, 20), image(rng, 1, 3, 64, 80)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        img_d, logits_d = gpu(img) * 1.0, gpu(logits) * 1.0  # produced on `stream`
        crops_d, boxes_d = kernels.masked_crops(img_d, logits_d, 16, stream=stream)
    assert crops_d.__cuda_array_interface__["stream"] == stream.cuda_stream
    stream.synchronize()
    crops_c, boxes_c = kernels.masked_crops(img, logits, 16)
    np.testing.assert_allclose(crops_d.copy_to_host(), crops_c, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(boxes_d.copy_to_host(), boxes_c)


def test_device_array_interface():
    rng = np.random.default_rng(5)
    labels = kernels.semantic_inference(
        gpu(blob_logits(rng, 1, 3, 8, 8)), gpu(rng.random((1, 3, 4), np.float32)), (32, 32), (32, 32)
    )
    cai = labels.__cuda_array_interface__
    assert cai["shape"] == (1, 32, 32) and cai["typestr"] == "<i4" and cai["version"] == 3
    assert cai["data"][0] != 0 and cai["stream"] == 1
    assert labels.shape == (1, 32, 32) and labels.dtype == np.int32 and labels.nbytes == 32 * 32 * 4
    np.testing.assert_array_equal(labels.copy_to_host(), host(labels))


def test_gpu_argument_errors():
    logits = gpu(np.zeros((1, 4, 8, 10), np.float32))
    img = gpu(np.zeros((1, 3, 32, 40), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        kernels.masked_crops(img, logits.transpose(2, 3))
    with pytest.raises(TypeError, match="float32"):
        kernels.masked_crops(img.double(), logits)
    with pytest.raises(ValueError, match="all numpy arrays or all CUDA"):
        kernels.masked_crops(img.cpu().numpy(), logits)
    host_memory = np.zeros((1, 4, 8, 10), np.float32)

    class HostPointer:
        __cuda_array_interface__ = {
            "shape": (1, 4, 8, 10),
            "typestr": "<f4",
            "version": 3,
            "data": (host_memory.ctypes.data, False),
        }

    with pytest.raises(ValueError, match="not CUDA device memory"):
        kernels.masked_crops(img, HostPointer())

    class TooBig:
        __cuda_array_interface__ = {
            "shape": (1, 4, 800, 1000),
            "typestr": "<f4",
            "version": 3,
            "data": (logits.data_ptr(), False),
        }

    with pytest.raises(ValueError, match="exceeds its CUDA allocation"):
        kernels.masked_crops(img, TooBig())
