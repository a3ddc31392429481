"""The official ZegFormer inference after the heads, as a torch composition.

This is the *faithful* reference: every step is written the way the official
``MaskFormer.forward`` (ZegFormer) computes it, quirks included. The compiled kernels
(``cpp_ext``) are tested against these functions; the benchmarks use them as the official-style
baseline (full-resolution masked images per query + torchvision ``roi_align``). ``ensemble`` and
``pad_to_multiple`` are the torch twins of ``sdk.scores.ensemble`` and
``sdk.preprocess.pad_to_multiple`` (tested against them).
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

from sdk.constants import ENSEMBLE_LAMBDA
from sdk.preprocess import padded_size


def pad_to_multiple(images: torch.Tensor, divisor: int) -> torch.Tensor:
    """Pad ``[B,C,H,W]`` bottom/right with zeros to a multiple of ``divisor`` (size rule: ``sdk.preprocess``)."""
    h, w = images.shape[-2:]
    ph, pw = padded_size(int(h), int(w), divisor)
    if (ph, pw) == (h, w):
        return images
    return F.pad(images, (0, pw - w, 0, ph - h), value=0.0)


def upsample_masks(mask_logits: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Mask logits ``[B,Q,h,w]`` → ``[B,Q,H,W]`` (bilinear, align_corners=False)."""
    return F.interpolate(mask_logits, size=tuple(size), mode="bilinear", align_corners=False)


def binarize(mask_logits_up: torch.Tensor) -> torch.Tensor:
    # Official threshold: sigmoid(x) > 0.5 in float32 (differs from x > 0 only for x < ~1e-7).
    return mask_logits_up.sigmoid() > 0.5


def mask_boxes(binary: torch.Tensor) -> torch.Tensor:
    """Boxes ``[N,4]`` (x0, y0, x1, y1) of binary masks ``[N,H,W]``, exactly as the official code.

    Quirks kept: the maximum is *inclusive* (index of the last column/row with mask pixels,
    via argmax of a cumulative sum); when the box has zero area (empty mask, or a single
    row/column) the box becomes the *exclusive* full extent ``(0, 0, W, H)``.
    """
    n, h, w = binary.shape
    cum_x = torch.cumsum(binary.sum(dim=1), dim=1).float()
    x1 = torch.argmax(cum_x, dim=1, keepdim=True)
    cum_x[cum_x == 0] = float("inf")
    x0 = torch.argmin(cum_x, dim=1, keepdim=True)
    cum_y = torch.cumsum(binary.sum(dim=2), dim=1).float()
    y1 = torch.argmax(cum_y, dim=1, keepdim=True)
    cum_y[cum_y == 0] = float("inf")
    y0 = torch.argmin(cum_y, dim=1, keepdim=True)
    empty = (y1 - y0) * (x1 - x0) == 0
    y1[empty] = h
    y0[empty] = 0
    x1[empty] = w
    x0[empty] = 0
    return torch.cat((x0, y0, x1, y1), 1)


def masked_crops(
    clip_image: torch.Tensor, mask_logits_up: torch.Tensor, crop_size: int = 224
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The official "cropmask": masked, CLIP-normalised crops ``[B,Q,3,S,S]`` and boxes ``[B,Q,4]``.

    ``clip_image`` is the CLIP-normalised *padded* image ``[B,3,H,W]`` (padding = 0 = mean colour),
    ``mask_logits_up`` the mask logits upsampled to the same padded size ``[B,Q,H,W]``.
    Materialises the ``B·Q`` full-resolution masked images, as the official code does.
    """
    from torchvision.ops import roi_align

    b, q, h, w = mask_logits_up.shape
    c = clip_image.shape[1]
    binary = binarize(mask_logits_up)
    masked = (clip_image.unsqueeze(1) * binary.unsqueeze(2)).reshape(b * q, c, h, w)
    boxes = mask_boxes(binary.reshape(b * q, h, w))
    box_list = [boxes[i].reshape(1, -1).float() for i in range(boxes.shape[0])]
    crops = roi_align(masked, box_list, crop_size, aligned=True)
    return crops.reshape(b, q, c, crop_size, crop_size), boxes.reshape(b, q, 4)


def ensemble(
    pred_logits: torch.Tensor, clip_logits: torch.Tensor, seen: torch.Tensor, lam: float = ENSEMBLE_LAMBDA
) -> torch.Tensor:
    """Fuse segment-classifier and CLIP scores per query, as the official ensembling does.

    ``pred_logits`` ``[Q,K+1]`` (last column = background), ``clip_logits`` ``[Q,K]``,
    ``seen`` a bool ``[K]``. Returns the class scores ``[Q,K]`` (no background).
    """
    # CLIP has no background: the segment classifier's background logit is its 172nd column.
    clip = torch.cat((clip_logits, pred_logits[:, -1:]), 1)
    clip_probs = F.softmax(clip, dim=-1)[..., :-1]
    probs = F.softmax(pred_logits, dim=-1)[..., :-1]
    seen_idx = torch.nonzero(seen, as_tuple=False).flatten()
    unseen_idx = torch.nonzero(~seen, as_tuple=False).flatten()
    if seen_idx.numel():
        # For seen classes CLIP contributes only its mean seen-class probability per query.
        clip_probs[:, seen_idx] = clip_probs[:, seen_idx].mean(dim=1, keepdim=True)
        probs[:, seen_idx] = torch.pow(probs[:, seen_idx], lam) * torch.pow(clip_probs[:, seen_idx], 1 - lam)
    if unseen_idx.numel():
        probs[:, unseen_idx] = torch.pow(probs[:, unseen_idx], 1 - lam) * torch.pow(clip_probs[:, unseen_idx], lam)
    return probs


def semantic_scores(
    mask_cls: torch.Tensor,
    mask_logits_up: torch.Tensor,
    image_size: Sequence[int],
    out_size: Sequence[int],
    seen: torch.Tensor | None,
    calibrate: float,
) -> torch.Tensor:
    """Per-pixel class scores ``[K,oh,ow]``: Σ_q mask_cls·sigmoid(mask), crop, resize, calibrate.

    No softmax or normalisation over queries (values may exceed 1). Calibration subtracts
    ``calibrate`` from the seen channels *after* the resize, as the official code does.
    """
    r = torch.einsum("qc,qhw->chw", mask_cls, mask_logits_up.sigmoid())
    r = r[:, : image_size[0], : image_size[1]].unsqueeze(0)
    r = F.interpolate(r, size=tuple(out_size), mode="bilinear", align_corners=False)[0]
    if calibrate > 0 and seen is not None and bool(seen.any()):
        idx = torch.nonzero(seen, as_tuple=False).flatten()
        r[idx] = r[idx] - calibrate
    return r
