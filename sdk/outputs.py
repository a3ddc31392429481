"""Where results are written: checked folders, collision-free names, atomic files, the per-image set.

Rules: ``--out`` must be a directory we can write to and not a folder we read images from; an
output never replaces an input or another output of the same run; an existing file is
replaced only when it is one of ours from an earlier run (its ``<stem>.json`` record says so),
otherwise the name gets a ``_1``, ``_2``... suffix and the log says which. Every file is written
to a temporary name and renamed, so an interrupted run leaves no half-written output.

Per image, in ``out``: ``<stem>.png`` (class indices, 8-bit up to 256 classes, else 16-bit; or
with ``label_png="palette"`` an indexed PNG with the SDK's colours and the class list inside),
``<stem>_overlay.png`` (colours + legend) and, last, ``<stem>.json`` (classes present with area,
score, box and COCO RLE mask, timings). The JSON is the completion mark: an image whose three
files exist is complete, one with only some of them is partial.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set

import numpy as np

from .errors import SegmenterError
from .formats import atomic_path, save_label_png, segments_to_rle, write_text_atomic
from .result import SegmentationResult

log = logging.getLogger("sdk")
SUFFIXES = (".png", "_overlay.png", ".json")


class OutputError(SegmenterError):
    """``--out`` cannot be used (not a directory, not writable, an input folder)."""


def _real(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()


def check_out_dir(out: Path, inputs: Sequence[Path], recursive: bool) -> None:
    """Create ``out`` (or fail in one line) and refuse it when it is a folder of input images."""
    if "\x00" in str(out):
        raise OutputError(f"--out {out!r} contains a NUL character")
    if os.path.lexists(out) and not out.is_dir():
        raise OutputError(f"--out {out} exists and is not a directory; choose a folder")
    real_out = _real(out)
    for p in inputs:
        if p.is_dir():
            real_in = _real(p)
            if real_out == real_in or (recursive and real_in in real_out.parents):
                raise OutputError(f"--out {out} is the input folder {p} (or inside it with --recursive); "
                                  "outputs would mix with, and could replace, the images: choose another folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create --out {out}: {e.strerror or e}") from e
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"--out {out} is not writable")


def _ours(out: Path, stem: str) -> bool:
    """True when ``<stem>.json`` in ``out`` is the record of an earlier run (so its files may be replaced)."""
    try:
        record = json.loads((out / f"{stem}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("label_map") == f"{stem}.png"


def plan_outputs(paths: Sequence[Path], out: Path) -> List[str]:
    """One output stem per input: its files collide with no input, no other output, no foreign file."""
    inputs: Set[Path] = {_real(p) for p in paths}
    taken: Set[str] = set()
    stems: List[str] = []
    for p in paths:
        base = p.stem or "image"
        for n in range(0, 10000):
            stem = base if n == 0 else f"{base}_{n}"
            names = [stem + s for s in SUFFIXES]
            if any(x in taken for x in names) or any(_real(out / x) in inputs for x in names):
                continue
            existing = [x for x in names if os.path.lexists(out / x)]
            if existing and not _ours(out, stem):
                continue
            break
        if stem != base:
            log.warning("%s: outputs named %s.* (%s.* would replace an input, another output or a file "
                        "that is not ours)", p, stem, base)
        taken.update(names)
        stems.append(stem)
    return stems


def video_output(out: Path, name: str, source: Optional[Path]) -> Path:
    """``<out>/<name>_overlay.mp4``, suffixed when that is the input video itself."""
    path = out / f"{name}_overlay.mp4"
    n = 0
    while source is not None and _real(path) == _real(source):
        n += 1
        path = out / f"{name}_overlay_{n}.mp4"
    return path


LABEL_PNG_FORMATS = ("gray", "palette")


def output_files(out: Path, stem: str) -> Dict[str, Path]:
    """The paths one image's outputs take (``label_map``, ``overlay``, ``record``)."""
    return {"label_map": out / f"{stem}.png", "overlay": out / f"{stem}_overlay.png", "record": out / f"{stem}.json"}


def is_complete(out: Path, stem: str) -> bool:
    """True when all of the image's files exist (the record is written last)."""
    return all(p.is_file() for p in output_files(out, stem).values())


def image_record(image_path: str, stem: str, result: SegmentationResult) -> Dict[str, Any]:
    """The ``<stem>.json`` content: the CLI's record, each segment with its ``bbox`` and ``rle``."""
    record = {"image": image_path, "label_map": f"{stem}.png", "overlay": f"{stem}_overlay.png",
              "class_names": list(result.class_names),
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
