"""Generalized zero-shot segmentation metrics (pure numpy), computed as the official evaluator does.

The official numbers (``official_metrics``) reproduce ZegFormer's ``SemSegGzeroEvaluator``:
a ``(K+1)×(K+1)`` confusion matrix indexed ``[pred, gt]`` with ignore mapped to ``K``; per-class
IoU only for classes present in the ground truth; mIoU divided by the number of classes present
in the ground truth *or* the prediction; seen/unseen mIoU summed over *all* seen/unseen classes
and divided by their count (NaN as soon as one is absent from the ground truth); hIoU their
harmonic mean. ``nan_safe_metrics`` is a cleaner variant (means over the classes that occur),
reported beside it under its own name. All values are fractions in [0, 1].
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np


def confusion_matrix(
    pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_value: Optional[int] = None
) -> np.ndarray:
    """``(K+1)×(K+1)`` int64 counts ``[pred, gt]``; ground truth outside ``0..K-1`` (or equal to
    ``ignore_value``) is ignore and goes to column ``K``."""
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    gt = np.asarray(gt).reshape(-1).astype(np.int64)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction has {pred.size} pixels, ground truth {gt.size}")
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"predictions must lie in 0..{num_classes - 1}")
    k = num_classes
    ignore = (gt < 0) | (gt >= k)
    if ignore_value is not None:
        ignore |= gt == ignore_value
    gt = np.where(ignore, k, gt)
    return np.bincount((k + 1) * pred + gt, minlength=(k + 1) ** 2).reshape(k + 1, k + 1)


def _parts(conf: np.ndarray):
    conf = np.asarray(conf, dtype=np.float64)
    k = conf.shape[0] - 1
    tp = conf.diagonal()[:k].copy()
    pos_gt = conf[:k, :k].sum(axis=0)
    pos_pred = conf[:k, :k].sum(axis=1)
    return k, tp, pos_gt, pos_pred


def _hmean(a: float, b: float) -> float:
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(2 * a * b / (a + b)) if (a + b) != 0 else float("nan")


def per_class(conf: np.ndarray) -> Dict[str, np.ndarray]:
    """Per-class IoU and accuracy (NaN where the class is absent from the ground truth)."""
    k, tp, pos_gt, pos_pred = _parts(conf)
    valid = pos_gt > 0
    iou = np.full(k, np.nan)
    acc = np.full(k, np.nan)
    iou[valid] = tp[valid] / (pos_gt + pos_pred - tp)[valid]
    acc[valid] = tp[valid] / pos_gt[valid]
    return {"iou": iou, "acc": acc, "pos_gt": pos_gt, "pos_pred": pos_pred}


def official_metrics(conf: np.ndarray, seen: Sequence[bool]) -> Dict[str, float]:
    """The official evaluator's numbers (quirks included; see the module docstring)."""
    k, tp, pos_gt, pos_pred = _parts(conf)
    seen = np.asarray(seen, dtype=bool)
    if seen.size != k:
        raise ValueError(f"seen has {seen.size} flags for {k} classes")
    pc = per_class(conf)
    valid = pos_gt > 0
    n_valid, n_union = valid.sum(), ((pos_gt + pos_pred) > 0).sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        miou = pc["iou"][valid].sum() / n_union if n_union else float("nan")
        macc = pc["acc"][valid].sum() / n_valid if n_valid else float("nan")
        fwiou = (pc["iou"][valid] * pos_gt[valid] / pos_gt.sum()).sum() if n_valid else float("nan")
        pacc = tp.sum() / pos_gt.sum() if pos_gt.sum() else float("nan")
        seen_miou = pc["iou"][seen].sum() / seen.sum() if seen.any() else float("nan")
        unseen_miou = pc["iou"][~seen].sum() / (~seen).sum() if (~seen).any() else float("nan")
    return {
        "mIoU": float(miou),
        "seen_mIoU": float(seen_miou),
        "unseen_mIoU": float(unseen_miou),
        "hIoU": _hmean(seen_miou, unseen_miou),
        "fwIoU": float(fwiou),
        "mACC": float(macc),
        "pACC": float(pacc),
    }


def nan_safe_metrics(conf: np.ndarray, seen: Sequence[bool]) -> Dict[str, float]:
    """A NaN-safe variant: every mean is over the classes present in the ground truth or the
    prediction (a predicted-but-absent class counts as IoU 0); absent classes are skipped."""
    k, tp, pos_gt, pos_pred = _parts(conf)
    seen = np.asarray(seen, dtype=bool)
    union = pos_gt + pos_pred - tp
    occurs = (pos_gt + pos_pred) > 0
    iou = np.where(occurs, tp / np.where(occurs, union, 1), np.nan)

    def mean(mask):
        m = mask & occurs
        return float(iou[m].mean()) if m.any() else float("nan")

    s, u = mean(seen), mean(~seen)
    return {"mIoU": mean(np.ones(k, bool)), "seen_mIoU": s, "unseen_mIoU": u, "hIoU": _hmean(s, u)}


TAKEOVER_SHARE = 0.3  # a class that loses this much of its pixels to one other is reported


def takeovers(
    conf: np.ndarray, class_names: Sequence[str], share: float = TAKEOVER_SHARE, top: int = 8
) -> List[Dict[str, object]]:
    """Where a class's pixels went to one other class: ``{"truth", "predicted", "share"}`` for each pair
    with at least ``share`` of the truth's pixels, largest first (at most ``top``). One predicted class
    in several pairs is a catch-all, the usual reason a zero-shot run scores far below its seeds' band."""
    k = len(class_names)
    c = np.asarray(conf, np.float64)[:k, :k]  # [pred, gt]; row/column K (ignore) dropped
    frac = c / np.maximum(c.sum(axis=0, keepdims=True), 1.0)
    np.fill_diagonal(frac, 0.0)
    pred, gt = np.nonzero(frac >= share)
    order = np.argsort(-frac[pred, gt], kind="stable")[:top]
    return [
        {"truth": class_names[gt[i]], "predicted": class_names[pred[i]], "share": float(frac[pred[i], gt[i]])}
        for i in order
    ]


def all_metrics(conf: np.ndarray, seen: Sequence[bool], class_names: Sequence[str]) -> Dict[str, object]:
    """Official and NaN-safe summaries plus per-class IoU/accuracy, JSON-ready (NaN → None)."""
    pc = per_class(conf)

    def clean(x):
        return None if x is None or (isinstance(x, float) and np.isnan(x)) else float(x)

    return {
        "official": {k: clean(v) for k, v in official_metrics(conf, seen).items()},
        "nan_safe": {k: clean(v) for k, v in nan_safe_metrics(conf, seen).items()},
        "per_class": [
            {
                "name": n,
                "seen": bool(s),
                "iou": clean(float(i)),
                "acc": clean(float(a)),
                "gt_pixels": int(g),
                "pred_pixels": int(p),
            }
            for n, s, i, a, g, p in zip(class_names, seen, pc["iou"], pc["acc"], pc["pos_gt"], pc["pos_pred"])
        ],
    }
