"""What a segmentation call returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np


@dataclass(frozen=True)
class Segment:
    """One class present in the label map.

    ``score`` is the mean, over the segment's pixels, of the class's calibrated score (the
    ``probs`` value): exact when ``probs`` were computed, else evaluated at mask resolution.
    """

    index: int
    name: str
    area: int
    score: float
    seen: bool
    label_map: np.ndarray = field(repr=False, compare=False)

    @property
    def mask(self) -> np.ndarray:
        """``H×W`` bool mask of the segment (computed on access)."""
        return self.label_map == self.index

    def to_dict(self) -> Dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "area": self.area,
            "score": round(float(self.score), 6),
            "seen": self.seen,
        }


@dataclass
class SegmentationResult:
    """A semantic segmentation of one image.

    Attributes:
        label_map: ``H×W`` int32 indices into ``class_names`` (``H×W`` of the *input* image).
        class_names: the vocabulary, in channel order.
        segments: one :class:`Segment` per class present, largest first.
        probs: ``C×H×W`` float32 calibrated class scores (the official ``sem_seg``) or ``None``.
        timings: milliseconds per stage (``preprocess``, ``proposal``, ``crops``, ``clip``, ...,
            ``total``).
        info: mode, backend, resized/padded sizes, number of queries sent to CLIP, ...
    """

    label_map: np.ndarray
    class_names: Tuple[str, ...]
    segments: List[Segment]
    probs: Optional[np.ndarray] = None
    timings: Dict[str, float] = field(default_factory=dict)
    info: Dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> Tuple[int, int]:
        return int(self.label_map.shape[0]), int(self.label_map.shape[1])

    def segment(self, name: str) -> Optional[Segment]:
        """The segment of class ``name``, or ``None`` when absent from the image."""
        return next((s for s in self.segments if s.name == name), None)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready summary (no arrays)."""
        total = float(max(self.label_map.size, 1))
        return {
            "size": list(self.size),
            "num_classes": len(self.class_names),
            "segments": [{**s.to_dict(), "fraction": round(s.area / total, 6)} for s in self.segments],
            "timings_ms": {k: round(v, 3) for k, v in self.timings.items()},
            "info": self.info,
        }


def build_segments(
    label_map: np.ndarray, names: Tuple[str, ...], seen: np.ndarray, scores: np.ndarray
) -> List[Segment]:
    """Segments for every class present; ``scores[k]`` is class k's mean score over its pixels."""
    areas = np.bincount(label_map.ravel(), minlength=len(names))
    present = np.flatnonzero(areas)
    present = present[np.argsort(-areas[present], kind="stable")]
    return [Segment(int(k), names[k], int(areas[k]), float(scores[k]), bool(seen[k]), label_map) for k in present]
