"""ZegFormer's head: transformer queries → mask embeddings and L2-normalised segment embeddings.

Segment classification against text embeddings lives here too (temperature 0.01 and the
learned, *unnormalised* background embedding), so training and inference share it.
"""

from __future__ import annotations

import math
from typing import Dict

import torch
from torch import nn

from .layers import MLP, ConvNorm
from .transformer import PositionEmbeddingSine, Transformer


class ZeroShotPredictor(nn.Module):
    def __init__(
        self,
        in_channels: int,
        hidden_dim: int = 256,
        num_queries: int = 100,
        nheads: int = 8,
        dim_feedforward: int = 2048,
        dec_layers: int = 6,
        dropout: float = 0.1,
        mask_dim: int = 256,
        embed_dim: int = 512,
        temperature: float = 0.01,
    ):
        super().__init__()
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2)
        self.transformer = Transformer(hidden_dim, nheads, dec_layers, dim_feedforward, dropout)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.input_proj = ConvNorm(in_channels, hidden_dim, kernel_size=1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        self.projection_layer = nn.Linear(hidden_dim, embed_dim)
        self.bg_feature = nn.Parameter(torch.empty(1, embed_dim))
        nn.init.kaiming_uniform_(self.bg_feature, a=math.sqrt(5))
        # Frozen log(1/temperature), a parameter in the official model (kept for checkpoint parity).
        self.logit_scale = nn.Parameter(
            torch.tensor([math.log(1 / temperature)], dtype=torch.float32), requires_grad=False
        )

    def forward(
        self, res5: torch.Tensor, mask_features: torch.Tensor, all_layers: bool = False
    ) -> Dict[str, torch.Tensor]:
        """Returns ``pred_masks`` ``[(L,)B,Q,h,w]`` and ``segment_embeddings`` ``[(L,)B,Q,D]``.

        With ``all_layers`` every decoder layer's outputs are returned (deep supervision);
        otherwise only the last layer's, which is all inference uses.
        """
        hs = self.transformer(self.input_proj(res5), self.query_embed.weight, self.pe_layer(res5))
        if not all_layers:
            hs = hs[-1]
        emb = self.projection_layer(hs)
        emb = emb / emb.norm(dim=-1, keepdim=True)
        return {
            "pred_masks": self.masks_from_embeddings(self.mask_embed(hs), mask_features),
            "segment_embeddings": emb,
            "decoder_output": hs,
        }

    @staticmethod
    def masks_from_embeddings(mask_embed: torch.Tensor, mask_features: torch.Tensor) -> torch.Tensor:
        """``einsum('...bqc,bchw->...bqhw')`` as a batched matmul (einsum does not convert to TensorRT)."""
        b, c, h, w = mask_features.shape
        feats = mask_features.flatten(2)  # [B,C,HW]
        if mask_embed.dim() == 4:  # [L,B,Q,C]
            n_layers = mask_embed.shape[0]
            out = torch.matmul(mask_embed, feats.unsqueeze(0))
            return out.reshape(n_layers, b, -1, h, w)
        return torch.bmm(mask_embed, feats).reshape(b, -1, h, w)

    def classify(self, segment_embeddings: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """Segment logits ``[..., K+1]``: scaled cosine with the K text embeddings, then background."""
        scale = self.logit_scale.exp()
        # Official precedence: (scale * x) @ t, not scale * (x @ t).
        cls = scale * segment_embeddings @ text_features.t()
        bg = scale * segment_embeddings @ self.bg_feature.t()
        return torch.cat((cls, bg), -1)
