"""``Segmenter``: the SDK's entry point."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from .backends import Backend, create_backend
from .bundle import REEXPORT, Bundle
from .classnames import read_class_file, split_names, validate_names
from .errors import BackendError, BundleError, OptionError, SegmenterError, VocabularyError
from .features import ImageFeatures
from .modes import MODES, make_mode
from .pipeline import Pipeline
from .preprocess import ImageLike, prepare, to_rgb_uint8
from .result import SegmentationResult, build_segments
from .timer import Timer
from .validate.options import check_options
from .vocabulary import Vocabulary, VocabularySpec, VocabularyStore

log = logging.getLogger(__name__)
BUNDLE_DEFAULT = "bundle"


class Segmenter:
    """Open-vocabulary semantic segmentation with a ZegFormer bundle.

    Args:
        bundle_dir: a bundle written by ``python -m export``.
        backend: ``"auto"`` (TensorRT → ONNX Runtime CUDA → ONNX Runtime CPU), ``"onnxruntime"``,
            ``"tensorrt"`` or ``"torch"`` (the PyTorch reference; needs torch and ``train/``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        mode: ``"cropmask"`` (faithful), ``"pruned"``, ``"maskpool"`` or ``"proposal"``.
        min_size: shortest side after resizing (default: the bundle's, 640); ``None`` keeps the
            input size (only padding). ``max_size``: longest side bound (default 2560).
        vocabulary: initial vocabulary (default: the bundle's default vocabulary).
        bgr: read 3/4-channel arrays as OpenCV BGR(A).
        threads: intra-op threads of the backend (default: the library's choice).
        clip_batch: crops per CLIP image-encoder call (default 16 on the CPU, all queries on a GPU).
        prune_threshold: the ``pruned`` mode's threshold (see ``sdk.scores.prune``).
        cache_dir: text-embedding disk cache (default ``ZEGFORMER_CACHE`` or ``~/.cache/zegformer-sdk``;
            ``False`` disables it). ``text_batch``: prompts per text-graph call.
        reuse_builtin: take a run-time name's embeddings from a built-in vocabulary that has it.
        checkpoint: the checkpoint for ``backend="torch"`` (default: the one the manifest records).
        precision: ``"fp32"`` (faithful, default), ``"bf16"`` (OpenVINO), ``"int8"``, ``"fp16"`` (GPU),
            ``"auto"`` (fastest tier whose agreement measured at export meets ``sdk.precision.AUTO_BAR``),
            or per graph (``{"clip_image": "int8"}``); see ``sdk.precision``. Recorded in ``info``.
    """

    def __init__(
        self,
        bundle_dir: Union[str, os.PathLike],
        backend: str = "auto",
        device: str = "auto",
        mode: str = "cropmask",
        *,
        min_size: Union[int, None, str] = BUNDLE_DEFAULT,
        max_size: Optional[int] = None,
        vocabulary: VocabularySpec = None,
        bgr: bool = False,
        threads: Optional[int] = None,
        clip_batch: Optional[int] = None,
        prune_threshold: float = 0.02,
        cache_dir: Union[None, bool, str, os.PathLike] = None,
        text_batch: int = 64,
        checkpoint: Optional[Union[str, os.PathLike]] = None,
        reuse_builtin: bool = True,
        precision: Any = "fp32",
    ):
        check_options(
            min_size=min_size,
            max_size=max_size,
            threads=threads,
            clip_batch=clip_batch,
            bgr=bgr,
            prune_threshold=prune_threshold,
            text_batch=text_batch,
            backend=backend,
            device=device,
            mode=mode,
            cache_dir=cache_dir,
            checkpoint=checkpoint,
        )
        self.bundle = Bundle(bundle_dir)
        self.mode = self._check_mode(mode)
        inf = self.bundle.settings.inference
        # check_options let through one string, BUNDLE_DEFAULT
        self.min_size: Optional[int] = inf.min_size if isinstance(min_size, str) else min_size
        self.max_size = int(max_size or inf.max_size)
        self.divisor = int(inf.size_divisibility)
        self.bgr = bool(bgr)
        self.device = device
        self._options = {"threads": threads, "checkpoint": checkpoint, "precision": precision, "cache_dir": cache_dir}
        self._pipeline_options: Dict[str, Any] = {"clip_batch": clip_batch, "prune_threshold": prune_threshold}
        self._backend = create_backend(self.bundle, backend, device, self._options)
        self._pipeline = Pipeline(self.bundle, self._backend, **self._pipeline_options)
        self._store = VocabularyStore(
            self.bundle,
            lambda tokens: self._backend.clip_text(tokens),
            cache_dir,
            text_batch,
            reuse_builtin,
            text_tier=self._backend.precision.of("clip_text"),
        )
        self._lock = threading.Lock()
        self._vocabulary: Optional[Vocabulary] = None
        if vocabulary is not None or self.bundle.default_vocabulary:
            self.set_vocabulary(vocabulary if vocabulary is not None else self.bundle.default_vocabulary)
        log.info("Segmenter: %s, mode %s, %d classes", self._backend.describe(), self.mode, len(self._vocabulary or ()))

    # ------------------------------------------------------------------ properties
    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def precision(self) -> str:
        """The precision the graphs run at (``"fp32"``, ``"int8"``, ... or per graph; see ``sdk.precision``)."""
        plan = self._backend.precision
        return plan.label if plan is not None else "fp32"

    @property
    def vocabulary(self) -> Vocabulary:
        if self._vocabulary is None:
            raise VocabularyError("no vocabulary set and the bundle has none; call set_vocabulary(names)")
        return self._vocabulary

    @property
    def class_names(self) -> Tuple[str, ...]:
        return self.vocabulary.names

    @property
    def builtin_vocabularies(self) -> Tuple[str, ...]:
        return tuple(self.bundle.vocabularies)

    @property
    def text_graph_runs(self) -> int:
        """How many times the text graph ran (diagnostics: cache hits add none)."""
        return self._store.text_graph_runs

    # ------------------------------------------------------------------ vocabulary
    def set_vocabulary(
        self,
        vocabulary: VocabularySpec,
        text_features: Optional[np.ndarray] = None,
        text_features_clip: Optional[np.ndarray] = None,
    ) -> Vocabulary:
        """Make ``vocabulary`` the default for later calls; returns it.

        ``vocabulary``: a built-in name (``vocab/<name>.npz``), a list of class names (embedded
        at run time, cached), ``"a;b;c"``, a ``.txt``/``.json`` class file (``sdk.classnames``), or a
        :class:`Vocabulary`. With ``text_features`` and ``text_features_clip`` (``[K,D]`` each,
        L2-normalised) the given embeddings are used as they are for the names.
        """
        if (text_features is None) != (text_features_clip is None):
            raise VocabularyError("give both text_features and text_features_clip, or neither")
        if text_features is not None and text_features_clip is not None:
            vocab = self._store.make(self._names(vocabulary), text_features, text_features_clip, "user")
        else:
            vocab = self.resolve_vocabulary(vocabulary)
        self._vocabulary = vocab
        return vocab

    def resolve_vocabulary(self, vocabulary: VocabularySpec) -> Vocabulary:
        """The :class:`Vocabulary` for a spec (see :meth:`set_vocabulary`); ``None`` = the current one."""
        if vocabulary is None:
            return self.vocabulary
        if isinstance(vocabulary, Vocabulary):
            return vocabulary
        if isinstance(vocabulary, str) and vocabulary in self.bundle.vocabularies:
            return self._store.builtin(vocabulary)
        return self._store.embed(self._names(vocabulary))

    def _names(self, vocabulary: VocabularySpec) -> Sequence[str]:
        if isinstance(vocabulary, Vocabulary):
            return vocabulary.names
        if isinstance(vocabulary, os.PathLike):
            return read_class_file(vocabulary)
        if isinstance(vocabulary, str):
            if vocabulary in self.bundle.vocabularies:
                return self._store.builtin(vocabulary).names
            if os.path.isfile(vocabulary):  # before ';': a file's path may contain one
                return read_class_file(vocabulary)
            if ";" in vocabulary:
                return validate_names(split_names(vocabulary))
            raise VocabularyError(
                f"{vocabulary!r} is not a built-in vocabulary "
                f"{sorted(self.bundle.vocabularies)}, a file, or 'a;b;c'; "
                f"pass [{vocabulary!r}] (on the command line '{vocabulary};') for a "
                "one-class vocabulary"
            )
        return validate_names(vocabulary)

    # ------------------------------------------------------------------ inference
    def __call__(
        self,
        image: Union[ImageLike, ImageFeatures],
        vocabulary: VocabularySpec = None,
        return_probs: bool = False,
        mode: Optional[str] = None,
        bgr: Optional[bool] = None,
    ) -> SegmentationResult:
        """Segment one image → :class:`SegmentationResult` (label map at the input's size).

        ``image``: a path, or an ``H×W×3`` uint8 RGB array; gray (``H×W``, ``H×W×1``) is replicated,
        RGBA loses its alpha, uint16 is scaled ``>> 8``, float in [0, 1] by 255; ``bgr=True`` reads
        OpenCV BGR(A) arrays; or :class:`ImageFeatures` (then this is :meth:`classify`).
        ``vocabulary``: for this call only (see :meth:`set_vocabulary`). ``return_probs``: add the
        ``C×H×W`` calibrated class scores. ``mode``: override the mode.

        Exactly :meth:`encode` then :meth:`classify` (in the ``pruned`` mode the encoding is for this
        vocabulary: only the queries it selects go through CLIP).
        """
        if isinstance(image, ImageFeatures):
            return self.classify(image, vocabulary, return_probs, mode)
        timer = Timer()
        mode = self._check_mode(mode or self.mode)
        with timer("total"):
            with timer("vocabulary"):
                vocab = self.resolve_vocabulary(vocabulary)
            features = self._encode(image, mode, bgr, vocab, timer)
            return self._classify(features, vocab, return_probs, timer)

    segment = __call__

    def encode(
        self,
        image: ImageLike,
        mode: Optional[str] = None,
        bgr: Optional[bool] = None,
        vocabulary: VocabularySpec = None,
    ) -> ImageFeatures:
        """Run the image graphs once → :class:`ImageFeatures` for :meth:`classify` with any vocabulary.

        The features stay on the backend's device until ``features.save(path)``. ``vocabulary``
        matters only in the ``pruned`` mode: ``None`` (default) sends every query's crop through
        CLIP, so that any vocabulary classifies exactly as ``seg(image, vocabulary)`` would; a
        vocabulary sends only the queries it selects (cheaper, exact for that vocabulary only).
        """
        timer = Timer()
        mode = self._check_mode(mode or self.mode)
        with timer("total"):
            vocab = None if vocabulary is None else self.resolve_vocabulary(vocabulary)
            features = self._encode(image, mode, bgr, vocab, timer)
        features.timings = timer.ms
        return features

    def classify(
        self,
        features: ImageFeatures,
        vocabulary: VocabularySpec = None,
        return_probs: bool = False,
        mode: Optional[str] = None,
    ) -> SegmentationResult:
        """The result for ``features`` (from :meth:`encode` or :meth:`load_features`) and a vocabulary.

        Runs no image graph; equal to ``seg(image, vocabulary)`` (label map bit for bit). Features of
        another bundle are a :class:`BundleError`; a ``mode`` other than the features' an :class:`OptionError`.
        """
        if not isinstance(features, ImageFeatures):
            raise OptionError(
                f"classify takes ImageFeatures (from encode or load_features), not {type(features).__name__}"
            )
        features.check(self._pipeline.bundle_id, mode)
        features = features.to(self._backend.arrays)
        timer = Timer()
        with timer("total"):
            with timer("vocabulary"):
                vocab = self.resolve_vocabulary(vocabulary)
            return self._classify(features, vocab, return_probs, timer)

    def load_features(self, path: Union[str, os.PathLike]) -> ImageFeatures:
        """:meth:`ImageFeatures.load` checked against this bundle, on this backend's arrays."""
        return ImageFeatures.load(path, bundle_id=self._pipeline.bundle_id, arrays=self._backend.arrays)

    def _encode(
        self, image: ImageLike, mode: str, bgr: Optional[bool], vocab: Optional[Vocabulary], timer: Timer
    ) -> ImageFeatures:
        with timer("preprocess"):
            rgb = to_rgb_uint8(image, self.bgr if bgr is None else bgr)
            prep = prepare(rgb, self.min_size, self.max_size, self.divisor, self.bundle.settings.preprocess.pixel_mean)
        features = self._pipeline.encode(prep, mode, timer, self.precision, vocab)
        if isinstance(image, (str, os.PathLike)):
            features.source, features.name = os.fspath(image), os.path.basename(image)
        return features

    def _classify(
        self, features: ImageFeatures, vocab: Vocabulary, return_probs: bool, timer: Timer
    ) -> SegmentationResult:
        out = self._pipeline.classify(features, vocab, features.mode, return_probs, timer)
        segments = build_segments(out.labels, vocab.names, vocab.seen, out.segment_scores)
        info = {
            "mode": features.mode,
            "backend": self._backend.name,
            "device": self._backend.device,
            "precision": features.precision,
            "vocabulary": vocab.source,
            "resized": list(features.resized),
            "padded": list(features.padded),
            **out.info,
        }
        return SegmentationResult(out.labels, vocab.names, segments, out.probs, timer.ms, info)

    def _check_mode(self, mode: str) -> str:
        """``mode`` when known and the bundle has the graphs it declares (:attr:`sdk.modes.Mode.graphs`)."""
        if mode not in MODES:
            raise SegmenterError(f"unknown mode {mode!r}; choose one of {MODES}")
        missing = [g for g in make_mode(mode).graphs if not self.bundle.manifest["graphs"].get(g)]  # files: Bundle.file
        if missing:
            raise BundleError(
                f"mode {mode!r} needs {', '.join(g + '.onnx' for g in missing)}, which "
                f"{self.bundle.root} lacks; {REEXPORT}"
            )
        return mode

    # ------------------------------------------------------------------ engines
    def build_engines(self, fp16: bool = False, **kwargs: Any) -> None:
        """(Re)build the bundle's TensorRT engines on this machine, then switch to TensorRT.

        Calls ``export.tensorrt.build_engines(bundle_dir, fp16=..., **kwargs)`` (needs TensorRT).
        """
        try:
            from export.tensorrt import build_engines
        except ImportError as e:
            raise BackendError(
                f"building engines needs TensorRT and the checkout's export/ ({e}): in a clone "
                "of zegformer-sdk, pip install -e '.[export,tensorrt]' and run from the clone"
            ) from e
        build_engines(self.bundle.root, fp16=fp16, **kwargs)
        with self._lock:
            self.bundle = Bundle(self.bundle.root)
            self._backend = create_backend(self.bundle, "tensorrt", self.device, self._options)
            self._pipeline = Pipeline(self.bundle, self._backend, **self._pipeline_options)
            self._store.bundle = self.bundle

    def __repr__(self) -> str:
        return (
            f"Segmenter({str(self.bundle.root)!r}, backend={self._backend.name!r}, "
            f"device={self._backend.device!r}, mode={self.mode!r}, classes={len(self._vocabulary or ())})"
        )
