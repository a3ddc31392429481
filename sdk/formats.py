"""Results in formats other tools read: COCO RLE annotations, palette PNG label maps, ``supervision``.

* :func:`rle_encode` — a boolean mask → COCO compressed RLE (``{"size": [h, w], "counts": str}``,
  column-major runs, the string encoding of ``pycocotools.mask.encode``), in numpy only;
* :func:`segments_to_rle` / :func:`coco_dataset` — one annotation per segment (class present in
  the label map, ``score`` = the segment's mean calibrated score) and the dataset JSON whose
  categories are the vocabulary (category id = class index + 1; 0 is left for "unlabelled");
* :func:`save_label_png` / :func:`load_label_png` — an indexed PNG (pixel = class index) with the
  SDK's palette and the class list in a text chunk, so viewers show colours and readers get indices;
* :func:`to_detections` — a ``supervision.Detections`` (masks, boxes, class ids, confidences).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import ImageError
from .result import SegmentationResult

PathLike = Union[str, os.PathLike]
PNG_CLASSES_KEY = "zegformer:classes"


# ---------------------------------------------------------------------------------------- RLE
def rle_counts(mask: np.ndarray) -> List[int]:
    """Run lengths of a 2-D boolean mask in column-major order, starting with a run of zeros."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return []
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate(([0], change, [flat.size]))).tolist()
    return [0] + counts if flat[0] else counts


def counts_to_string(counts: Sequence[int]) -> str:
    """COCO's compressed RLE string (``rleToString`` in the COCO API's ``maskApi.c``)."""
    out = []
    for i, count in enumerate(counts):
        x = int(count) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            out.append(chr(c + 48 + (0x20 if more else 0)))
    return "".join(out)


def rle_encode(mask: np.ndarray) -> Dict[str, Any]:
    """A 2-D boolean mask → ``{"size": [h, w], "counts": str}`` (what ``pycocotools`` decodes)."""
    if mask.ndim != 2:
        raise ValueError(f"rle_encode needs a 2-D mask, got shape {mask.shape}")
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts_to_string(rle_counts(mask))}


