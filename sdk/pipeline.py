"""One prepared image through a backend and a mode, to the label map: the SDK's one code path.

Two phases. :meth:`Pipeline.encode` (no vocabulary): proposal graph → the mode's CLIP graph →
:class:`~sdk.features.ImageFeatures`. :meth:`Pipeline.classify` (no image graph): segment logits →
the mode's class scores (:mod:`sdk.modes`) → ``semantic_inference`` (compiled kernel) → per-class
segment scores. :meth:`Pipeline.run` is the two in a row. Every stage works on the backend's
array module (:mod:`sdk.arrays`): numpy on the CPU, device arrays on a GPU backend, where only the
label map, ``probs`` when asked and the small per-class scores are downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np

from .backends import Backend
from .bundle import Bundle
from .errors import BundleError
from .features import ImageFeatures, bundle_identity
from .modes import MODES, Mode, QueryScores, make_mode
from .preprocess import Prepared
from .scores import segment_logits
from .timer import Timer
from .vocabulary import Vocabulary

CPU_CLIP_BATCH = 16  # crops per CLIP call on the CPU (Segmenter(clip_batch=) overrides)


@dataclass
class Output:
    labels: np.ndarray  # [H,W] int32
    probs: Optional[np.ndarray]  # [K,H,W] float32 or None
    segment_scores: np.ndarray  # [K] mean calibrated score over each class's pixels
    info: Dict[str, Any]


class Pipeline:
    """Runs one prepared image through a backend in a mode (stateless apart from constants)."""

    def __init__(
        self, bundle: Bundle, backend: Backend, clip_batch: Optional[int] = None, prune_threshold: float = 0.02
    ):
        s = bundle.settings
        self.backend = backend
        self.arrays = backend.arrays
        self.arrays.kernels  # noqa: B018 - fail now, with how to build them, when the kernels are missing
        self.xp = self.arrays.xp
        self.bundle_id = bundle_identity(bundle.manifest)
        self.background = self.arrays.upload(bundle.background())
        self.segment_scale = float(s.model.segment_logit_scale)
        self.clip_scale = float(s.model.clip_logit_scale)
        self.lam = float(s.inference.ensemble_lambda)
        self.calibrate = float(s.inference.gzero_calibrate)
        self.crop_size = s.crop_size
        self.stride = int(s.model.mask_stride)
        self.num_queries, self.embed_dim = int(s.model.num_queries), int(s.model.embed_dim)
        self.dense_size: Sequence[int] = s.dense_size  # annotated as modes.Stages reads them (read-only)
        self.clip_mean: Sequence[float] = s.preprocess.clip_pixel_mean
        self.clip_std: Sequence[float] = s.preprocess.clip_pixel_std
        # CPU: batches of 16 were 5-14 % faster than 32 for ViT-B/16 on ORT (fp32, int8) and OpenVINO int8, and
        # within noise on OpenVINO fp32 (benchmarks/results/tuning.md); GPU: all queries at once (engines chunk)
        default_batch = CPU_CLIP_BATCH if backend.device == "cpu" else int(s.model.num_queries)
        self.clip_batch = max(1, int(clip_batch or default_batch))
        self.modes: Dict[str, Mode] = {name: make_mode(name, prune_threshold) for name in MODES}

    def _mode(self, mode: Union[str, Mode]) -> Mode:
        return self.modes[mode] if isinstance(mode, str) else mode

    # ------------------------------------------------------------------ phase 1: the image
    def encode(
        self,
        prep: Prepared,
        mode: Union[str, Mode],
        timer: Timer,
        precision: str = "fp32",
        vocab: Optional[Vocabulary] = None,
    ) -> ImageFeatures:
        """The image graphs of ``mode`` → :class:`ImageFeatures` (on the backend's arrays).

        ``vocab`` matters only to a mode that selects queries (``pruned``): given, only the queries
        that vocabulary needs go through CLIP; ``None``: all of them.
        """
        strategy = self._mode(mode)
        with timer("proposal"):
            model_input = self.arrays.upload(prep.model_input)
            masks, emb = self.backend.proposal(model_input)
        f = ImageFeatures(
            mode=strategy.name,
            masks=masks,
            embeddings=emb[0],
            clip=None,
            clip_queries=None,
            original=prep.original,
            resized=prep.resized,
            padded=prep.padded,
            bundle_id=self.bundle_id,
            precision=precision,
            arrays=self.arrays,
        )
        selected = None
        if vocab is not None and strategy.selects:
            selected = strategy.select(self, self.query_scores(f, vocab, timer), timer)
        strategy.encode(self, f, prep, model_input, timer, selected)
        return f

    # ------------------------------------------------------------------ phase 2: the vocabulary
    def query_scores(self, f: ImageFeatures, vocab: Vocabulary, timer: Timer) -> QueryScores:
        """Segment logits of ``f``'s queries against ``vocab`` (the ``classify`` stage)."""
        arrays = self.arrays
        with timer("classify"):
            pred_logits = segment_logits(
                f.embeddings, arrays.upload(vocab.text_features), self.background, self.segment_scale, self.xp
            )
        return QueryScores(f, vocab, pred_logits, arrays.upload(vocab.text_features_clip), self.stride, self.xp)

    def classify(
        self, f: ImageFeatures, vocab: Vocabulary, mode: Union[str, Mode], return_probs: bool, timer: Timer
    ) -> Output:
        """Features and a vocabulary → the label map (no image graph runs)."""
        self.check_features(f)
        arrays = self.arrays
        q = self.query_scores(f, vocab, timer)
        mask_cls, mode_info = self._mode(mode).class_scores(self, q, timer)
        info: Dict[str, Any] = {"queries": int(q.pred_logits.shape[0]), **mode_info}
        with timer("semantic"):
            labels, probs = arrays.semantic_inference(
                f.masks,
                arrays.contiguous(mask_cls[None], np.float32),
                image_size=f.resized,
                out_size=f.original,
                padded_size=f.padded,
                calibrate_mask=vocab.seen,
                calibrate=self.calibrate,
                return_scores=return_probs,
            )
        with timer("segments"):
            labels = arrays.contiguous(labels[0], np.int32)
            probs = None if probs is None else probs[0]
            scores = self._segment_scores(labels, probs, q, mask_cls)
            out = Output(
                arrays.download(labels),
                None if probs is None else arrays.download(probs),
                arrays.download(scores),
                info,
            )
        return out

    def run(
        self,
        prep: Prepared,
        vocab: Vocabulary,
        mode: Union[str, Mode],
        return_probs: bool,
        timer: Timer,
        precision: str = "fp32",
    ) -> Output:
        """:meth:`encode` then :meth:`classify` (the ``pruned`` mode encodes for ``vocab``)."""
        features = self.encode(prep, mode, timer, precision, vocab)
        return self.classify(features, vocab, mode, return_probs, timer)

    def check_features(self, f: ImageFeatures) -> None:
        """Refuse features whose shapes this bundle cannot have made (another bundle, a doctored file)."""
        f.check(self.bundle_id)
        if f.mode not in self.modes:
            raise BundleError(f"features of unknown mode {f.mode!r} (this SDK has {MODES}); encode the image again")
        grid = tuple(-(-n // self.stride) for n in f.padded)
        shape = (1, self.num_queries, *grid)
        if tuple(f.masks.shape) != shape or tuple(f.embeddings.shape) != (self.num_queries, self.embed_dim):
            raise BundleError(
                f"features of shapes masks {tuple(f.masks.shape)}, embeddings "
                f"{tuple(f.embeddings.shape)} do not fit this bundle (masks {shape}, embeddings "
                f"{(self.num_queries, self.embed_dim)}); encode the image again"
            )

    def _segment_scores(self, labels: Any, probs: Optional[Any], q: QueryScores, mask_cls: Any) -> Any:
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
            sig = q.mask_sigmoid()
            nq, gh, gw = sig.shape
            grid = (mask_cls[:, present].T @ sig.reshape(nq, -1)).reshape(present.size, gh, gw)
            resized = q.features.resized
            iy = xp.asarray(self._grid_index(labels.shape[0], resized[0], gh))
            ix = xp.asarray(self._grid_index(labels.shape[1], resized[1], gw))
            values = grid[rank[labels], iy[:, None], ix[None, :]] - self.calibrate * xp.asarray(q.seen)[labels]
        sums = xp.bincount(labels.ravel(), weights=values.ravel().astype(np.float64), minlength=k)
        return (sums / xp.maximum(areas, 1)).astype(np.float32)

    def _grid_index(self, out_len: int, resized_len: int, grid_len: int) -> np.ndarray:
        """Nearest mask-grid cell of each output row/column (pixel centres mapped through the resize)."""
        centres = (np.arange(out_len) + 0.5) * (resized_len / out_len) / self.stride
        return np.clip(np.floor(centres).astype(np.int64), 0, grid_len - 1)
