"""Training augmentation, as the official MaskFormer/ZegFormer semantic dataset mapper.

Order: random shortest-side resize (sizes ``scale × base`` for the listed scales, longest side
capped) → random crop (``RandomCrop_CategoryAreaConstraint``) → SSD colour jitter
(``ColorAugSSDTransform``) → horizontal flip (p = 0.5) → pad bottom/right to the crop size (image
with 128, label with ignore). Every random draw comes from the ``np.random.Generator`` passed in,
so a sample's augmentation is a pure function of its seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import cv2
import numpy as np
from PIL import Image

from .base import IGNORE

PAD_VALUE = 128


@dataclass
class AugmentConfig:
    crop_size: int = 640
    scales: Tuple[float, ...] = tuple(x / 10 for x in range(5, 16))  # official: 0.5..1.5 × 640
    max_size: int = 2560
    single_category_max_area: float = 1.0
    color_aug: bool = True
    flip: bool = True

    @property
    def min_sizes(self) -> Tuple[int, ...]:
        return tuple(int(s * self.crop_size) for s in self.scales)


def shortest_edge_shape(h: int, w: int, short: int, max_size: int) -> Tuple[int, int]:
    """detectron2's ``ResizeShortestEdge.get_output_shape``: ``(new_h, new_w)`` (the SDK's definition)."""
    from sdk.preprocess import output_shape

    return output_shape(h, w, short, max_size)


def resize_image(image: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a uint8 image with PIL (what detectron2 uses for uint8 images)."""
    if image.shape[:2] == tuple(shape):
        return image
    return np.asarray(Image.fromarray(image).resize((shape[1], shape[0]), Image.BILINEAR))


def resize_label(label: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """Nearest resize as ``torch.nn.functional.interpolate(mode='nearest')``: src = floor(dst·in/out)."""
    h, w = label.shape
    ys = np.minimum((np.arange(shape[0], dtype=np.float32) * np.float32(h / shape[0])).astype(np.int64), h - 1)
    xs = np.minimum((np.arange(shape[1], dtype=np.float32) * np.float32(w / shape[1])).astype(np.int64), w - 1)
    return label[ys[:, None], xs[None, :]]


def random_crop_box(
    label: np.ndarray, crop: int, max_area: float, rng: np.random.Generator
) -> Tuple[int, int, int, int]:
    """``(y0, x0, ch, cw)``; with ``max_area < 1`` retry up to 10 times until no category covers
    ``max_area`` or more of the crop's non-ignored pixels (and at least two categories are present)."""
    h, w = label.shape
    ch, cw = min(h, crop), min(w, crop)

    def draw():
        return int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))

    y0, x0 = draw()
    if max_area < 1.0:
        for _ in range(10):
            values, counts = np.unique(label[y0 : y0 + ch, x0 : x0 + cw], return_counts=True)
            counts = counts[values != IGNORE]
            if len(counts) > 1 and counts.max() < counts.sum() * max_area:
                break
            y0, x0 = draw()
    return y0, x0, ch, cw


def _convert(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def color_aug_ssd(
    image: np.ndarray,
    rng: np.random.Generator,
    brightness: float = 32,
    contrast=(0.5, 1.5),
    saturation=(0.5, 1.5),
    hue: int = 18,
) -> np.ndarray:
    """SSD photometric distortion on an RGB uint8 image (each step with probability 0.5).

    Brightness; then either contrast → saturation → hue or saturation → hue → contrast;
    saturation and hue in OpenCV's HSV of the BGR image (hue wraps at 180).
    """
    img = np.ascontiguousarray(image[:, :, ::-1])  # the official transform works in BGR

    def do_contrast(x):
        return _convert(x, alpha=rng.uniform(*contrast)) if rng.integers(2) else x

    def do_saturation(x):
        if rng.integers(2):
            hsv = cv2.cvtColor(x, cv2.COLOR_BGR2HSV)
            hsv[:, :, 1] = _convert(hsv[:, :, 1], alpha=rng.uniform(*saturation))
            x = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        return x

    def do_hue(x):
        if rng.integers(2):
            hsv = cv2.cvtColor(x, cv2.COLOR_BGR2HSV)
            hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + int(rng.integers(-hue, hue + 1))) % 180
            x = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        return x

    if rng.integers(2):
        img = _convert(img, beta=rng.uniform(-brightness, brightness))
    steps = (do_contrast, do_saturation, do_hue) if rng.integers(2) else (do_saturation, do_hue, do_contrast)
    for step in steps:
        img = step(img)
    return np.ascontiguousarray(img[:, :, ::-1])


def pad_to(image: np.ndarray, label: np.ndarray, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Pad bottom/right to ``size × size`` (image with 128, label with ``IGNORE``)."""
    h, w = label.shape
    ph, pw = max(size - h, 0), max(size - w, 0)
    if ph == 0 and pw == 0:
        return image, label
    image = np.pad(image, ((0, ph), (0, pw), (0, 0)), constant_values=PAD_VALUE)
    label = np.pad(label, ((0, ph), (0, pw)), constant_values=IGNORE)
    return image, label


def augment(
    image: np.ndarray, label: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator
) -> Tuple[np.ndarray, np.ndarray]:
    """The whole training pipeline on one ``(RGB uint8 image, int32 label)``; output is
    ``crop_size × crop_size``."""
    short = int(cfg.min_sizes[int(rng.integers(len(cfg.min_sizes)))])
    shape = shortest_edge_shape(*label.shape, short, cfg.max_size)
    image, label = resize_image(image, shape), resize_label(label, shape)
    y0, x0, ch, cw = random_crop_box(label, cfg.crop_size, cfg.single_category_max_area, rng)
    image, label = image[y0 : y0 + ch, x0 : x0 + cw], label[y0 : y0 + ch, x0 : x0 + cw]
    if cfg.color_aug:
        image = color_aug_ssd(image, rng)
    if cfg.flip and rng.integers(2):
        image, label = image[:, ::-1], label[:, ::-1]
    image, label = pad_to(np.ascontiguousarray(image), np.ascontiguousarray(label), cfg.crop_size)
    return image, label


def class_masks(label: np.ndarray, class_map: Sequence[int] | np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per-class binary masks of a label map: ``(labels [N] int64, masks [N,H,W] bool)``.

    ``class_map`` maps dataset class indices to training indices (``IGNORE`` for classes that do
    not train, e.g. unseen ones); ignored pixels belong to no mask.
    """
    class_map = np.asarray(class_map, np.int64)
    mapped = np.where(label >= 0, class_map[np.clip(label, 0, None)], IGNORE)
    classes = np.unique(mapped)
    classes = classes[classes != IGNORE]
    masks = mapped[None] == classes[:, None, None]
    return classes.astype(np.int64), masks
