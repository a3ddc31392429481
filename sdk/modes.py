"""The inference modes: strategies in two phases, the image and then the vocabulary.

* :class:`CropMask` — faithful: every query's masked crop through CLIP, then the official
  ensemble; ``CropMask(prune=t)`` (mode ``"pruned"``) sends only the queries that can matter
  (:func:`sdk.scores.prune`);
* :class:`MaskPool` — one dense CLIP pass, segment embeddings by mask pooling, same ensemble;
* :class:`SegmentOnly` (mode ``"proposal"``) — no CLIP: ``softmax(segment logits)[:, :K]``.

``encode`` runs the mode's image graphs (:attr:`Mode.graphs`, which the ``Segmenter`` checks the
bundle for) and fills the CLIP rows of :class:`~sdk.features.ImageFeatures`; ``class_scores``
turns features and a vocabulary (:class:`QueryScores`) into ``([Q,K] class scores, info)``.
Both work on the pipeline's array module (``sdk.arrays``), so the same code runs on numpy and on
device arrays. A mode sees the pipeline only through :class:`Stages`.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Protocol, Sequence, Tuple

import numpy as np

from .arrays import ArrayOps
from .errors import BundleError
from .features import ImageFeatures
from .preprocess import Prepared, clip_input, dense_input
from .scores import clip_logits, clip_probs, ensemble, prune, sigmoid, softmax
from .timer import Timer

log = logging.getLogger(__name__)
MODES = ("cropmask", "pruned", "maskpool", "proposal")
Scores = Tuple[Any, Dict[str, Any]]

__all__ = ["MODES", "Mode", "CropMask", "MaskPool", "SegmentOnly", "QueryScores", "Stages", "make_mode", "prune"]


class Stages(Protocol):
    """What a mode uses of the pipeline: the backend, the array module and the model's constants."""

    xp: Any
    arrays: ArrayOps
    backend: Any
    clip_batch: int
    crop_size: int
    dense_size: Sequence[int]
    clip_mean: Sequence[float]
    clip_std: Sequence[float]
    lam: float
    clip_scale: float
    stride: int


