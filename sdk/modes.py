"""The inference modes: from proposals to per-query class scores, then the semantic map.

All arithmetic after the graphs is numpy float32 and follows ``train/model/postprocess.py``:

* ``cropmask`` — faithful: every query's masked crop through CLIP, then the official ensemble;
* ``pruned``   — cropmask, but only the queries that can matter go through CLIP (:func:`prune`);
* ``maskpool`` — one dense CLIP pass, segment embeddings by mask pooling, same ensemble;
* ``proposal`` — no CLIP: ``softmax(segment logits)[:, :K]``.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np

from .backends import Backend
from .bundle import Bundle
from .errors import BackendError
from .preprocess import Prepared, clip_input, dense_input
from .vocabulary import Vocabulary

MODES = ("cropmask", "pruned", "maskpool", "proposal")


class Timer:
    """Milliseconds per stage (``with timer("stage"): ...``)."""

    def __init__(self) -> None:
        self.ms: Dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.ms[stage] = self.ms.get(stage, 0.0) + (time.perf_counter() - t0) * 1e3


# ---------------------------------------------------------------------------- arithmetic
def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32, copy=False)


def segment_logits(emb: np.ndarray, text: np.ndarray, background: np.ndarray, scale: float) -> np.ndarray:
    """``[Q,K+1]``: ``(scale·emb)·textᵀ`` then ``(scale·emb)·backgroundᵀ`` (background not normalised)."""
    scaled = np.float32(scale) * emb
    return np.concatenate([scaled @ text.T, scaled @ background.T], axis=1)


def clip_probs(clip_logits: np.ndarray, pred_logits: np.ndarray) -> np.ndarray:
    """CLIP probabilities with the segment classifier's background logit as an extra column, dropped."""
    return softmax(np.concatenate([clip_logits, pred_logits[:, -1:]], axis=1))[:, :-1]


def ensemble(pred_logits: np.ndarray, clip_p: np.ndarray, seen: np.ndarray, lam: float) -> np.ndarray:
    """The official geometric ensemble (``train/model/postprocess.py:ensemble``) on CLIP probabilities."""
    lam32, rest = np.float32(lam), np.float32(1.0 - lam)
    clip_p = clip_p.copy()
    probs = softmax(pred_logits)[:, :-1]
    if seen.any():
        clip_p[:, seen] = clip_p[:, seen].mean(axis=1, keepdims=True)
        probs[:, seen] = np.power(probs[:, seen], lam32) * np.power(clip_p[:, seen], rest)
    if (~seen).any():
        probs[:, ~seen] = np.power(probs[:, ~seen], rest) * np.power(clip_p[:, ~seen], lam32)
    return probs


def prune(pred_logits: np.ndarray, mask_sigmoid: np.ndarray, seen: np.ndarray, lam: float,
          threshold: float, clip_scale: float = 100.0) -> np.ndarray:
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
        return np.ones(q, dtype=bool)
    p = softmax(pred_logits)[:, :-1]
    estimate = ensemble(pred_logits, p, seen, lam)
    winning = (estimate.T @ mask_sigmoid).max(axis=0)
    cap = 1.0 / (1.0 + np.exp(np.minimum(pred_logits[:, -1].astype(np.float64) - clip_scale, 700.0)))
    bound = np.zeros(q)
    if seen.any():
        mean_cap = np.minimum(cap, 1.0 / seen.sum())
        bound = np.maximum(bound, (p[:, seen] ** lam).max(axis=1) * mean_cap ** (1.0 - lam))
    if (~seen).any():
        bound = np.maximum(bound, (p[:, ~seen] ** (1.0 - lam)).max(axis=1) * cap ** lam)
    return (bound[:, None] * mask_sigmoid >= threshold * winning[None]).any(axis=1)


# ---------------------------------------------------------------------------- pipeline
def load_kernels():
    """``sdk.kernels`` (the compiled post-processing), or a :class:`BackendError` saying how to build it."""
    try:
        from . import kernels
    except ImportError as e:
        raise BackendError(f"the compiled kernels (sdk._kernels) are not available: {e}; build them with "
                           "`pip install -e .` in the repository (needs a C++ compiler and pybind11)") from e
    return kernels


