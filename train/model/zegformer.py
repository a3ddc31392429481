"""The ZegFormer model: mask proposals with segment embeddings, and the CLIP branch.

One definition serves training (``forward_train``), export (``ProposalGraph`` & co. in
``export/``) and reference inference (``train.inference``).
"""

from __future__ import annotations

from typing import Dict, Sequence

import torch
from torch import nn

from ..config import ModelConfig
from .backbone import ResNet
from .clip import build_clip, encode_image
from .pixel_decoder import PixelDecoder
from .predictor import ZeroShotPredictor
from .text import class_text_embeddings


class ZegFormer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = ResNet(cfg.backbone_blocks, cfg.backbone_width)
        channels = [self.backbone.out_channels[n] for n in self.backbone.stage_names]
        self.pixel_decoder = PixelDecoder(channels, cfg.conv_dim, cfg.mask_dim, cfg.gn_groups)
        self.predictor = ZeroShotPredictor(
            channels[-1],
            cfg.hidden_dim,
            cfg.num_queries,
            cfg.nheads,
            cfg.dim_feedforward,
            cfg.dec_layers,
            cfg.dropout,
            cfg.mask_dim,
            cfg.embed_dim,
            cfg.temperature,
        )
        self.clip = build_clip(vars(cfg.clip))
        for name in ("pixel_mean", "pixel_std", "clip_pixel_mean", "clip_pixel_std"):
            self.register_buffer(name, torch.tensor(getattr(cfg, name)).view(1, -1, 1, 1), False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """RGB 0..255 ``[B,3,H,W]`` → backbone-normalised."""
        return (images - self.pixel_mean) / self.pixel_std

    def clip_normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.clip_pixel_mean) / self.clip_pixel_std

    def proposals(self, normalized: torch.Tensor, all_layers: bool = False) -> Dict[str, torch.Tensor]:
        """Backbone-normalised, padded images → ``pred_masks`` (stride 4) and ``segment_embeddings``."""
        features = self.backbone(normalized)
        mask_features = self.pixel_decoder(features)
        return self.predictor(features["res5"], mask_features, all_layers=all_layers)

    def classify(self, segment_embeddings: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """Segment logits ``[..., K+1]`` (background last)."""
        return self.predictor.classify(segment_embeddings, text_features)

    def encode_crops(self, crops: torch.Tensor) -> torch.Tensor:
        """CLIP-normalised crops ``[N,3,S,S]`` → L2-normalised CLIP embeddings ``[N,D]``."""
        return encode_image(self.clip, crops)

    def clip_logits(self, image_features: torch.Tensor, text_features_clip: torch.Tensor) -> torch.Tensor:
        # Official precedence: (scale * img) @ text. The official float16 casts are not applied:
        # this is the float32 algorithm the reference fixture records.
        return self.clip.logit_scale.exp() * image_features @ text_features_clip.t()

    def text_embeddings(self, names: Sequence[str], templates: Sequence[str], **kwargs) -> torch.Tensor:
        return class_text_embeddings(self.clip, names, templates, **kwargs)

    def forward_train(self, images: torch.Tensor, text_features: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Training forward on padded RGB 0..255 images: every decoder layer's logits and masks.

        Returns ``pred_logits`` ``[L,B,Q,K+1]`` and ``pred_masks`` ``[L,B,Q,H/4,W/4]``.
        """
        out = self.proposals(self.normalize(images), all_layers=True)
        return {"pred_logits": self.classify(out["segment_embeddings"], text_features), "pred_masks": out["pred_masks"]}


def build_model(cfg: ModelConfig) -> ZegFormer:
    return ZegFormer(cfg)
