"""MaskFormer's ``BasePixelDecoder``: a light FPN with GroupNorm producing stride-4 mask features."""

from __future__ import annotations

from typing import Dict, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .layers import ConvNorm


class PixelDecoder(nn.Module):
    """res5 → 3×3 conv; each finer level: lateral 1×1 (+ nearest-upsampled coarser) → 3×3 conv.

    Names follow the official module: ``adapter_{i}`` (laterals of res2..res4), ``layer_{i}``
    (output convs; ``layer_4`` is res5's), ``mask_features``. Convs with a norm have no bias.
    """

    def __init__(self, in_channels: Sequence[int], conv_dim: int = 256, mask_dim: int = 256, gn_groups: int = 32):
        super().__init__()
        self.num_levels = len(in_channels)
        for idx, cin in enumerate(in_channels):
            i = idx + 1
            if idx == self.num_levels - 1:
                self.add_module(f"layer_{i}", self._conv(cin, conv_dim, 3, gn_groups, relu=True))
            else:
                self.add_module(f"adapter_{i}", self._conv(cin, conv_dim, 1, gn_groups, relu=False))
                self.add_module(f"layer_{i}", self._conv(conv_dim, conv_dim, 3, gn_groups, relu=True))
        self.mask_features = ConvNorm(conv_dim, mask_dim, kernel_size=3, padding=1, bias=True)

    @staticmethod
    def _conv(cin: int, cout: int, k: int, groups: int, relu: bool) -> ConvNorm:
        return ConvNorm(
            cin,
            cout,
            kernel_size=k,
            padding=k // 2,
            bias=False,
            norm=nn.GroupNorm(groups, cout),
            activation=F.relu if relu else None,
        )

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        names = sorted(features)  # res2, res3, res4, res5
        y = getattr(self, f"layer_{self.num_levels}")(features[names[-1]])
        for idx in range(self.num_levels - 2, -1, -1):
            lateral = getattr(self, f"adapter_{idx + 1}")(features[names[idx]])
            # Padded sizes are multiples of 32, so this is an exact 2× replication.
            y = lateral + F.interpolate(y, size=lateral.shape[-2:], mode="nearest")
            y = getattr(self, f"layer_{idx + 1}")(y)
        return self.mask_features(y)
