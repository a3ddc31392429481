"""One prepared image through a backend and a mode, to the label map: the SDK's one code path.

Stages: proposal graph → segment logits → the mode's class scores (:mod:`sdk.modes`) →
``semantic_inference`` (compiled kernel) → per-class segment scores. Every stage works on the
backend's array module (:mod:`sdk.arrays`): numpy on the CPU, device arrays on a GPU backend,
where only the label map, ``probs`` when asked and the small per-class scores are downloaded.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from .backends import Backend
from .bundle import Bundle
from .modes import MODES, Mode, make_mode
from .preprocess import Prepared
from .scores import segment_logits, sigmoid
from .timer import Timer
from .vocabulary import Vocabulary

CPU_CLIP_BATCH = 16  # crops per CLIP call on the CPU (Segmenter(clip_batch=) overrides)


@dataclass
class Output:
    labels: np.ndarray             # [H,W] int32
    probs: Optional[np.ndarray]    # [K,H,W] float32 or None
    segment_scores: np.ndarray     # [K] mean calibrated score over each class's pixels
    info: Dict[str, Any]


class Proposals:
    """The proposal graph's outputs for one image, with the vocabulary, on the pipeline's arrays."""

    def __init__(self, prep: Prepared, model_input: Any, masks: Any, pred_logits: Any, text_clip: Any,
                 seen: np.ndarray, stride: int, xp: Any):
        self.prep, self.model_input, self.masks, self.pred_logits = prep, model_input, masks, pred_logits
        self.text_clip, self.seen, self.xp = text_clip, seen, xp
        h, w = prep.resized
        self.grid: Tuple[int, int] = (math.ceil(h / stride), math.ceil(w / stride))  # mask cells of the image
        self._sigmoid = None

    def mask_sigmoid(self) -> Any:
        """``sigmoid(mask logits)`` ``[Q,h,w]`` on the whole mask grid (computed once)."""
        if self._sigmoid is None:
            self._sigmoid = sigmoid(self.masks[0], self.xp)
        return self._sigmoid

    def unpadded_sigmoid(self) -> Any:
        """``[Q, hm·wm]``: the mask sigmoid over the cells that cover the unpadded image."""
        hm, wm = self.grid
        sig = self.mask_sigmoid()
        return sig[:, :hm, :wm].reshape(sig.shape[0], -1)


class Pipeline:
    """Runs one prepared image through a backend in a mode (stateless apart from constants)."""

    def __init__(self, bundle: Bundle, backend: Backend, clip_batch: Optional[int] = None,
                 prune_threshold: float = 0.02):
        s = bundle.settings
        self.backend = backend
        self.arrays = backend.arrays
        self.arrays.kernels  # noqa: B018 - fail now, with how to build them, when the kernels are missing
        self.xp = self.arrays.xp
        self.background = self.arrays.upload(bundle.background())
        self.segment_scale = float(s.model.segment_logit_scale)
        self.clip_scale = float(s.model.clip_logit_scale)
        self.lam = float(s.inference.ensemble_lambda)
        self.calibrate = float(s.inference.gzero_calibrate)
        self.crop_size = s.crop_size
        self.stride = int(s.model.mask_stride)
        self.dense_size = s.dense_size
        self.clip_mean, self.clip_std = s.preprocess.clip_pixel_mean, s.preprocess.clip_pixel_std
        # CPU: batches of 16 were 5-14 % faster than 32 for ViT-B/16 on ORT (fp32, int8) and OpenVINO int8, and
        # within noise on OpenVINO fp32 (benchmarks/results/tuning.md); GPU: all queries at once (engines chunk)
        default_batch = CPU_CLIP_BATCH if backend.device == "cpu" else int(s.model.num_queries)
        self.clip_batch = max(1, int(clip_batch or default_batch))
        self.modes: Dict[str, Mode] = {name: make_mode(name, prune_threshold) for name in MODES}

    def run(self, prep: Prepared, vocab: Vocabulary, mode: Union[str, Mode], return_probs: bool,
            timer: Timer) -> Output:
        xp, arrays = self.xp, self.arrays
        strategy = self.modes[mode] if isinstance(mode, str) else mode
        with timer("proposal"):
            model_input = arrays.upload(prep.model_input)
            masks, emb = self.backend.proposal(model_input)
        with timer("classify"):
            pred_logits = segment_logits(emb[0], arrays.upload(vocab.text_features), self.background,
                                         self.segment_scale, xp)
        p = Proposals(prep, model_input, masks, pred_logits, arrays.upload(vocab.text_features_clip),
                      vocab.seen, self.stride, xp)
        mask_cls, mode_info = strategy.class_scores(self, p, timer)
        info: Dict[str, Any] = {"queries": int(pred_logits.shape[0]), **mode_info}
        with timer("semantic"):
            labels, probs = arrays.semantic_inference(
                masks, arrays.contiguous(mask_cls[None], np.float32), image_size=prep.resized,
                out_size=prep.original, padded_size=prep.padded, calibrate_mask=vocab.seen,
                calibrate=self.calibrate, return_scores=return_probs)
        with timer("segments"):
            labels = arrays.contiguous(labels[0], np.int32)
            probs = None if probs is None else probs[0]
            scores = self._segment_scores(labels, probs, p, mask_cls)
            out = Output(arrays.download(labels), None if probs is None else arrays.download(probs),
                         arrays.download(scores), info)
        return out

    def _segment_scores(self, labels: Any, probs: Optional[Any], p: Proposals, mask_cls: Any) -> Any:
        """Mean calibrated score of each class over its pixels (exact with probs, else on the mask grid)."""
        xp = self.xp
        k = mask_cls.shape[1]
        areas = xp.bincount(labels.ravel(), minlength=k).astype(np.float64)
        if probs is not None:
            values = xp.take_along_axis(probs, labels[None], 0)[0]
        else:
            present = xp.flatnonzero(areas)
            rank = xp.zeros(k, dtype=np.int64)
            rank[present] = xp.arange(present.size)
            sig = p.mask_sigmoid()
            q, gh, gw = sig.shape
            grid = (mask_cls[:, present].T @ sig.reshape(q, -1)).reshape(present.size, gh, gw)
            resized = p.prep.resized
            iy = xp.asarray(self._grid_index(labels.shape[0], resized[0], gh))
            ix = xp.asarray(self._grid_index(labels.shape[1], resized[1], gw))
            values = grid[rank[labels], iy[:, None], ix[None, :]] - self.calibrate * xp.asarray(p.seen)[labels]
        sums = xp.bincount(labels.ravel(), weights=values.ravel().astype(np.float64), minlength=k)
        return (sums / xp.maximum(areas, 1)).astype(np.float32)

    def _grid_index(self, out_len: int, resized_len: int, grid_len: int) -> np.ndarray:
        """Nearest mask-grid cell of each output row/column (pixel centres mapped through the resize)."""
        centres = (np.arange(out_len) + 0.5) * (resized_len / out_len) / self.stride
        return np.clip(np.floor(centres).astype(np.int64), 0, grid_len - 1)
