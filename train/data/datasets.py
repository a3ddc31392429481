"""The official datasets (COCO-Stuff 171, PASCAL VOC 2012, ADE20K-847) and a generic folder format.

Folder format (what ``train.data.synthetic`` writes and what users' own data should look like)::

    ROOT/classes.txt          one class name per line, in label-index order ("a, b" = synonyms)
    ROOT/unseen.txt           optional: names (from classes.txt) held out of training
    ROOT/<split>/images/*.jpg|png
    ROOT/<split>/labels/*.png  same stem; class indices 0..K-1, 255 = ignore (8-bit),
                               or 16-bit PNG with 65535 = ignore when K > 255

(``ROOT/images`` + ``ROOT/labels`` without split folders also works.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..classes import RESOURCES, dataset_classes
from .base import IGNORE, NOT_A_CLASS, SegmentationDataset, pair_files
from .errors import DatasetError, MissingFileError
from .io import IMAGE_EXTENSIONS, LABEL_EXTENSIONS

BUILTIN = ("coco-stuff", "voc", "ade-847")


def _first_dir(root: Path, candidates: Sequence[str], what: str) -> Path:
    for c in candidates:
        if (root / c).is_dir():
            return root / c
    raise MissingFileError(
        f"{what}: none of {[str(root / c) for c in candidates]} exists; "
        "set data.root to the dataset folder (see train/data/datasets.py)"
    )


def _lut(pairs: Sequence[Tuple[int, int]], size: int) -> np.ndarray:
    lut = np.full(size, NOT_A_CLASS, np.int32)
    for raw, idx in pairs:
        lut[raw] = idx
    return lut


def coco_stuff(root: Path, split: str) -> SegmentationDataset:
    """COCO-Stuff 171 from the raw ``stuffthingmaps_trainval2017`` PNGs (0-based COCO-Stuff ids).

    ``root`` holds ``{train,val}2017/`` (or ``images/{split}2017``) and
    ``stuffthingmaps_trainval2017/{split}2017/`` (or ``stuffthingmaps/``).
    """
    with open(RESOURCES / "cocostuff_171_classes.json", encoding="utf-8") as f:
        table = json.load(f)["classes"]
    cs = dataset_classes("coco-stuff")
    sub = f"{split}2017"
    images = _first_dir(root, [sub, f"images/{sub}"], "COCO-Stuff images")
    labels = _first_dir(
        root,
        [f"stuffthingmaps_trainval2017/{sub}", f"stuffthingmaps/{sub}", f"annotations/{sub}"],
        "COCO-Stuff stuffthingmaps",
    )
    lut = _lut([(c["id"], c["trainId"]) for c in table], 256)
    return SegmentationDataset(
        "coco-stuff",
        pair_files(images, labels, IMAGE_EXTENSIONS, (".png",), "COCO-Stuff"),
        cs.names,
        cs.seen,
        ignore_values=(255,),
        lut=lut,
    )


def voc(root: Path, split: str) -> SegmentationDataset:
    """PASCAL VOC 2012 (20 classes, 15 seen / 5 unseen); raw VOC ids, background (0) ignored.

    Layouts: ZegFormer's ``VOCZERO/{images,annotations}/{train,val}`` or the devkit's
    ``VOC2012/{JPEGImages, SegmentationClassAug|SegmentationClass, ImageSets/Segmentation/<split>.txt}``.
    """
    with open(RESOURCES / "pascal_voc_classes.json", encoding="utf-8") as f:
        table = json.load(f)["classes"]
    cs = dataset_classes("voc")
    lut = _lut([(c["id"], c["trainId"]) for c in table], 256)
    if (root / "images" / split).is_dir():
        samples = pair_files(
            root / "images" / split, root / "annotations" / split, IMAGE_EXTENSIONS, (".png",), "PASCAL VOC"
        )
    else:
        devkit = root / "VOC2012" if (root / "VOC2012").is_dir() else root
        labels = _first_dir(devkit, ["SegmentationClassAug", "SegmentationClass"], "PASCAL VOC labels")
        samples = pair_files(devkit / "JPEGImages", labels, IMAGE_EXTENSIONS, (".png",), "PASCAL VOC")
        listing = devkit / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not listing.is_file():
            raise MissingFileError(f"PASCAL VOC split list not found: {listing}")
        keep = set(listing.read_text().split())
        samples = [s for s in samples if s.name in keep]
    return SegmentationDataset("voc", samples, cs.names, cs.seen, ignore_values=(0, 255), lut=lut)


def ade847(root: Path, split: str) -> SegmentationDataset:
    """ADE20K-847 from prepared contiguous-id label images (16-bit PNG or TIFF, 65535 = ignore).

    ``root`` holds ``images_detectron2/{training,validation}`` and ``annotations_detectron2/...``
    (as MaskFormer's ``prepare_ade20k_full_sem_seg.py`` writes them); ``split`` may be
    ``train``/``val`` or the folder names.
    """
    cs = dataset_classes("ade-847")
    sub = {"train": "training", "val": "validation"}.get(split, split)
    images = _first_dir(root, [f"images_detectron2/{sub}", f"images/{sub}"], "ADE20K-847 images")
    labels = _first_dir(root, [f"annotations_detectron2/{sub}", f"annotations/{sub}"], "ADE20K-847 labels")
    return SegmentationDataset(
        "ade-847",
        pair_files(images, labels, IMAGE_EXTENSIONS, LABEL_EXTENSIONS, "ADE20K-847"),
        cs.names,
        cs.seen,
        ignore_values=(65535,),
    )


def read_class_list(path: Path) -> List[str]:
    if not path.is_file():
        raise MissingFileError(f"class list not found: {path} (one class name per line, in label order)")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise DatasetError(f"{path} lists no classes")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DatasetError(f"{path}: duplicate class names {dupes[:5]}")
    return names


def folder_classes(root: Path) -> Tuple[List[str], List[bool]]:
    """``classes.txt`` and the optional ``unseen.txt`` of a folder dataset."""
    names = read_class_list(root / "classes.txt")
    unseen: List[str] = []
    if (root / "unseen.txt").is_file():
        unseen = [s.strip() for s in (root / "unseen.txt").read_text(encoding="utf-8").splitlines() if s.strip()]
        unknown = [u for u in unseen if u not in names]
        if unknown:
            raise DatasetError(f"{root / 'unseen.txt'} names classes not in classes.txt: {unknown[:5]}")
    return names, [n not in unseen for n in names]


def folder(root: Path, split: Optional[str]) -> SegmentationDataset:
    """A dataset in the folder format (module docstring)."""
    names, seen = folder_classes(root)
    base = root / split if split and (root / split / "images").is_dir() else root
    if split and base is root and not (root / "images").is_dir():
        raise MissingFileError(f"folder dataset {root}: neither {root / split / 'images'} nor {root / 'images'} exists")
    samples = pair_files(base / "images", base / "labels", IMAGE_EXTENSIONS, LABEL_EXTENSIONS, f"dataset {root}")
    ignore = (255,) if len(names) <= 255 else (65535,)
    return SegmentationDataset(root.name or str(root), samples, names, seen, ignore_values=ignore)


def build_dataset(name: str, root: Optional[str] = None, split: str = "train") -> SegmentationDataset:
    """``coco-stuff`` | ``voc`` | ``ade-847`` (with ``root``), ``folder``/``synthetic`` (``root``),
    or the path of a folder dataset as ``name``."""
    if name in ("folder", "synthetic"):
        if not root:
            raise DatasetError(f"dataset {name!r} needs data.root (the folder with classes.txt)")
        return folder(Path(root), split)
    if name in BUILTIN:
        if not root:
            raise DatasetError(f"dataset {name!r} needs data.root (where the dataset was extracted)")
        return {"coco-stuff": coco_stuff, "voc": voc, "ade-847": ade847}[name](Path(root), split)
    if Path(name).is_dir():
        return folder(Path(name), split)
    raise DatasetError(
        f"unknown dataset {name!r}: use coco-stuff, voc, ade-847, folder (with a root) or the path of a folder dataset"
    )


__all__ = ["BUILTIN", "IGNORE", "build_dataset", "coco_stuff", "voc", "ade847", "folder", "folder_classes"]
