"""Per-query class scores: segment logits, CLIP probabilities, the official ensemble, the pruning bound.

Written once for any array module ``xp`` with numpy's API (numpy on the CPU, CuPy on a GPU), so
the arrays stay where they are. ``seen`` flags are host numpy bool arrays (vocabulary metadata).
The torch twins inside the model (``train/model/postprocess.py``) are tested against these.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .constants import ENSEMBLE_LAMBDA

Array = Any  # an array of the module ``xp``


def softmax(x: Array, xp=np) -> Array:
    e = xp.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(x: Array, xp=np) -> Array:
    return (1.0 / (1.0 + xp.exp(-x))).astype(np.float32, copy=False)


def segment_logits(emb: Array, text: Array, background: Array, scale: float, xp=np) -> Array:
    """``[Q,K+1]``: ``(scale·emb)·textᵀ`` then ``(scale·emb)·backgroundᵀ`` (background not normalised)."""
    scaled = np.float32(scale) * emb
    return xp.concatenate([scaled @ text.T, scaled @ background.T], axis=1)


def clip_logits(features: Array, text_clip: Array, scale: float) -> Array:
    """``[N,K]``: CLIP image embeddings against the CLIP-branch text embeddings, times CLIP's logit scale."""
    return (np.float32(scale) * features) @ text_clip.T


def clip_probs(clip_logits: Array, pred_logits: Array, xp=np) -> Array:
    """CLIP probabilities with the segment classifier's background logit as an extra column, dropped."""
    return softmax(xp.concatenate([clip_logits, pred_logits[:, -1:]], axis=1), xp)[:, :-1]


def ensemble(pred_logits: Array, clip_p: Array, seen: np.ndarray, lam: float = ENSEMBLE_LAMBDA, xp=np) -> Array:
    """The official geometric ensemble of segment-classifier and CLIP probabilities → ``[Q,K]``.

    Seen classes: ``p^λ · mean_seen(clip)^(1-λ)`` (CLIP contributes its mean seen-class
    probability); unseen classes: ``p^(1-λ) · clip^λ``; ``p = softmax(pred_logits)`` without the
    background column.
    """
    lam32, rest = np.float32(lam), np.float32(1.0 - lam)
    clip_p = clip_p.copy()
    probs = softmax(pred_logits, xp)[:, :-1]
    seen_idx, unseen_idx = (xp.asarray(np.flatnonzero(s)) for s in (seen, ~seen))
    if seen_idx.size:
        clip_p[:, seen_idx] = clip_p[:, seen_idx].mean(axis=1, keepdims=True)
        probs[:, seen_idx] = xp.power(probs[:, seen_idx], lam32) * xp.power(clip_p[:, seen_idx], rest)
    if unseen_idx.size:
        probs[:, unseen_idx] = xp.power(probs[:, unseen_idx], rest) * xp.power(clip_p[:, unseen_idx], lam32)
    return probs


def prune(
    pred_logits: Array,
    mask_sigmoid: Array,
    seen: np.ndarray,
    lam: float,
    threshold: float,
    clip_scale: float = 100.0,
    xp=np,
) -> Array:
    """Queries worth sending to CLIP (bool ``[Q]``) — the ``pruned`` mode's rule.

    A query's CLIP result only changes its own row of class scores, and whatever CLIP says that row
    is bounded. A CLIP probability is at most ``c = σ(S − b)``, where ``S`` is the CLIP logit scale,
    the largest possible logit, and ``b`` is the query's background logit, the extra softmax column.
    So a seen class scores at most ``p^λ·min(c, 1/N_seen)^(1-λ)``, since CLIP enters through the
    mean seen probability. An unseen class scores at most ``p^(1-λ)·c^λ``. Here
    ``p = softmax(segment logits)``. The query therefore adds at most ``U_q·σ_q(x)`` to any class
    at pixel x.

    The query is kept when, at some pixel of the (unpadded) mask grid, that bound reaches
    ``threshold`` × the pixel's winning score under the neutral estimate, in which every query's
    CLIP probabilities are set to ``p``. Elsewhere it cannot move a score by more than that fraction.
    ``mask_sigmoid`` is ``[Q, N]``: the sigmoid of the mask logits, pixels flattened.
    """
    q = pred_logits.shape[0]
    if threshold <= 0:
        return xp.ones(q, dtype=bool)
    p = softmax(pred_logits, xp)[:, :-1]
    estimate = ensemble(pred_logits, p, seen, lam, xp)
    winning = (estimate.T @ mask_sigmoid).max(axis=0)
    cap = 1.0 / (1.0 + xp.exp(xp.minimum(pred_logits[:, -1].astype(np.float64) - clip_scale, 700.0)))
    bound = xp.zeros(q)
    seen_idx, unseen_idx = (xp.asarray(np.flatnonzero(s)) for s in (seen, ~seen))
    if seen_idx.size:
        mean_cap = xp.minimum(cap, 1.0 / seen_idx.size)
        bound = xp.maximum(bound, (p[:, seen_idx] ** lam).max(axis=1) * mean_cap ** (1.0 - lam))
    if unseen_idx.size:
        bound = xp.maximum(bound, (p[:, unseen_idx] ** (1.0 - lam)).max(axis=1) * cap**lam)
    return (bound[:, None] * mask_sigmoid >= threshold * winning[None]).any(axis=1)
