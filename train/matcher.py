"""Hungarian matching of predicted segments to ground-truth class masks (MaskFormer's matcher).

Cost = ``cost_class · (−p[class]) + cost_mask · focal + cost_dice · dice``, computed per image at
the *prediction* resolution: as MaskFormer v1's matcher does, the target masks are downsampled
to the mask-logit size with nearest interpolation (the loss itself upsamples predictions).
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

Indices = List[Tuple[torch.Tensor, torch.Tensor]]


def pairwise_focal_cost(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Mean sigmoid focal loss of every prediction ``[Q,P]`` against every target ``[N,P]`` → ``[Q,N]``."""
    prob = logits.sigmoid()
    pos = (
        alpha
        * (1 - prob) ** gamma
        * F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    )
    neg = (
        (1 - alpha)
        * prob**gamma
        * F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    )
    return (pos @ targets.t() + neg @ (1 - targets).t()) / logits.shape[1]


def pairwise_dice_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss (+1 smoothing) of every prediction ``[Q,P]`` against every target ``[N,P]`` → ``[Q,N]``."""
    prob = logits.sigmoid()
    numerator = 2 * prob @ targets.t()
    denominator = prob.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


class HungarianMatcher:
    """One-to-one assignment of queries to targets per image (scipy ``linear_sum_assignment``)."""

    def __init__(
        self,
        cost_class: float = 1.0,
        cost_mask: float = 20.0,
        cost_dice: float = 1.0,
        alpha: float = 0.25,
        gamma: float = 2.0,
    ):
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("all matching costs are 0")
        self.cost_class, self.cost_mask, self.cost_dice = cost_class, cost_mask, cost_dice
        self.alpha, self.gamma = alpha, gamma

    def cost_matrix(
        self, logits: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor, target_masks: torch.Tensor
    ) -> torch.Tensor:
        """``[Q,N]`` cost of one image: ``logits [Q,K+1]``, ``masks [Q,h,w]``, ``target_masks [N,H,W]``."""
        prob = logits.float().softmax(-1)
        cost_class = -prob[:, labels]
        tgt = F.interpolate(target_masks[:, None].float(), size=masks.shape[-2:], mode="nearest")[:, 0]
        out = masks.float().flatten(1)
        tgt = tgt.flatten(1)
        return (
            self.cost_mask * pairwise_focal_cost(out, tgt, self.alpha, self.gamma)
            + self.cost_class * cost_class
            + self.cost_dice * pairwise_dice_cost(out, tgt)
        )

    @torch.no_grad()
    def __call__(
        self, pred_logits: torch.Tensor, pred_masks: torch.Tensor, targets: Sequence[Dict[str, torch.Tensor]]
    ) -> Indices:
        """``pred_logits [B,Q,K+1]``, ``pred_masks [B,Q,h,w]``, per image ``{labels [N], masks [N,H,W]}``
        → per image ``(query indices, target indices)``, sorted by query."""
        out: Indices = []
        for b, t in enumerate(targets):
            if len(t["labels"]) == 0:
                empty = torch.empty(0, dtype=torch.int64)
                out.append((empty, empty))
                continue
            c = self.cost_matrix(pred_logits[b], pred_masks[b], t["labels"], t["masks"])
            # non-finite predictions: match anyway; the loss is non-finite and the step is skipped
            c = torch.nan_to_num(c, nan=1e8, posinf=1e8, neginf=-1e8)
            rows, cols = linear_sum_assignment(c.cpu().numpy())
            out.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return out
