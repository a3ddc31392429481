"""Reading images and label images (8-bit, 16-bit and palette PNG, TIFF) with clear errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps

from .errors import MissingFileError, SizeMismatchError

PathLike = Union[str, os.PathLike]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
LABEL_EXTENSIONS = (".png", ".tif", ".tiff")


def read_image(path: PathLike) -> np.ndarray:
    """``H×W×3`` uint8 RGB, EXIF orientation applied (as detectron2's ``read_image``)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"image not found: {path}")
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def read_label(path: PathLike) -> np.ndarray:
    """The stored label values ``H×W`` (uint8 or uint16; palette PNGs give their indices)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(
            f"label image not found: {path} (every image needs a label image with the same file stem)"
        )
    with Image.open(path) as im:
        if im.mode in ("RGB", "RGBA"):
            raise SizeMismatchError(
                f"{path} is a colour image ({im.mode}); label images must be "
                "single-channel PNGs of class indices (8- or 16-bit)"
            )
        arr = np.asarray(im)
    if arr.ndim != 2:
        raise SizeMismatchError(f"{path}: label image must be 2-D, got shape {arr.shape}")
    if arr.dtype not in (np.uint8, np.uint16):
        arr = arr.astype(np.int64)
    return arr


def check_same_size(image: np.ndarray, label: np.ndarray, image_path: PathLike, label_path: PathLike) -> None:
    if image.shape[:2] != label.shape[:2]:
        raise SizeMismatchError(
            f"label {label_path} is {label.shape[1]}×{label.shape[0]} but its image {image_path} is "
            f"{image.shape[1]}×{image.shape[0]} (width×height): the label must be pixel-aligned with "
            "the image (re-export it at the image's size, nearest-neighbour)"
        )


def ignore_value_for(num_classes: int) -> int:
    """The stored ignore value: 255 in 8-bit label images (≤ 255 classes), 65535 in 16-bit ones."""
    return 255 if num_classes <= 255 else 65535


def write_label(path: PathLike, label: np.ndarray, num_classes: int) -> None:
    """Write class indices (``-1`` = ignore) as an 8-bit PNG (≤ 255 classes) or a 16-bit PNG."""
    label = np.asarray(label)
    if label.size and (label.min() < -1 or label.max() >= num_classes):
        raise ValueError(f"label values must lie in -1..{num_classes - 1}")
    ignore = ignore_value_for(num_classes)
    out = np.where(label < 0, ignore, label).astype(np.uint8 if ignore == 255 else np.uint16)
    Image.fromarray(out).save(path)
