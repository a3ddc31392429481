"""Compiled post-processing kernels: the Python face of ``sdk._kernels`` (built from ``cpp_ext/``).

Arrays
    CPU: C-contiguous ``float32`` numpy arrays; results are numpy arrays.
    GPU: any object exposing ``__cuda_array_interface__`` (torch, cupy, pycuda), all on one
    device; results are :class:`DeviceArray` objects (also ``__cuda_array_interface__``; wrap
    them with ``torch.as_tensor(a, device="cuda")`` or ``cupy.asarray(a)``, or call
    ``a.copy_to_host()``). Work is queued on ``stream`` (a handle, or a torch/cupy stream) after
    the producer streams the inputs declare.

Validation happens in C++ before any memory is read: a wrong type is a ``TypeError``; a wrong
rank, shape, layout or size, an empty dimension, more than 2**31 - 1 elements in any array, or a
device mismatch is a ``ValueError``. On the CPU, NaN or infinite inputs are a ``ValueError``; on the
GPU they are not checked (that would need a synchronisation) and propagate as in torch.

The mask threshold is the official ``sigmoid(x) > 0.5`` in float32, i.e. ``x >= MASK_THRESHOLD``
(about 8.9e-8, not 0), with the upsampling rounded exactly as torch's CPU ``interpolate``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

try:
    from . import _kernels as _k  # type: ignore[attr-defined]  # compiled from cpp_ext/: no stub to read
except ImportError as err:  # pragma: no cover - only without a build
    raise ImportError(
        "sdk._kernels is not built: run `pip install -e .` (or `pip install .`) in the repository"
    ) from err

DeviceArray = _k.DeviceArray
MASK_THRESHOLD: float = _k.build_info()["mask_threshold"]


def _stream_handle(stream: Any) -> int:
    """A raw CUDA stream handle from None, an int, a torch stream or a cupy stream."""
    if stream is None:
        return 0
    for attr in ("cuda_stream", "ptr"):  # torch.cuda.Stream, cupy.cuda.Stream
        if hasattr(stream, attr):
            return int(getattr(stream, attr))
    return stream


def masked_crops(
    image, mask_logits, crop_size: int = 224, *, sampling_ratio: int = -1, num_threads: int = 0, stream: Any = None
) -> Tuple[Any, Any]:
    """ZegFormer's "cropmask": masked, ROI-aligned crops of the padded CLIP-normalised image.

    ``image`` ``[B,C,H,W]`` (padding already 0), ``mask_logits`` ``[B,Q,h,w]`` (any h, w;
    upsampled bilinearly to H×W). Per query, as the official code: binary mask
    ``sigmoid(up) > 0.5``; box (x0, y0, x1, y1) with the inclusive last row/column, or
    (0, 0, W, H) when its area is zero; ``roi_align(image * mask, box, crop_size,
    sampling_ratio, aligned=True)`` — computed without full-resolution masked images.

    Returns ``crops`` ``[B,Q,C,S,S]`` float32 and ``boxes`` ``[B,Q,4]`` **int32**.
    """
    return _k.masked_crops(image, mask_logits, crop_size, sampling_ratio, num_threads, _stream_handle(stream))


def mask_pool(features, mask_logits, mode: str = "soft", *, num_threads: int = 0, stream: Any = None):
    """Per query, the mask-weighted average of a dense feature map → ``[B,Q,C]`` float32.

    ``features`` ``[B,C,hf,wf]``, ``mask_logits`` ``[B,Q,hm,wm]`` resized bilinearly
    (align_corners=False) to hf×wf. ``mode="soft"`` weights by ``sigmoid``; ``"hard"`` by
    ``sigmoid > 0.5``. A mask with zero total weight gives a zero vector.
    """
    return _k.mask_pool(features, mask_logits, mode, num_threads, _stream_handle(stream))


def semantic_inference(
    mask_logits,
    class_probs,
    image_size: Sequence[int],
    out_size: Sequence[int],
    calibrate_mask=None,
    calibrate: float = 0.0,
    return_scores: bool = False,
    *,
    padded_size: Optional[Sequence[int]] = None,
    num_threads: int = 0,
    stream: Any = None,
):
    """Per-pixel labels from mask logits and per-query class scores, as the official inference.

    ``mask_logits`` ``[B,Q,h,w]``, ``class_probs`` ``[B,Q,K]``. Scores
    ``Σ_q class_probs[q,c] · sigmoid(up_q)`` at the padded size (``padded_size``, default
    ``(4h, 4w)``), cropped to ``image_size``, resized bilinearly to ``out_size``, minus
    ``calibrate`` on the classes where ``calibrate_mask`` (bool ``[K]``) is true; argmax over classes.

    Returns labels ``[B,oh,ow]`` int32, and with ``return_scores`` also scores ``[B,K,oh,ow]`` float32.
    Fused (nothing of size Q×H×W is allocated): equal to the torch composition up to float
    rounding order, so labels can differ only at near ties. On the CPU a labels-only call skips,
    per 32-pixel tile, the queries whose sigmoid stays below 1e-3 when their bounded contribution
    cannot change the argmax (pixels where it could get the full sum). ``calibrate`` is
    subtracted as given, also when negative (the reference composition ignores values <= 0).
    """
    return _k.semantic_inference(
        mask_logits,
        class_probs,
        image_size,
        out_size,
        padded_size,
        calibrate_mask,
        calibrate,
        return_scores,
        num_threads,
        _stream_handle(stream),
    )


def build_info() -> dict:
    """How the module was built: ``cuda`` (bool), ``cuda_archs``, ``nvcc``, ``cxx``, ``cpu_isa``, ..."""
    return _k.build_info()


def cuda_available() -> bool:
    """True when CUDA was compiled in and a device is usable now."""
    return bool(_k.build_info()["cuda"]) and _k.cuda_device_count() > 0