@dataclass
class Output:
    labels: np.ndarray             # [H,W] int32
    probs: Optional[np.ndarray]    # [K,H,W] float32 or None
    segment_scores: np.ndarray     # [K] mean calibrated score over each class's pixels
    info: Dict[str, Any]


class Pipeline:
    """Runs one prepared image through a backend in a mode (stateless apart from constants)."""

    def __init__(self, bundle: Bundle, backend: Backend, clip_batch: Optional[int] = None,
                 prune_threshold: float = 0.02):
        m, inf, pre = bundle.model, bundle.inference, bundle.preprocess
        self.kernels = load_kernels()
        self.backend = backend
        self.background = bundle.background()
        self.segment_scale = float(m["segment_logit_scale"])
        self.clip_scale = float(m["clip_logit_scale"])
        self.lam = float(inf.get("ensemble_lambda", 2.0 / 3.0))
        self.calibrate = float(inf.get("gzero_calibrate", 0.1))
        self.crop_size = int(inf.get("crop_size", m.get("crop_size", 224)))
        self.stride = int(m.get("mask_stride", 4))
        self.divisor = int(inf.get("size_divisibility", 32))
        self.dense_size = inf.get("dense_size")
        self.clip_mean, self.clip_std = pre["clip_pixel_mean"], pre["clip_pixel_std"]
        # CPU: moderate batches bound the memory; GPU: all queries at once (engines chunk to their profile)
        default_batch = 32 if backend.device == "cpu" else int(m.get("num_queries", 100))
        self.clip_batch = max(1, int(clip_batch or default_batch))
        self.prune_threshold = float(prune_threshold)

    def run(self, prep: Prepared, vocab: Vocabulary, mode: str, return_probs: bool, timer: Timer) -> Output:
        with timer("proposal"):
            masks, emb = self.backend.proposal(prep.model_input)
        with timer("classify"):
            pred_logits = segment_logits(emb[0], vocab.text_features, self.background, self.segment_scale)
        info: Dict[str, Any] = {"queries": int(pred_logits.shape[0])}
        if mode == "proposal":
            mask_cls = softmax(pred_logits)[:, :-1]
        elif mode == "maskpool":
            mask_cls = self._maskpool(prep, masks, pred_logits, vocab, timer)
        else:
            mask_cls = self._cropmask(prep, masks, pred_logits, vocab, mode == "pruned", timer, info)
        with timer("semantic"):
            out = self.kernels.semantic_inference(
                masks, np.ascontiguousarray(mask_cls[None], dtype=np.float32), image_size=prep.size,
                out_size=prep.original_size, padded_size=prep.padded, calibrate_mask=vocab.seen,
                calibrate=self.calibrate, return_scores=return_probs)
            labels, probs = out if isinstance(out, tuple) else (out, None)
        with timer("segments"):
            labels = np.ascontiguousarray(labels[0], dtype=np.int32)
            probs = None if probs is None else probs[0]
            scores = self._segment_scores(labels, probs, masks, mask_cls, prep, vocab.seen)
        return Output(labels, probs, scores, info)

    # ------------------------------------------------------------------ CLIP branches
    def _clip_logits(self, feats: np.ndarray, vocab: Vocabulary) -> np.ndarray:
        return (np.float32(self.clip_scale) * feats) @ vocab.text_features_clip.T

    def _cropmask(self, prep: Prepared, masks: np.ndarray, pred_logits: np.ndarray, vocab: Vocabulary,
                  pruned: bool, timer: Timer, info: Dict[str, Any]) -> np.ndarray:
        q = pred_logits.shape[0]
        keep = np.ones(q, dtype=bool)
        if pruned:
            with timer("prune"):
                keep = prune(pred_logits, self._unpadded_sigmoid(masks[0], prep), vocab.seen, self.lam,
                             self.prune_threshold, self.clip_scale)
        info["clip_queries"] = int(keep.sum())
        probs_clip = softmax(pred_logits)[:, :-1]  # neutral value for the queries not sent to CLIP
        if keep.any():
            with timer("crops"):
                sel = masks if keep.all() else np.ascontiguousarray(masks[:, keep])
                image = clip_input(prep, self.clip_mean, self.clip_std, self.divisor)
                crops = np.asarray(self.kernels.masked_crops(image, sel, self.crop_size)[0])[0]
            with timer("clip"):
                feats = np.concatenate([self.backend.clip_image(crops[i:i + self.clip_batch])
                                        for i in range(0, crops.shape[0], self.clip_batch)])
            with timer("ensemble"):
                probs_clip[keep] = clip_probs(self._clip_logits(feats, vocab), pred_logits[keep])
        with timer("ensemble"):
            return ensemble(pred_logits, probs_clip, vocab.seen, self.lam)

    def _maskpool(self, prep: Prepared, masks: np.ndarray, pred_logits: np.ndarray, vocab: Vocabulary,
                  timer: Timer) -> np.ndarray:
        size = self.dense_size or (self.crop_size, self.crop_size)
        with timer("clip"):
            dense = self.backend.clip_dense(dense_input(prep, size, self.clip_mean, self.clip_std))
        with timer("pool"):
            hm, wm = self._mask_extent(prep)
            pooled = np.asarray(self.kernels.mask_pool(dense, np.ascontiguousarray(masks[:, :, :hm, :wm])))[0]
            feats = pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
        with timer("ensemble"):
            probs_clip = clip_probs(self._clip_logits(feats.astype(np.float32), vocab), pred_logits)
            return ensemble(pred_logits, probs_clip, vocab.seen, self.lam)

    # ------------------------------------------------------------------ helpers
    def _mask_extent(self, prep: Prepared) -> Tuple[int, int]:
        """Rows/columns of the mask grid that cover the unpadded image."""
        h, w = prep.size
        return math.ceil(h / self.stride), math.ceil(w / self.stride)

    def _unpadded_sigmoid(self, masks: np.ndarray, prep: Prepared) -> np.ndarray:
        hm, wm = self._mask_extent(prep)
        return sigmoid(masks[:, :hm, :wm].reshape(masks.shape[0], -1))

    def _segment_scores(self, labels: np.ndarray, probs: Optional[np.ndarray], masks: np.ndarray,
                        mask_cls: np.ndarray, prep: Prepared, seen: np.ndarray) -> np.ndarray:
        """Mean calibrated score of each class over its pixels (exact with probs, else on the mask grid)."""
        k = mask_cls.shape[1]
        areas = np.bincount(labels.ravel(), minlength=k).astype(np.float64)
        if probs is not None:
            values = np.take_along_axis(probs, labels[None], 0)[0]
        else:
            present = np.flatnonzero(areas)
            rank = np.zeros(k, dtype=np.int64)
            rank[present] = np.arange(present.size)
            grid = mask_cls[:, present].T @ sigmoid(masks[0].reshape(masks.shape[1], -1))
            grid = grid.reshape(present.size, masks.shape[2], masks.shape[3])
            iy = self._grid_index(labels.shape[0], prep.size[0], masks.shape[2])
            ix = self._grid_index(labels.shape[1], prep.size[1], masks.shape[3])
            values = grid[rank[labels], iy[:, None], ix[None, :]] - self.calibrate * seen[labels]
        sums = np.bincount(labels.ravel(), weights=values.ravel().astype(np.float64), minlength=k)
        return (sums / np.maximum(areas, 1)).astype(np.float32)

    def _grid_index(self, out_len: int, resized_len: int, grid_len: int) -> np.ndarray:
        """Nearest mask-grid cell of each output row/column (pixel centres mapped through the resize)."""
        centres = (np.arange(out_len) + 0.5) * (resized_len / out_len) / self.stride
        return np.clip(np.floor(centres).astype(np.int64), 0, grid_len - 1)
