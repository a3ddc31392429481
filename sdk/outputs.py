"""Where results are written: checked folders, collision-free names, and the per-image output formats.

Rules: ``--out`` must be a directory we can write to and not a folder we read images from; an
output never replaces an input or another output of the same run; an existing file is
replaced only when it is one of ours from an earlier run (its ``<stem>.json`` record says so),
otherwise the name gets a ``_1``, ``_2``... suffix and the log says which. What a command does
with an earlier run's outputs is its own rule (``segment``: refuse unless ``--overwrite`` or
``--skip-existing``; ``label``: resume). Every file is written atomically (:mod:`sdk.atomicio`).

Per image, in ``out``, one file per entry of :data:`OUTPUTS` (the one registry ``segment``,
``label`` and the demo write through): ``<stem>.png`` (class indices, 8-bit up to 256 classes,
else 16-bit; or with ``label_png="palette"`` an indexed PNG with the SDK's colours and the class
list inside), ``<stem>_overlay.png`` (colours + legend) and, last, ``<stem>.json`` — the record:
classes present with area, score, box and COCO RLE mask, timings, and the names of the other
files. The record is the completion mark: an image whose files all exist is complete, one with
only some of them is partial.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set

import numpy as np

from .atomicio import atomic_path
from .errors import SegmenterError
from .formats import save_label_png, segments_to_rle
from .result import SegmentationResult

log = logging.getLogger("sdk")


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
                raise OutputError(
                    f"--out {out} is the input folder {p} (or inside it with --recursive); "
                    "outputs would mix with, and could replace, the images: choose another folder"
                )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create --out {out}: {e.strerror or e}") from e
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"--out {out} is not writable")


# ---------------------------------------------------------------------------------------- the formats
@dataclass(frozen=True)
class OutputContext:
    """What an output format is written from: one image, its result, its record and the run's options."""

    image: np.ndarray
    result: SegmentationResult
    record: Dict[str, Any]
    options: Mapping[str, Any]  # alpha, label_png (see :func:`sdk.commands.options.add_output_arguments`)


@dataclass(frozen=True)
class ImageOutput:
    """One per-image output file: ``<stem><suffix>``, named in the record under ``key``."""

    key: str
    suffix: str
    write: Callable[[Path, OutputContext], None]  # writes the file at the given (temporary) path


def _label_gray(path: Path, ctx: OutputContext) -> None:
    from .visualize import save_label_map

    save_label_map(path, ctx.result.label_map, len(ctx.result.class_names))


def _label_palette(path: Path, ctx: OutputContext) -> None:
    save_label_png(path, ctx.result.label_map, ctx.result.class_names)


LABEL_PNG_WRITERS: Dict[str, Callable[[Path, OutputContext], None]] = {"gray": _label_gray, "palette": _label_palette}
LABEL_PNG_FORMATS = tuple(LABEL_PNG_WRITERS)


def _label_map(path: Path, ctx: OutputContext) -> None:
    LABEL_PNG_WRITERS[ctx.options.get("label_png", "gray")](path, ctx)


def _overlay(path: Path, ctx: OutputContext) -> None:
    from .visualize import overlay, save_rgb

    save_rgb(path, overlay(ctx.image, ctx.result, float(ctx.options.get("alpha", 0.5))))


def _record(path: Path, ctx: OutputContext) -> None:
    path.write_text(json.dumps(ctx.record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# in writing order; the record stays last (it marks the image complete)
OUTPUTS = (
    ImageOutput("label_map", ".png", _label_map),
    ImageOutput("overlay", "_overlay.png", _overlay),
    ImageOutput("record", ".json", _record),
)
SUFFIXES = tuple(o.suffix for o in OUTPUTS)


def output_files(out: Path, stem: str) -> Dict[str, Path]:
    """The paths one image's outputs take, by key (``label_map``, ``overlay``, ``record``)."""
    return {o.key: out / f"{stem}{o.suffix}" for o in OUTPUTS}


def image_record(image_path: str, stem: str, result: SegmentationResult) -> Dict[str, Any]:
    """The ``<stem>.json`` content: file names, classes, each segment with its ``bbox`` and ``rle``, timings."""
    record = {
        "image": image_path,
        **{o.key: f"{stem}{o.suffix}" for o in OUTPUTS if o.key != "record"},
        "class_names": list(result.class_names),
        **result.to_dict(),
    }
    extra = {s["index"]: s for s in segments_to_rle(result)}
    record["segments"] = [
        {**s, "bbox": extra[s["index"]]["bbox"], "rle": extra[s["index"]]["rle"]} for s in record["segments"]
    ]
    return record


def write_image_outputs(
    out: Path,
    stem: str,
    image_path: str,
    image: np.ndarray,
    result: SegmentationResult,
    alpha: float = 0.5,
    label_png: str = "gray",
) -> Dict[str, Any]:
    """Write every output of one image (atomically, the record last); returns the record."""
    if label_png not in LABEL_PNG_WRITERS:
        raise ValueError(f"label_png={label_png!r}: choose one of {LABEL_PNG_FORMATS}")
    ctx = OutputContext(image, result, image_record(image_path, stem, result), {"alpha": alpha, "label_png": label_png})
    for fmt in OUTPUTS:
        with atomic_path(out / f"{stem}{fmt.suffix}") as tmp:
            fmt.write(tmp, ctx)
    return ctx.record


def is_complete(out: Path, stem: str) -> bool:
    """True when all of the image's files exist (the record is written last)."""
    return all(p.is_file() for p in output_files(out, stem).values())


def read_record(out: Path, stem: str) -> Optional[Dict[str, Any]]:
    """An image's record, or ``None`` when it is absent or unreadable (treated as not done)."""
    try:
        return json.loads(output_files(out, stem)["record"].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def coco_image_entries(records: Sequence[Dict[str, Any]], file_names: Sequence[str]):
    """``coco_dataset`` image entries from records (``file_name`` as given, sizes from the record)."""
    return [
        {
            "file_name": name,
            "height": r["size"][0],
            "width": r["size"][1],
            "label_map": r["label_map"],
            "segments": r["segments"],
        }
        for r, name in zip(records, file_names)
    ]


# ---------------------------------------------------------------------------------------- names in --out
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
            log.warning(
                "%s: outputs named %s.* (%s.* would replace an input, another output or a file that is not ours)",
                p,
                stem,
                base,
            )
        taken.update(names)
        stems.append(stem)
    return stems


def existing_outputs(out: Path, stem: str) -> List[Path]:
    """The files of ``stem`` already in ``out`` (after :func:`plan_outputs`: an earlier run's)."""
    return [p for p in output_files(out, stem).values() if os.path.lexists(p)]


def video_output(
    out: Path, name: str, source: Optional[Path], overwrite: bool = False, skip_existing: bool = False
) -> Optional[Path]:
    """``<out>/<name>_overlay.mp4`` (suffixed when that is the input video itself); ``None``: skip it.

    An existing one is an earlier run's: an :class:`OutputError` unless ``overwrite`` (replace it) or
    ``skip_existing`` (keep it; ``None`` is returned).
    """
    path = out / f"{name}_overlay.mp4"
    n = 0
    while source is not None and _real(path) == _real(source):
        n += 1
        path = out / f"{name}_overlay_{n}.mp4"
    if os.path.lexists(path) and not overwrite:
        if skip_existing:
            log.warning("keeping %s from an earlier run (--skip-existing)", path)
            return None
        raise OutputError(
            f"{path} exists (an earlier run's?): pass --overwrite to replace it, --skip-existing "
            "to keep it, or choose another --out"
        )
    return path
