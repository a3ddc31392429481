"""Colour overlays with a legend, and label-map files (OpenCV drawing, RGB in / BGR out to files)."""

from __future__ import annotations

import colorsys
import os
from typing import Union

import numpy as np

from .result import SegmentationResult

LEGEND_ROW = 22
LEGEND_WIDTH = 220


def palette(num_classes: int) -> np.ndarray:
    """``[K,3]`` uint8 RGB colours: well-separated hues (golden-ratio steps), stable per index."""
    colours = np.empty((num_classes, 3), np.uint8)
    for k in range(num_classes):
        h = (k * 0.618033988749895) % 1.0
        s = 0.65 + 0.35 * ((k // 7) % 2)
        v = 0.95 - 0.25 * ((k // 3) % 2)
        colours[k] = [int(round(c * 255)) for c in colorsys.hsv_to_rgb(h, s, v)]
    return colours


def colorize(label_map: np.ndarray, num_classes: int) -> np.ndarray:
    """``H×W`` labels → ``H×W×3`` uint8 RGB colours."""
    return palette(max(num_classes, int(label_map.max()) + 1))[label_map]


def overlay(
    image: np.ndarray, result: SegmentationResult, alpha: float = 0.5, legend: bool = True, fixed_height: bool = False
) -> np.ndarray:
    """The RGB image blended with the class colours, with a legend of the classes present on the right.

    ``fixed_height`` keeps the image height (the legend lists what fits): for video frames.
    """
    colours = colorize(result.label_map, len(result.class_names))
    blended = (image.astype(np.float32) * (1 - alpha) + colours.astype(np.float32) * alpha + 0.5).astype(np.uint8)
    if not legend:
        return blended
    max_rows = max(1, (image.shape[0] - 8) // LEGEND_ROW - 1) if fixed_height else 40
    return draw_legend(blended, result, max_rows, fixed_height)


def draw_legend(
    image: np.ndarray, result: SegmentationResult, max_rows: int = 40, fixed_height: bool = False
) -> np.ndarray:
    """Append a white panel listing each present class: colour swatch, name, share of pixels."""
    import cv2

    h, w = image.shape[:2]
    rows = result.segments[:max_rows]
    panel_h = h if fixed_height else max(h, LEGEND_ROW * (len(rows) + 1))
    canvas = np.full((panel_h, w + LEGEND_WIDTH, 3), 255, np.uint8)
    canvas[:h, :w] = image
    colours = palette(len(result.class_names))
    total = float(result.label_map.size)
    for i, seg in enumerate(rows):
        y = 6 + i * LEGEND_ROW
        cv2.rectangle(canvas, (w + 8, y), (w + 26, y + 16), tuple(int(c) for c in colours[seg.index]), -1)
        text = f"{seg.name[:20]} {100 * seg.area / total:.1f}%"
        cv2.putText(canvas, text, (w + 32, y + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    if len(result.segments) > max_rows:
        cv2.putText(
            canvas,
            f"... {len(result.segments) - max_rows} more",
            (w + 8, 6 + max_rows * LEGEND_ROW + 13),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.42,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
    return canvas


def save_label_map(path: Union[str, os.PathLike], label_map: np.ndarray, num_classes: int) -> None:
    """PNG of class indices: 8-bit when they fit (≤ 256 classes), else 16-bit."""
    import cv2

    dtype = np.uint8 if num_classes <= 256 else np.uint16
    if not cv2.imwrite(os.fspath(path), label_map.astype(dtype)):
        raise OSError(f"cannot write {path}")


def save_rgb(path: Union[str, os.PathLike], image: np.ndarray) -> None:
    import cv2

    if not cv2.imwrite(os.fspath(path), np.ascontiguousarray(image[..., ::-1])):
        raise OSError(f"cannot write {path}")
