"""Shared helpers of the SDK tests: a tiny (but not degenerate) model, its bundle, test images."""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Tuple

import numpy as np

NAMES: List[str] = ["person", "sky", "tree", "road", "car", "grass", "dog, puppy", "building"]
SEEN: List[bool] = [True, True, False, True, True, False, False, True]


def tiny_model(seed: int = 0):
    """The ``tiny`` preset with weights scaled so that queries, masks and classes differ.

    With its default initialisation every query of the tiny model decodes to nearly the same mask
    and class, which makes label maps uniform; these scalings (query positions, cross-attention,
    projection, mask head) give several classes per image without changing the architecture.
    """
    import torch

    from train.config import preset
    from train.model import build_model

    torch.manual_seed(seed)
    model = build_model(preset("tiny")).eval()
    with torch.no_grad():
        model.predictor.query_embed.weight.normal_(0, 10.0)
        model.predictor.bg_feature.mul_(0.2)
        model.predictor.logit_scale.fill_(math.log(20.0))
        for name, p in model.named_parameters():
            if "multihead_attn.in_proj_weight" in name:
                p.mul_(4)
            elif "input_proj" in name and p.ndim == 4:
                p.mul_(10)
            elif name.endswith("projection_layer.weight"):
                p.mul_(5)
            elif "mask_embed.layers.2" in name:
                p.mul_(8)
            if name.endswith("mask_features.bias") or name.endswith("mask_embed.layers.2.bias"):
                p.zero_()
    return model


def tiny_checkpoint(path: Path) -> Path:
    from train.checkpoint import save_checkpoint

    save_checkpoint(path, tiny_model(), NAMES, SEEN)
    return path


_SHARED = {}


def shared_bundle(tmp_path_factory) -> Path:
    """One tiny checkpoint + exported bundle per test session (shared by the SDK test modules)."""
    if "bundle" not in _SHARED:
        root = tmp_path_factory.mktemp("sdk_bundle")
        checkpoint = tiny_checkpoint(root / "tiny.pth")
        _SHARED["bundle"] = export_bundle(checkpoint, root / "bundle")
    return _SHARED["bundle"]


def tiny_bundle(tmp_path_factory) -> Path:
    """The checked-in tiny bundle (``tests/tiny_bundle.py``), materialised once per session; no torch."""
    if "tiny" not in _SHARED:
        from tests.tiny_bundle import materialise

        _SHARED["tiny"] = materialise(tmp_path_factory.mktemp("tiny_bundle") / "bundle")
    return _SHARED["tiny"]


def copy_bundle(bundle: Path, dest: Path) -> Path:
    """A private copy of a bundle (for tests that modify files)."""
    import shutil

    shutil.copytree(bundle, dest)
    return dest


def export_bundle(checkpoint: Path, out: Path, *extra: str) -> Path:
    """``python -m export`` on ``checkpoint`` (ONNX graphs + the checkpoint's own vocabulary)."""
    from export.__main__ import main

    rc = main(
        [
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(out),
            "--image-size",
            "64x96",
            "--dense-size",
            "64x64",
            "--no-progress",
            "-q",
            *extra,
        ]
    )
    assert rc == 0, f"export failed with exit code {rc}"
    return out


def block_image(h: int = 90, w: int = 120, grid: Tuple[int, int] = (6, 8), seed: int = 0) -> np.ndarray:
    """An ``h×w×3`` uint8 image of random coloured blocks (nearest-upsampled random grid)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (*grid, 3), dtype=np.uint8)
    return blocks[(np.arange(h) * grid[0]) // h][:, (np.arange(w) * grid[1]) // w]


def random_text_features(k: int, d: int, seed: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """Two sets of ``k`` random unit vectors (distinct classes; the tiny CLIP's own are near-equal)."""
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((2, k, d)).astype(np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True), b / np.linalg.norm(b, axis=1, keepdims=True)
