"""Faithful ZegFormer inference in PyTorch: the reference every other path is measured against.

``segment`` runs the official composition on one prepared image (already resized if wanted):
pad to 32 → proposals → segment logits → cropmask CLIP branch (full-resolution masked images
and ``roi_align``, as the official code) → ensemble → semantic scores → calibration.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Dict, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .model import ZegFormer
from .model import postprocess as P

MODES = ("cropmask", "proposal")


def image_tensor(image, device: torch.device) -> torch.Tensor:
    """``H×W×3`` uint8 RGB (numpy) or a ``3×H×W`` tensor → float ``[1,3,H,W]`` in 0..255."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an H×W×3 uint8 RGB image, got {image.dtype} {image.shape}")
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()[None].to(device)
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3 or not image.is_floating_point():
            raise ValueError(f"expected a 3×H×W float tensor (0..255), got {image.dtype} {tuple(image.shape)}")
        return image.float()[None].to(device)
    raise TypeError(f"image must be a numpy array or a torch tensor, not {type(image).__name__}")


@contextmanager
def _stage(timings: Optional[Dict[str, float]], name: str) -> Iterator[None]:
    """Adds the wall time of the block, in ms, to ``timings[name]`` (when timings are wanted)."""
    start = time.perf_counter()
    yield
    if timings is not None:
        timings[name] = timings.get(name, 0.0) + (time.perf_counter() - start) * 1e3


def official_unused_variants(
    clip_image: torch.Tensor, mask_logits_up: torch.Tensor, boxes: torch.Tensor, crop_size: int
) -> None:
    """The two CLIP inputs the official code computes on every call and never uses.

    (224×224 resized masked images, style "mask", and unmasked box crops, style "crop".) Only the
    official-style benchmark baseline runs this, so that it costs what the official code costs.
    """
    from torchvision.ops import roi_align

    small = F.interpolate(mask_logits_up, size=(crop_size, crop_size), mode="bilinear", align_corners=False)
    small_image = F.interpolate(clip_image, size=(crop_size, crop_size), mode="bilinear", align_corners=False)
    _ = small_image.unsqueeze(1) * (small.sigmoid() > 0.5).unsqueeze(2)
    b, q = mask_logits_up.shape[:2]
    repeated = clip_image.unsqueeze(1).repeat(1, q, 1, 1, 1).flatten(0, 1)
    roi_align(repeated, [box.reshape(1, -1).float() for box in boxes.reshape(b * q, 4)], crop_size, aligned=True)


@torch.no_grad()
def segment(
    model: ZegFormer,
    image,
    text_features: torch.Tensor,
    text_features_clip: Optional[torch.Tensor],
    seen: Sequence[bool],
    mode: str = "cropmask",
    out_size: Optional[Sequence[int]] = None,
    crop_batch: int = 100,
    timings: Optional[Dict[str, float]] = None,
    official_extras: bool = False,
    calibrate: Optional[float] = None,
) -> Dict[str, torch.Tensor]:
    """Segment one image; returns every intermediate the fixture records, and ``sem_seg`` ``[K,h,w]``.

    ``text_features`` classify segments (``single`` prompt at evaluation), ``text_features_clip``
    classify the CLIP crops (32 templates); ``seen`` flags the training classes. ``timings``, when
    given, receives per-stage milliseconds; ``official_extras`` also computes the official code's
    unused crop variants (for an honest official-style baseline). ``calibrate``: the seen-class
    calibration (default: the model's ``gzero_calibrate``).
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; the torch reference runs {MODES}")
    if text_features.ndim != 2 or text_features.shape[0] == 0:
        raise ValueError("text_features must be a non-empty [K, D] tensor (empty vocabulary?)")
    device = model.pixel_mean.device
    cfg = model.cfg
    x = image_tensor(image, device)
    h, w = x.shape[-2:]
    seen_t = torch.as_tensor(list(seen), dtype=torch.bool, device=device)
    if seen_t.numel() != text_features.shape[0]:
        raise ValueError(f"seen has {seen_t.numel()} flags for {text_features.shape[0]} classes")
    with _stage(timings, "preprocess"):
        padded = P.pad_to_multiple(model.normalize(x), cfg.size_divisibility)
    with _stage(timings, "proposal"):
        out = model.proposals(padded)
        pred_logits = model.classify(out["segment_embeddings"], text_features.to(device))
    result = {
        "pred_logits": pred_logits,
        "pred_masks": out["pred_masks"],
        "segment_embeddings": out["segment_embeddings"],
        "decoder_output": out["decoder_output"],
    }
    with _stage(timings, "crops"):
        up = P.upsample_masks(out["pred_masks"], padded.shape[-2:])
    if mode == "cropmask":
        if text_features_clip is None:
            raise ValueError("cropmask needs text_features_clip (the CLIP-template embeddings)")
        with _stage(timings, "crops"):
            clip_image = P.pad_to_multiple(model.clip_normalize(x), cfg.size_divisibility)
            crops, boxes = P.masked_crops(clip_image, up, cfg.crop_size)
            if official_extras:
                official_unused_variants(clip_image, up, boxes, cfg.crop_size)
        with _stage(timings, "clip"):
            flat = crops[0]
            feats = torch.cat([model.encode_crops(flat[i : i + crop_batch]) for i in range(0, len(flat), crop_batch)])
        with _stage(timings, "ensemble"):
            clip_logits = model.clip_logits(feats, text_features_clip.to(device))
            mask_cls = P.ensemble(pred_logits[0], clip_logits, seen_t, cfg.ensemble_lambda)
        result.update(crops=crops, boxes=boxes, clip_image_features=feats, clip_logits=clip_logits)
    else:
        mask_cls = F.softmax(pred_logits[0], dim=-1)[..., :-1]
    result["mask_cls"] = mask_cls
    with _stage(timings, "semantic"):
        result["sem_seg"] = P.semantic_scores(
            mask_cls,
            up[0],
            (h, w),
            tuple(out_size or (h, w)),
            seen_t,
            cfg.gzero_calibrate if calibrate is None else calibrate,
        )
    return result
