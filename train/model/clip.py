"""CLIP through open_clip (OpenAI parameter naming, QuickGELU), with export-friendly encoders."""

from __future__ import annotations

from typing import Any, Dict

import torch
from torch import nn


def build_clip(cfg: Dict[str, Any]) -> nn.Module:
    """An ``open_clip.model.CLIP`` in float32 from a config dict (see ``train.config.ClipConfig``)."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    vision = CLIPVisionCfg(
        layers=cfg["vision_layers"],
        width=cfg["vision_width"],
        head_width=cfg["vision_width"] // cfg["vision_heads"],
        patch_size=cfg["patch_size"],
        image_size=cfg["image_size"],
    )
    text = CLIPTextCfg(
        context_length=cfg["context_length"],
        vocab_size=cfg["vocab_size"],
        width=cfg["text_width"],
        heads=cfg["text_heads"],
        layers=cfg["text_layers"],
    )
    model = CLIP(embed_dim=cfg["embed_dim"], vision_cfg=vision, text_cfg=text, quick_gelu=True)
    return model.float().eval()


def encode_image(clip: nn.Module, crops: torch.Tensor) -> torch.Tensor:
    """CLIP-normalised crops ``[N,3,S,S]`` → L2-normalised float32 embeddings ``[N,D]``.

    Crops are cast to CLIP's own dtype, so a ``clip.half()`` model runs as the official float16 CLIP.
    """
    feats = clip.encode_image(crops.to(clip.visual.conv1.weight.dtype)).float()
    return feats / feats.norm(dim=-1, keepdim=True)


def encode_text(clip: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Token ids ``[T,L]`` (``L`` ≤ the context length) → raw (unnormalised) text embeddings ``[T,D]``.

    The same computation as ``open_clip.CLIP.encode_text``, written out so that the end-of-text
    pooling is an ArgMax over *int32* ids (int64 ArgMax is refused by ONNX Runtime/TensorRT)
    and the causal mask is explicit. The positional embedding and the causal mask are sliced to
    ``L``: attention is causal and pooling reads the end-of-text position, so tokens cut after
    every row's end of text never change the result (exact; traced, ``L`` stays dynamic).
    """
    n = tokens.shape[1]
    x = clip.token_embedding(tokens) + clip.positional_embedding[:n]
    x = clip.transformer(x, attn_mask=clip.attn_mask[:n, :n])
    x = clip.ln_final(x)
    eot = tokens.to(torch.int32).argmax(dim=-1)
    x = x[torch.arange(x.shape[0], device=x.device), eot]
    return x @ clip.text_projection