class QueryScores:
    """One image's features with one vocabulary: segment logits ``[Q,K+1]``, CLIP text rows, seen flags."""

    def __init__(self, features: ImageFeatures, vocab: Any, pred_logits: Any, text_clip: Any, stride: int, xp: Any):
        self.features, self.vocab, self.pred_logits, self.text_clip = features, vocab, pred_logits, text_clip
        self.seen: np.ndarray = vocab.seen
        self.xp = xp
        h, w = features.resized
        self.grid: Tuple[int, int] = (-(-h // stride), -(-w // stride))  # mask cells of the unpadded image
        self._sigmoid = None

    def mask_sigmoid(self) -> Any:
        """``sigmoid(mask logits)`` ``[Q,h,w]`` on the whole mask grid (computed once)."""
        if self._sigmoid is None:
            self._sigmoid = sigmoid(self.features.masks[0], self.xp)
        return self._sigmoid

    def unpadded_sigmoid(self) -> Any:
        """``[Q, hm·wm]``: the mask sigmoid over the cells that cover the unpadded image."""
        hm, wm = self.grid
        sig = self.mask_sigmoid()
        return sig[:, :hm, :wm].reshape(sig.shape[0], -1)


class Mode:
    """A strategy: ``encode(stages, features, prep, model_input, timer, selected)`` fills the CLIP rows;
    ``class_scores(stages, query_scores, timer)`` → ``([Q,K] scores, info)``."""

    name = "mode"
    graphs: Tuple[str, ...] = ("proposal",)
    selects = False  # True: encoding for a vocabulary may skip queries (see CropMask)

    def encode(
        self,
        st: Stages,
        f: ImageFeatures,
        prep: Prepared,
        model_input: Any,
        timer: Timer,
        selected: Optional[np.ndarray] = None,
    ) -> None:
        """Run the mode's CLIP graph for the image (``selected``: only these queries) into ``f``."""

    def select(self, st: Stages, q: QueryScores, timer: Timer) -> Optional[np.ndarray]:
        """The queries ``q``'s vocabulary needs CLIP rows for (host indices); ``None`` = all of them.

        Called only when :attr:`selects` is true; a mode that does not select needs every query."""
        return None

    def class_scores(self, st: Stages, q: QueryScores, timer: Timer) -> Scores:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SegmentOnly(Mode):
    """The segment classifier alone (no CLIP branch): mode ``"proposal"``."""

    name = "proposal"

    def class_scores(self, st: Stages, q: QueryScores, timer: Timer) -> Scores:
        return softmax(q.pred_logits, st.xp)[:, :-1], {}


class CropMask(Mode):
    """Masked crops through the CLIP image graph; ``prune`` > 0 skips queries that cannot matter.

    ``pruned`` and features: encoded without a vocabulary, every query's crop goes through CLIP
    (the cost of ``cropmask``) and any vocabulary classifies exactly; encoded for a vocabulary
    (what ``seg(image, vocabulary)`` does), only that vocabulary's queries do. Classified with
    another vocabulary, a query it would select that has no CLIP row gets the neutral value
    (as if not selected), counted in ``info["clip_missing"]``.
    """

    graphs = ("proposal", "clip_image")

    def __init__(self, prune: Optional[float] = None):
        self.prune = None if prune is None else float(prune)
        self.name = "cropmask" if prune is None else "pruned"
        self.selects = prune is not None

    def select(self, st: Stages, q: QueryScores, timer: Timer) -> Optional[np.ndarray]:
        """The queries worth a CLIP crop for ``q``'s vocabulary (host indices); ``None`` = all of them."""
        if self.prune is None:
            return None
        cached = q.features.selection
        if cached is not None and cached[0] is q.vocab:
            return cached[1]
        with timer("prune"):
            keep = prune(q.pred_logits, q.unpadded_sigmoid(), q.seen, st.lam, self.prune, st.clip_scale, st.xp)
            selected = np.flatnonzero(st.arrays.download(keep))  # [Q] flags: the crop count is data-dependent
        q.features.selection = (q.vocab, selected)
        return selected

    def encode(
        self,
        st: Stages,
        f: ImageFeatures,
        prep: Prepared,
        model_input: Any,
        timer: Timer,
        selected: Optional[np.ndarray] = None,
    ) -> None:
        xp, arrays = st.xp, st.arrays
        n = f.num_queries if selected is None else int(selected.size)
        index = None if n == f.num_queries else selected
        if not n:  # no query can matter: no crop, no CLIP call
            f.clip = xp.zeros((0, f.embeddings.shape[1]), dtype=np.float32)
        else:
            with timer("crops"):
                masks = f.masks if index is None else xp.ascontiguousarray(f.masks[:, xp.asarray(index)])
                image = clip_input(model_input, prep.resized, st.clip_mean, st.clip_std, xp)
                crops = arrays.masked_crops(image, masks, st.crop_size)[0]
            with timer("clip"):
                b = st.clip_batch
                f.clip = xp.concatenate([st.backend.clip_image(crops[i : i + b]) for i in range(0, n, b)])
        f.clip_queries = None if index is None else np.asarray(index, dtype=np.int64)

    def class_scores(self, st: Stages, q: QueryScores, timer: Timer) -> Scores:
        xp, f = st.xp, q.features
        selected = self.select(st, q, timer)
        rows, index, missing = self._rows(f, selected, xp)
        with timer("ensemble"):
            probs_clip = softmax(q.pred_logits, xp)[:, :-1]  # neutral value for the queries not sent to CLIP
            n = q.pred_logits.shape[0] if index is None else int(index.size)
            if index is None:
                probs_clip = clip_probs(clip_logits(rows, q.text_clip, st.clip_scale), q.pred_logits, xp)
            elif n:
                at = xp.asarray(index)
                probs_clip[at] = clip_probs(clip_logits(rows, q.text_clip, st.clip_scale), q.pred_logits[at], xp)
            info: Dict[str, Any] = {"clip_queries": n}
            if missing:
                info["clip_missing"] = missing
            return ensemble(q.pred_logits, probs_clip, q.seen, st.lam, xp), info

    @staticmethod
    def _rows(f: ImageFeatures, selected: Optional[np.ndarray], xp: Any) -> Tuple[Any, Optional[np.ndarray], int]:
        """``(CLIP rows, their queries or None = all, selected queries without a row)`` for a selection."""
        have, clip = f.clip_queries, f.clip
        if clip is None:  # only "proposal" features lack CLIP rows, and loading them pairs mode and rows
            raise BundleError(f"{f.mode!r} features have no CLIP rows; encode the image again in a CLIP mode")
        if selected is None or selected.size == f.num_queries:
            if have is None:
                return clip, None, 0
            selected = np.arange(f.num_queries)
        if have is None:
            return clip[xp.asarray(selected)], selected, 0
        usable = np.intersect1d(selected, have)
        missing = int(selected.size - usable.size)
        if missing:
            log.warning(
                "%d queries this vocabulary selects have no CLIP row (the features were encoded for "
                "another vocabulary); they keep the neutral value",
                missing,
            )
        if usable.size == have.size:
            return clip, usable, missing
        return clip[xp.asarray(np.searchsorted(have, usable))], usable, missing

    def __repr__(self) -> str:
        return f"CropMask(prune={self.prune})"


class MaskPool(Mode):
    """One dense CLIP pass; each query's embedding is the mask-weighted mean of the dense features."""

    name = "maskpool"
    graphs = ("proposal", "clip_dense")

    def encode(
        self,
        st: Stages,
        f: ImageFeatures,
        prep: Prepared,
        model_input: Any,
        timer: Timer,
        selected: Optional[np.ndarray] = None,
    ) -> None:
        xp, arrays = st.xp, st.arrays
        with timer("clip"):
            image = arrays.upload(dense_input(prep, st.dense_size, st.clip_mean, st.clip_std))
            dense = st.backend.clip_dense(image)
        with timer("pool"):
            hm, wm = (-(-n // st.stride) for n in f.resized)  # mask cells of the unpadded image
            pooled = arrays.mask_pool(dense, xp.ascontiguousarray(f.masks[:, :, :hm, :wm]))[0]
            feats = pooled / xp.maximum(xp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
            f.clip = feats.astype(np.float32)

    def class_scores(self, st: Stages, q: QueryScores, timer: Timer) -> Scores:
        xp = st.xp
        with timer("ensemble"):
            probs_clip = clip_probs(clip_logits(q.features.clip, q.text_clip, st.clip_scale), q.pred_logits, xp)
            return ensemble(q.pred_logits, probs_clip, q.seen, st.lam, xp), {}


def make_mode(name: str, prune_threshold: float = 0.02) -> Mode:
    """The strategy of a mode string (one of :data:`MODES`)."""
    if name == "cropmask":
        return CropMask()
    if name == "pruned":
        return CropMask(prune=prune_threshold)
    if name == "maskpool":
        return MaskPool()
    if name == "proposal":
        return SegmentOnly()
    raise ValueError(f"unknown mode {name!r}; choose one of {MODES}")
