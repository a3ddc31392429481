"""The files written for one segmented image (``segment`` and ``label``), each written atomically.

Per image, in ``out``: ``<stem>.png`` (class indices, 8-bit up to 256 classes, else 16-bit; or
with ``label_png="palette"`` an indexed PNG with the SDK's colours and the class list inside),
``<stem>_overlay.png`` (colours + legend) and, last, ``<stem>.json`` (classes present with area,
score, box and COCO RLE mask, timings). The JSON is the completion mark: an image whose three
files exist is complete, one with only some of them is partial.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np

from .formats import atomic_path, save_label_png, segments_to_rle, write_text_atomic
from .result import SegmentationResult

LABEL_PNG_FORMATS = ("gray", "palette")


def output_files(out: Path, stem: str) -> Dict[str, Path]:
    """The paths one image's outputs take (``label_map``, ``overlay``, ``record``)."""
    return {"label_map": out / f"{stem}.png", "overlay": out / f"{stem}_overlay.png", "record": out / f"{stem}.json"}


def is_complete(out: Path, stem: str) -> bool:
    """True when all of the image's files exist (the record is written last)."""
    return all(p.is_file() for p in output_files(out, stem).values())


def image_record(image_path: str, stem: str, result: SegmentationResult) -> Dict[str, Any]:
    """The ``<stem>.json`` content: the CLI's record, each segment with its ``bbox`` and ``rle``."""
    record = {"image": image_path, "label_map": f"{stem}.png", "class_names": list(result.class_names),
              **result.to_dict()}
    extra = {s["index"]: s for s in segments_to_rle(result)}
    record["segments"] = [{**s, "bbox": extra[s["index"]]["bbox"], "rle": extra[s["index"]]["rle"]}
                          for s in record["segments"]]
    return record


def write_image_outputs(out: Path, stem: str, image_path: str, image: np.ndarray, result: SegmentationResult,
                        alpha: float = 0.5, label_png: str = "gray") -> Dict[str, Any]:
    """Write the label map, the overlay and (last) the record of one image; returns the record."""
    from .visualize import overlay, save_label_map, save_rgb

    files = output_files(out, stem)
    with atomic_path(files["label_map"]) as tmp:
        if label_png == "palette":
            save_label_png(tmp, result.label_map, result.class_names)
        else:
            save_label_map(tmp, result.label_map, len(result.class_names))
    with atomic_path(files["overlay"]) as tmp:
        save_rgb(tmp, overlay(image, result, alpha))
    record = image_record(image_path, stem, result)
    write_text_atomic(files["record"], json.dumps(record, indent=2, ensure_ascii=False))
    return record


def read_record(out: Path, stem: str) -> Optional[Dict[str, Any]]:
    """An image's record, or ``None`` when it is absent or unreadable (treated as not done)."""
    try:
        return json.loads(output_files(out, stem)["record"].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def coco_image_entries(records: Sequence[Dict[str, Any]], file_names: Sequence[str]):
    """``coco_dataset`` image entries from records (``file_name`` as given, sizes from the record)."""
    return [{"file_name": name, "height": r["size"][0], "width": r["size"][1], "label_map": r["label_map"],
             "segments": r["segments"]} for r, name in zip(records, file_names)]
