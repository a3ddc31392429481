"""The inference modes: strategies that turn proposals into per-query class scores ``[Q,K]``.

* :class:`CropMask` — faithful: every query's masked crop through CLIP, then the official
  ensemble; ``CropMask(prune=t)`` (mode ``"pruned"``) sends only the queries that can matter
  (:func:`sdk.scores.prune`);
* :class:`MaskPool` — one dense CLIP pass, segment embeddings by mask pooling, same ensemble;
* :class:`Proposal` — no CLIP: ``softmax(segment logits)[:, :K]``.

Each returns ``(class scores, info)``, its own ``info`` entries for the result. They work on the
pipeline's array module (``sdk.arrays``), so the same code runs on numpy and on device arrays.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

import numpy as np

from .preprocess import clip_input, dense_input
from .scores import clip_logits, clip_probs, ensemble, prune, softmax
from .timer import Timer

if TYPE_CHECKING:  # pragma: no cover
    from .pipeline import Pipeline, Proposals

MODES = ("cropmask", "pruned", "maskpool", "proposal")
Scores = Tuple[Any, Dict[str, Any]]


class Mode:
    """A strategy: ``class_scores(pipeline, proposals, timer)`` → ``([Q,K] scores, info)``."""

    name = "mode"
    graphs: Tuple[str, ...] = ("proposal",)

    def class_scores(self, pipe: "Pipeline", p: "Proposals", timer: Timer) -> Scores:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Proposal(Mode):
    """The segment classifier alone (no CLIP branch)."""

    name = "proposal"

    def class_scores(self, pipe: "Pipeline", p: "Proposals", timer: Timer) -> Scores:
        return softmax(p.pred_logits, pipe.xp)[:, :-1], {}


class CropMask(Mode):
    """Masked crops through the CLIP image graph; ``prune`` > 0 skips queries that cannot matter."""

    graphs = ("proposal", "clip_image")

    def __init__(self, prune: Optional[float] = None):
        self.prune = None if prune is None else float(prune)
        self.name = "cropmask" if prune is None else "pruned"

    def class_scores(self, pipe: "Pipeline", p: "Proposals", timer: Timer) -> Scores:
        xp, arrays = pipe.xp, pipe.arrays
        q = p.pred_logits.shape[0]
        selected: Optional[np.ndarray] = None  # None: every query
        if self.prune is not None:
            with timer("prune"):
                keep = prune(p.pred_logits, p.unpadded_sigmoid(), p.seen, pipe.lam, self.prune,
                             pipe.clip_scale, xp)
                selected = np.flatnonzero(arrays.download(keep))  # [Q] flags: the crop count is data-dependent
        n = q if selected is None else int(selected.size)
        probs_clip = softmax(p.pred_logits, xp)[:, :-1]  # neutral value for the queries not sent to CLIP
        if n:
            index = None if n == q else xp.asarray(selected)
            with timer("crops"):
                masks = p.masks if index is None else xp.ascontiguousarray(p.masks[:, index])
                image = clip_input(p.model_input, p.prep.resized, pipe.clip_mean, pipe.clip_std, xp)
                crops = arrays.masked_crops(image, masks, pipe.crop_size)[0]
            with timer("clip"):
                b = pipe.clip_batch
                feats = xp.concatenate([pipe.backend.clip_image(crops[i:i + b]) for i in range(0, n, b)])
            with timer("ensemble"):
                logits = clip_logits(feats, p.text_clip, pipe.clip_scale)
                if index is None:
                    probs_clip = clip_probs(logits, p.pred_logits, xp)
                else:
                    probs_clip[index] = clip_probs(logits, p.pred_logits[index], xp)
        with timer("ensemble"):
            return ensemble(p.pred_logits, probs_clip, p.seen, pipe.lam, xp), {"clip_queries": n}

    def __repr__(self) -> str:
        return f"CropMask(prune={self.prune})"


class MaskPool(Mode):
    """One dense CLIP pass; each query's embedding is the mask-weighted mean of the dense features."""

    name = "maskpool"
    graphs = ("proposal", "clip_dense")

    def class_scores(self, pipe: "Pipeline", p: "Proposals", timer: Timer) -> Scores:
        xp, arrays = pipe.xp, pipe.arrays
        with timer("clip"):
            image = arrays.upload(dense_input(p.prep, pipe.dense_size, pipe.clip_mean, pipe.clip_std))
            dense = pipe.backend.clip_dense(image)
        with timer("pool"):
            hm, wm = p.grid
            pooled = arrays.mask_pool(dense, xp.ascontiguousarray(p.masks[:, :, :hm, :wm]))[0]
            feats = pooled / xp.maximum(xp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
        with timer("ensemble"):
            probs_clip = clip_probs(clip_logits(feats.astype(np.float32), p.text_clip, pipe.clip_scale),
                                    p.pred_logits, xp)
            return ensemble(p.pred_logits, probs_clip, p.seen, pipe.lam, xp), {}


def make_mode(name: str, prune_threshold: float = 0.02) -> Mode:
    """The strategy of a mode string (one of :data:`MODES`)."""
    if name == "cropmask":
        return CropMask()
    if name == "pruned":
        return CropMask(prune=prune_threshold)
    if name == "maskpool":
        return MaskPool()
    if name == "proposal":
        return Proposal()
    raise ValueError(f"unknown mode {name!r}; choose one of {MODES}")
