"""Dense per-patch CLIP embeddings from the model's own ViT (MaskCLIP-style), for ``maskpool`` mode.

What is computed, on a fixed input size ``(Hd, Wd)`` (multiples of the patch size):

1. patch embedding (``conv1``), class token, positional embedding — the patch-grid part of
   CLIP's positional embedding is resized **once, here at export time**, bicubically
   (``align_corners=False``) from its training grid to ``(Hd/p, Wd/p)``; the class position is
   kept — then ``ln_pre``;
2. every transformer block except the last, unchanged;
3. the last block reduced to its **value path**: ``out_proj(v_proj(ln_1(x)))`` — no q·k
   attention, no residual, no MLP (the MaskCLIP/SCLIP observation that the value embedding of
   the last layer keeps per-patch locality that the global attention pooling destroys);
4. ``ln_post`` and ``proj`` applied to every patch token (the class token is dropped);
5. L2 normalisation per location → ``[B, D, Hd/p, Wd/p]``.

No CLIP weights are copied or redefined: the wrapper holds the model's ``clip.visual`` and reads
its parameters at run time; only the resized positional embedding is a new (derived) buffer.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def resize_positional_embedding(pos: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """``[1+G*G, C]`` (class position first) → ``[1+gh*gw, C]``, bicubic on the patch grid."""
    side = int(math.isqrt(pos.shape[0] - 1))
    if side * side != pos.shape[0] - 1:
        raise ValueError(f"positional embedding of {pos.shape[0] - 1} patches is not a square grid")
    cls_pos, patches = pos[:1], pos[1:]
    gh, gw = int(grid[0]), int(grid[1])
    if (gh, gw) != (side, side):
        patches = patches.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        patches = F.interpolate(patches, size=(gh, gw), mode="bicubic", align_corners=False)
        patches = patches.permute(0, 2, 3, 1).reshape(gh * gw, -1)
    return torch.cat([cls_pos, patches], dim=0)


class DenseClipGraph(nn.Module):
    """CLIP-normalised image ``[B,3,Hd,Wd]`` → L2-normalised dense features ``[B,D,Hd/p,Wd/p]``."""

    def __init__(self, clip: nn.Module, size: Sequence[int]):
        super().__init__()
        self.visual = clip.visual
        patch = self.visual.conv1.kernel_size[0]
        h, w = int(size[0]), int(size[1])
        if h % patch or w % patch:
            raise ValueError(f"dense size {h}x{w} is not a multiple of the CLIP patch size {patch}")
        self.size = (h, w)
        self.grid = (h // patch, w // patch)
        with torch.no_grad():
            pos = resize_positional_embedding(self.visual.positional_embedding.detach().float(), self.grid)
        self.register_buffer("positional_embedding", pos, persistent=False)

    def tokens_before_last_block(self, image: torch.Tensor) -> torch.Tensor:
        """``[B, 1+gh*gw, C]`` tokens entering the last transformer block (batch-first)."""
        v = self.visual
        x = v.conv1(image).flatten(2).transpose(1, 2)  # [B, gh*gw, C]
        cls = v.class_embedding.to(x.dtype).reshape(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = v.ln_pre(x)
        batch_first = getattr(v.transformer, "batch_first", True)
        if not batch_first:
            x = x.transpose(0, 1)
        for block in v.transformer.resblocks[:-1]:
            x = block(x)
        return x if batch_first else x.transpose(0, 1)

    def value_path(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's ``out_proj(v_proj(ln_1(x)))`` — attention without q·k."""
        block = self.visual.transformer.resblocks[-1]
        attn = block.attn
        width = attn.embed_dim
        w_v = attn.in_proj_weight[2 * width :]
        b_v = attn.in_proj_bias[2 * width :] if attn.in_proj_bias is not None else None
        return attn.out_proj(F.linear(block.ln_1(x), w_v, b_v))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        v = self.visual
        x = self.value_path(self.tokens_before_last_block(image))[:, 1:]
        x = v.ln_post(x) @ v.proj  # [B, gh*gw, D]
        x = x / x.norm(dim=-1, keepdim=True)
        return x.transpose(1, 2).reshape(x.shape[0], -1, self.grid[0], self.grid[1])
