"""ZegFormer's training loss (MaskFormer's ``SetCriterion``) with deep supervision.

Per decoder layer (each matched on its own): cross-entropy over the seen classes + no-object
(weight ``no_object_weight`` on the no-object class), sigmoid focal loss and dice loss on the
matched masks (predictions bilinearly upsampled to the target size). Weighted by
``class_weight``/``mask_weight``/``dice_weight``.

Normalisers are computed for the whole *global* batch before the forward pass (see
:func:`normalizers`), so that data-parallel or accumulated micro-batches add up to exactly the
loss of one big batch: the mask losses are divided by the number of target masks, the
cross-entropy by the sum of its class weights (what ``F.cross_entropy(weight=...)`` does on one
device).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F

from .matcher import HungarianMatcher, Indices


@dataclass
class LossConfig:
    class_weight: float = 1.0
    mask_weight: float = 20.0
    dice_weight: float = 1.0
    no_object_weight: float = 0.1
    deep_supervision: bool = True
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Per-mask mean focal loss ``[M]`` of ``logits``/``targets`` ``[M,P]``."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean(1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-mask dice loss ``[M]`` (+1 smoothing)."""
    prob = logits.sigmoid()
    numerator = 2 * (prob * targets).sum(-1)
    denominator = prob.sum(-1) + targets.sum(-1)
    return 1 - (numerator + 1) / (denominator + 1)


def normalizers(
    targets: Sequence[Dict[str, torch.Tensor]], num_queries: int, no_object_weight: float
) -> Tuple[float, float]:
    """``(number of target masks, sum of cross-entropy weights)`` of a list of targets.

    Each image matches ``min(Q, N)`` queries (weight 1); the other queries are no-object.
    Sum these over the global batch, then divide by the number of loss calls that share it.
    """
    masks, weights = 0.0, 0.0
    for t in targets:
        m = min(num_queries, len(t["labels"]))
        masks += len(t["labels"])
        weights += m + (num_queries - m) * no_object_weight
    return masks, weights


class SetCriterion:
    """Callable: ``(outputs, targets, num_masks, ce_weight_sum) -> {name: weighted loss}``."""

    def __init__(self, num_classes: int, cfg: LossConfig, matcher: HungarianMatcher):
        self.num_classes = num_classes
        self.cfg = cfg
        self.matcher = matcher
        self.empty_weight = torch.ones(num_classes + 1)
        self.empty_weight[-1] = cfg.no_object_weight

    def layer_losses(
        self,
        logits: torch.Tensor,
        masks: torch.Tensor,
        targets,
        indices: Indices,
        num_masks: float,
        ce_weight_sum: float,
    ) -> Dict[str, torch.Tensor]:
        b, q = logits.shape[:2]
        target_classes = torch.full((b, q), self.num_classes, dtype=torch.int64, device=logits.device)
        for i, (src, tgt) in enumerate(indices):
            target_classes[i, src.to(logits.device)] = targets[i]["labels"][tgt].to(logits.device)
        w = self.empty_weight.to(logits.device)
        ce = F.cross_entropy(logits.float().transpose(1, 2), target_classes, w, reduction="sum") / ce_weight_sum
        src_masks = torch.cat([masks[i, src] for i, (src, _) in enumerate(indices)])
        tgt_masks = torch.cat([targets[i]["masks"][tgt] for i, (_, tgt) in enumerate(indices)])
        if src_masks.shape[0] == 0:
            zero = masks.sum() * 0.0
            return {"loss_ce": ce, "loss_mask": zero, "loss_dice": zero}
        src_masks = F.interpolate(
            src_masks[:, None].float(), size=tgt_masks.shape[-2:], mode="bilinear", align_corners=False
        )[:, 0].flatten(1)
        tgt_masks = tgt_masks.to(src_masks).flatten(1)
        return {
            "loss_ce": ce,
            "loss_mask": sigmoid_focal_loss(src_masks, tgt_masks, self.cfg.focal_alpha, self.cfg.focal_gamma).sum()
            / num_masks,
            "loss_dice": dice_loss(src_masks, tgt_masks).sum() / num_masks,
        }

    def __call__(
        self,
        outputs: Dict[str, torch.Tensor],
        targets: Sequence[Dict[str, torch.Tensor]],
        num_masks: float,
        ce_weight_sum: float,
    ) -> Dict[str, torch.Tensor]:
        """``outputs``: ``pred_logits [L,B,Q,K+1]``, ``pred_masks [L,B,Q,h,w]`` (last layer last).

        Returns weighted losses: ``loss_ce``/``loss_mask``/``loss_dice`` for the last layer,
        ``..._{i}`` for auxiliary layer ``i``, and ``loss`` (their sum).
        """
        logits, masks = outputs["pred_logits"], outputs["pred_masks"]
        n_layers = logits.shape[0]
        layers = range(n_layers) if self.cfg.deep_supervision else [n_layers - 1]
        weights = {
            "loss_ce": self.cfg.class_weight,
            "loss_mask": self.cfg.mask_weight,
            "loss_dice": self.cfg.dice_weight,
        }
        num_masks = max(float(num_masks), 1.0)
        out: Dict[str, torch.Tensor] = {}
        for layer in layers:
            indices = self.matcher(logits[layer], masks[layer], targets)
            suffix = "" if layer == n_layers - 1 else f"_{layer}"
            for k, v in self.layer_losses(
                logits[layer], masks[layer], targets, indices, num_masks, ce_weight_sum
            ).items():
                out[k + suffix] = v * weights[k]
        out["loss"] = sum(out.values())
        return out