def mask_bbox(mask: np.ndarray) -> List[int]:
    """COCO ``[x, y, width, height]`` of a non-empty mask (``[0, 0, 0, 0]`` when empty)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return [0, 0, 0, 0]
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def segments_to_rle(result: SegmentationResult) -> List[Dict[str, Any]]:
    """One record per segment: index, name, area, score, seen, bbox and its RLE mask."""
    return [
        {**s.to_dict(), "bbox": mask_bbox(m), "rle": rle_encode(m)}
        for s in result.segments
        for m in (result.label_map == s.index,)
    ]


# ---------------------------------------------------------------------------------------- COCO
def coco_categories(class_names: Sequence[str]) -> List[Dict[str, Any]]:
    """COCO categories for a vocabulary: id = class index + 1, in vocabulary order."""
    return [{"id": k + 1, "name": name, "supercategory": ""} for k, name in enumerate(class_names)]


def coco_annotations(segments: Sequence[Dict[str, Any]], image_id: int, first_id: int) -> List[Dict[str, Any]]:
    """COCO annotations (results format plus ``area``/``iscrowd``) from :func:`segments_to_rle` records."""
    return [
        {
            "id": first_id + i,
            "image_id": image_id,
            "category_id": int(s["index"]) + 1,
            "segmentation": s["rle"],
            "area": int(s["area"]),
            "bbox": list(s["bbox"]),
            "iscrowd": 0,
            "score": float(s["score"]),
        }
        for i, s in enumerate(segments)
    ]


def coco_dataset(
    images: Sequence[Dict[str, Any]], class_names: Sequence[str], description: str = "zegformer-sdk labels"
) -> Dict[str, Any]:
    """A COCO dataset dict from per-image records ``{"file_name", "height", "width", "segments"}``.

    Image ids follow the order of ``images`` (1-based); ``segments`` as :func:`segments_to_rle` makes.
    """
    out_images: List[Dict[str, Any]] = []
    annotations: List[Dict[str, Any]] = []
    for image_id, record in enumerate(images, start=1):
        entry = {
            "id": image_id,
            "file_name": record["file_name"],
            "height": int(record["height"]),
            "width": int(record["width"]),
        }
        entry.update({k: v for k, v in record.items() if k in ("label_map",)})
        out_images.append(entry)
        annotations += coco_annotations(record["segments"], image_id, len(annotations) + 1)
    return {
        "info": {"description": description},
        "images": out_images,
        "annotations": annotations,
        "categories": coco_categories(class_names),
    }


# ---------------------------------------------------------------------------------------- PNG
MAX_PNG_CLASSES = 1 << 16  # a 16-bit PNG holds the indices 0..65535


def save_label_png(path: PathLike, label_map: np.ndarray, class_names: Sequence[str]) -> None:
    """An indexed PNG (pixel = class index, palette = the SDK's colours) with the class list inside.

    Above 256 classes the file is 16-bit gray (no palette possible); the class list is kept. What a
    PNG cannot hold — more than 65,536 classes, indices outside the class list, a map that is not
    2-D integers, names that are not strings — is an :class:`ImageError`, never a wrapped value.
    """
    from PIL import Image, PngImagePlugin

    from .visualize import palette

    label_map = np.asarray(label_map)
    names = list(class_names) if not isinstance(class_names, (str, bytes)) else None
    if names is None or not all(isinstance(n, str) for n in names):
        raise ImageError("class_names must be a list of strings")
    k = len(names)
    if k == 0 or k > MAX_PNG_CLASSES:
        raise ImageError(
            f"a label PNG holds 1 to {MAX_PNG_CLASSES} classes (16 bits), got {k}; save the label map as .npy instead"
        )
    if label_map.ndim != 2 or label_map.dtype.kind not in "iu" or 0 in label_map.shape:
        raise ImageError(f"a label map is a non-empty 2-D integer array, got {label_map.dtype} {label_map.shape}")
    if label_map.min() < 0 or label_map.max() >= max(k, 1):
        raise ImageError(
            f"label map values {label_map.min()}..{label_map.max()} are outside 0..{k - 1} (the {k} class names)"
        )
    meta = PngImagePlugin.PngInfo()
    meta.add_itxt(PNG_CLASSES_KEY, json.dumps(names, ensure_ascii=False))
    if k <= 256:
        image = Image.fromarray(label_map.astype(np.uint8))  # mode L; a palette makes it P
        image.putpalette(palette(k).ravel().tolist())
    else:
        image = Image.fromarray(label_map.astype(np.uint16))  # mode I;16
    image.save(os.fspath(path), format="PNG", pnginfo=meta)


def load_label_png(path: PathLike) -> Tuple[np.ndarray, Optional[List[str]]]:
    """``(label_map int32, class_names or None)`` from a label PNG (indexed, 8- or 16-bit gray).

    An unreadable file, a map of more than one channel, or a class-list chunk that is not a JSON
    list of strings covering every index is an :class:`ImageError` naming the file.
    """
    from PIL import Image

    from .preprocess import check_pixels

    try:
        with Image.open(os.fspath(path)) as image:
            check_pixels(image.height, image.width, f"label PNG {path}")
            names = image.info.get(PNG_CLASSES_KEY)
            labels = np.asarray(image).astype(np.int32)
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001 — PIL raises OSError, SyntaxError, ValueError, ... for broken files
        raise ImageError(f"cannot read label PNG {path}: {type(e).__name__}: {' '.join(str(e).split())[:200]}") from e
    if labels.ndim != 2:
        raise ImageError(f"{path} is not a label map (shape {labels.shape}); expected one channel of indices")
    return labels, (_class_list(names, path, labels) if names is not None else None)


def _class_list(text: Any, path: PathLike, labels: np.ndarray) -> List[str]:
    try:
        names = json.loads(text)
    except (TypeError, ValueError, RecursionError) as e:
        raise ImageError(
            f"label PNG {path}: its {PNG_CLASSES_KEY!r} chunk is not JSON ({e}); "
            "it was not written by save_label_png, or is damaged"
        ) from e
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ImageError(f"label PNG {path}: its {PNG_CLASSES_KEY!r} chunk is not a JSON list of class names")
    if labels.size and labels.max() >= len(names):
        raise ImageError(f"label PNG {path} holds index {labels.max()} but its class list has {len(names)} names")
    return names


# ---------------------------------------------------------------------------------------- supervision
def to_detections(result: SegmentationResult):
    """A ``supervision.Detections``: one detection per segment (mask, box, class id, confidence).

    ``data["class_name"]`` holds the names; needs ``pip install supervision``.
    """
    try:
        import supervision as sv
    except ImportError as e:
        raise ImportError("to_detections needs supervision: pip install 'zegformer-sdk[coco]'") from e
    h, w = result.size
    n = len(result.segments)
    masks = np.zeros((n, h, w), bool)
    boxes = np.zeros((n, 4), np.float32)
    for i, s in enumerate(result.segments):
        masks[i] = result.label_map == s.index
        x, y, bw, bh = mask_bbox(masks[i])
        boxes[i] = (x, y, x + bw, y + bh)
    return sv.Detections(
        xyxy=boxes,
        mask=masks,
        class_id=np.array([s.index for s in result.segments], dtype=int),
        confidence=np.array([s.score for s in result.segments], dtype=np.float32),
        data={"class_name": np.array([s.name for s in result.segments], dtype=object)},
    )
