"""Class lists, seen/unseen splits and prompt templates of the official datasets."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Dict, List, Tuple

RESOURCES = Path(__file__).resolve().parent / "resources"


@dataclass(frozen=True)
class ClassSplit:
    """All classes in output-channel order and which of them are seen in training."""

    names: Tuple[str, ...]
    seen: Tuple[bool, ...]

    @property
    def seen_names(self) -> List[str]:
        return [n for n, s in zip(self.names, self.seen) if s]

    @property
    def unseen_names(self) -> List[str]:
        return [n for n, s in zip(self.names, self.seen) if not s]


def _load(name: str):
    with open(RESOURCES / name, encoding="utf-8") as f:
        return json.load(f)


@cache
def dataset_classes(dataset: str) -> ClassSplit:
    """``coco-stuff`` (171: 156 seen then 15 unseen), ``voc`` (20: 15 + 5), ``ade-847`` (572 + 275)."""
    if dataset == "coco-stuff":
        classes = _load("cocostuff_171_classes.json")["classes"]
        return ClassSplit(tuple(c["name"] for c in classes), tuple(bool(c["seen"]) for c in classes))
    if dataset == "voc":
        classes = _load("pascal_voc_classes.json")["classes"]
        return ClassSplit(tuple(c["name"] for c in classes), tuple(c["trainId"] < 15 for c in classes))
    if dataset == "ade-847":
        classes = _load("ade20k_847_classes.json")["classes"]
        return ClassSplit(tuple(c["name"] for c in classes), tuple(c["frequency"] != "rare" for c in classes))
    raise ValueError(f"unknown dataset {dataset!r}; choose coco-stuff, voc or ade-847")


@cache
def _templates() -> Dict[str, List[str]]:
    t = _load("prompt_templates.json")
    return {
        "single": t["single"],
        "imagenet_select": t["IMAGENET_TEMPLATES_SELECT"],
        "imagenet_select_clip": t["IMAGENET_TEMPLATES_SELECT_CLIP"],
    }


def prompt_templates(kind: str) -> List[str]:
    """``single``, ``imagenet_select`` (8) or ``imagenet_select_clip`` (32)."""
    templates = _templates()
    if kind not in templates:
        raise ValueError(f"unknown prompt ensemble {kind!r}; choose one of {sorted(templates)}")
    return list(templates[kind])
