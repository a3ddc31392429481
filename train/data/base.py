"""A semantic segmentation dataset: image/label file pairs, class names, seen flags, label decoding.

Labels come out as ``int32`` contiguous class indices ``0..K-1`` in the dataset's class order,
with :data:`IGNORE` (−1) for pixels that do not count. How stored values map to indices is the
dataset's ``lut`` (a lookup table, e.g. raw COCO-Stuff ids → trainIds) or, without one, the identity
with ``ignore_value`` as ignore. Any other stored value is a :class:`LabelRangeError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Set, Tuple

import numpy as np

from .errors import LabelRangeError, MissingFileError
from .io import check_same_size, read_image, read_label

IGNORE = -1
NOT_A_CLASS = -2  # lut entry for stored values that are an error


@dataclass(frozen=True)
class Sample:
    image: Path
    label: Path

    @property
    def name(self) -> str:
        return self.image.stem


class SegmentationDataset:
    """Pairs of (image, label image) with the class list they are labelled with."""

    def __init__(
        self,
        name: str,
        samples: Sequence[Sample],
        class_names: Sequence[str],
        seen: Sequence[bool],
        ignore_values: Sequence[int] = (255,),
        lut: Optional[np.ndarray] = None,
    ):
        if len(class_names) != len(seen):
            raise ValueError("class_names and seen differ in length")
        self.name = name
        self.samples = list(samples)
        self.class_names = list(class_names)
        self.seen = [bool(s) for s in seen]
        self.ignore_values: Set[int] = set(int(v) for v in ignore_values)
        self.lut = lut

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, {len(self)} images, {self.num_classes} classes, "
            f"{sum(self.seen)} seen)"
        )

    def load(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(image H×W×3 uint8 RGB, label H×W int32 with IGNORE)`` of sample ``index``."""
        s = self.samples[index]
        image = read_image(s.image)
        raw = read_label(s.label)
        check_same_size(image, raw, s.image, s.label)
        return image, self.decode(raw, s.label)

    def decode(self, raw: np.ndarray, path: Path = Path("<array>")) -> np.ndarray:
        """Stored label values → contiguous indices (``IGNORE`` for ignore values)."""
        raw = raw.astype(np.int64, copy=False)
        ignore = np.isin(raw, list(self.ignore_values))
        if self.lut is None:
            bad = ~ignore & ((raw < 0) | (raw >= self.num_classes))
            out = raw.astype(np.int32)
        else:
            inside = (raw >= 0) & (raw < len(self.lut))
            out = np.full(raw.shape, NOT_A_CLASS, np.int32)
            out[inside] = self.lut[raw[inside]]
            bad = ~ignore & (out == NOT_A_CLASS)
        if bad.any():
            values = np.unique(raw[bad])[:10].tolist()
            raise LabelRangeError(
                f"{path}: label values {values} are neither class indices of dataset {self.name!r} "
                f"({self.num_classes} classes, 0..{self.num_classes - 1}) nor an ignore value "
                f"{sorted(self.ignore_values)}; remap the label image to class indices in classes.txt "
                "order (or add the missing classes)"
            )
        out[ignore] = IGNORE
        return out

    def seen_map(self) -> np.ndarray:
        """Class index → index among the seen classes, or ``IGNORE`` for unseen classes."""
        out = np.full(self.num_classes, IGNORE, np.int32)
        seen_idx = [i for i, s in enumerate(self.seen) if s]
        out[seen_idx] = np.arange(len(seen_idx), dtype=np.int32)
        return out

    @property
    def seen_names(self) -> List[str]:
        return [n for n, s in zip(self.class_names, self.seen) if s]


def pair_files(
    image_dir: Path, label_dir: Path, image_exts: Sequence[str], label_exts: Sequence[str], what: str
) -> List[Sample]:
    """Match images to label images by file stem; every image needs its label."""
    if not image_dir.is_dir():
        raise MissingFileError(f"{what}: image folder not found: {image_dir}")
    if not label_dir.is_dir():
        raise MissingFileError(f"{what}: label folder not found: {label_dir}")
    labels = {p.stem: p for p in label_dir.iterdir() if p.suffix.lower() in label_exts}
    images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in image_exts)
    if not images:
        raise MissingFileError(f"{what}: no images ({', '.join(image_exts)}) in {image_dir}")
    missing = [p.name for p in images if p.stem not in labels]
    if missing:
        raise MissingFileError(
            f"{what}: {len(missing)} image(s) have no label image in {label_dir} "
            f"(same stem, {'/'.join(label_exts)}), e.g. {missing[:5]}"
        )
    return [Sample(p, labels[p.stem]) for p in images]
