"""Which files are images: the suffixes the commands read, and folders listed into image paths."""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def find_images(inputs: Sequence[Path], recursive: bool = False) -> List[Path]:
    """Image files among ``inputs``: files as given, directories listed (sorted, by suffix)."""
    found: List[Path] = []
    for p in inputs:
        if p.is_dir():
            pattern = "**/*" if recursive else "*"
            found += sorted(f for f in p.glob(pattern) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            found.append(p)
    return found
