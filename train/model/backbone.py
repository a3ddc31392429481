"""ResNet-50/101 backbone with frozen BatchNorm, named as detectron2's ``build_resnet_backbone``.

The stride sits in the 3×3 conv (``STRIDE_IN_1X1 = False``), no dilation, one group.
Outputs ``res2..res5`` at strides 4, 8, 16, 32.
"""

from __future__ import annotations

from typing import Dict, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .layers import ConvNorm, FrozenBatchNorm2d


def _conv(cin: int, cout: int, k: int, stride: int = 1, relu: bool = False) -> ConvNorm:
    return ConvNorm(
        cin,
        cout,
        kernel_size=k,
        stride=stride,
        padding=k // 2,
        bias=False,
        norm=FrozenBatchNorm2d(cout),
        activation=F.relu if relu else None,
    )


class BottleneckBlock(nn.Module):
    def __init__(self, cin: int, cout: int, width: int, stride: int):
        super().__init__()
        self.shortcut = _conv(cin, cout, 1, stride) if (cin != cout or stride != 1) else None
        self.conv1 = _conv(cin, width, 1)
        self.conv2 = _conv(width, width, 3, stride)
        self.conv3 = _conv(width, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        out = self.conv3(out)
        out = out + (self.shortcut(x) if self.shortcut is not None else x)
        return F.relu(out)


class Stem(nn.Module):
    def __init__(self, cout: int):
        super().__init__()
        self.conv1 = _conv(3, cout, 7, stride=2, relu=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(self.conv1(x), kernel_size=3, stride=2, padding=1)


class ResNet(nn.Module):
    """``depth_blocks``: blocks per stage, e.g. (3, 4, 23, 3) for R101; ``width``: res2 bottleneck width."""

    def __init__(self, depth_blocks: Sequence[int] = (3, 4, 23, 3), width: int = 64):
        super().__init__()
        self.stem = Stem(width)
        cin = width
        self.stage_names = []
        self.out_channels = {}
        for i, n_blocks in enumerate(depth_blocks):
            name = f"res{i + 2}"
            bottleneck, cout = width * 2**i, width * 4 * 2**i
            blocks = []
            for j in range(n_blocks):
                stride = 2 if (j == 0 and i > 0) else 1
                blocks.append(BottleneckBlock(cin, cout, bottleneck, stride))
                cin = cout
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names.append(name)
            self.out_channels[name] = cout

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        x = self.stem(x)
        out = {}
        for name in self.stage_names:
            x = getattr(self, name)(x)
            out[name] = x
        return out
