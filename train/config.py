"""Model configuration: one dataclass, presets for the official settings and a tiny test model.

A configuration is plain data (a dict in checkpoints and YAML files) so that a checkpoint alone
is enough to rebuild its model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Tuple

from sdk.constants import ENSEMBLE_LAMBDA, GZERO_CALIBRATE

BACKBONE_MEAN = (123.675, 116.28, 103.53)
BACKBONE_STD = (58.395, 57.12, 57.375)
CLIP_MEAN = (122.7709383, 116.7460125, 104.09373615)
CLIP_STD = (68.5005327, 66.6321579, 70.3231630)
RESNET_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


@dataclass
class ClipConfig:
    """open_clip CLIP hyper-parameters; the defaults are ViT-B/16 (QuickGELU, OpenAI weights)."""

    embed_dim: int = 512
    image_size: int = 224
    patch_size: int = 16
    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    context_length: int = 77
    vocab_size: int = 49408
    text_width: int = 512
    text_heads: int = 8
    text_layers: int = 12


@dataclass
class ModelConfig:
    """ZegFormer hyper-parameters; defaults are the official R101 + ViT-B/16 evaluation config."""

    backbone_blocks: Tuple[int, ...] = RESNET_BLOCKS[101]
    backbone_width: int = 64
    conv_dim: int = 256
    mask_dim: int = 256
    gn_groups: int = 32
    hidden_dim: int = 256
    num_queries: int = 100
    nheads: int = 8
    dim_feedforward: int = 2048
    dec_layers: int = 6
    dropout: float = 0.1
    temperature: float = 0.01
    size_divisibility: int = 32
    mask_stride: int = 4
    pixel_mean: Tuple[float, ...] = BACKBONE_MEAN
    pixel_std: Tuple[float, ...] = BACKBONE_STD
    clip_pixel_mean: Tuple[float, ...] = CLIP_MEAN
    clip_pixel_std: Tuple[float, ...] = CLIP_STD
    # Prompt ensembles: segment classifier (eval uses "single", training "imagenet_select"),
    # the CLIP branch always uses the 32 IMAGENET_TEMPLATES_SELECT_CLIP.
    train_prompt: str = "imagenet_select"
    test_prompt: str = "single"
    clip_prompt: str = "imagenet_select_clip"
    ensemble_lambda: float = ENSEMBLE_LAMBDA
    gzero_calibrate: float = GZERO_CALIBRATE
    clip: ClipConfig = field(default_factory=ClipConfig)

    @property
    def embed_dim(self) -> int:
        return self.clip.embed_dim

    @property
    def crop_size(self) -> int:
        return self.clip.image_size

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {unknown}")
        d = dict(d)
        clip = ClipConfig(**d.pop("clip", {}))
        for key in ("backbone_blocks", "pixel_mean", "pixel_std", "clip_pixel_mean", "clip_pixel_std"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(clip=clip, **d)


def preset(name: str) -> ModelConfig:
    """Named configurations: ``r101-vit16``, ``r50-vit16`` (official) and ``tiny`` (tests)."""
    if name == "r101-vit16":
        return ModelConfig()
    if name == "r50-vit16":
        return ModelConfig(backbone_blocks=RESNET_BLOCKS[50])
    if name == "tiny":
        return ModelConfig(
            backbone_blocks=(1, 1, 1, 1),
            backbone_width=8,
            conv_dim=32,
            mask_dim=32,
            gn_groups=8,
            hidden_dim=32,
            num_queries=10,
            nheads=4,
            dim_feedforward=64,
            dec_layers=2,
            clip=ClipConfig(
                embed_dim=32,
                image_size=32,
                patch_size=8,
                vision_width=32,
                vision_layers=2,
                vision_heads=2,
                text_width=32,
                text_heads=2,
                text_layers=2,
            ),
        )
    raise ValueError(f"unknown model preset {name!r}; choose r101-vit16, r50-vit16 or tiny")
