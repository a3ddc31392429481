"""Starting weights for training: the official initialisation, pretrained backbones, CLIP weights.

Official initialisation (detectron2/MaskFormer): backbone convs ``c2_msra_fill`` (He normal,
fan-out), pixel-decoder convs and ``input_proj`` ``c2_xavier_fill`` (He uniform, a = 1, bias 0),
transformer matrices Xavier-uniform. Officially the backbone then gets ImageNet weights
(``init.backbone``) and CLIP the OpenAI ViT-B/16 weights (``init.clip``).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Dict, Optional

import torch
from torch import nn

log = logging.getLogger(__name__)


def _msra_fill(conv: nn.Conv2d) -> None:
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _xavier_fill(conv: nn.Module) -> None:
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if getattr(conv, "bias", None) is not None:
        nn.init.zeros_(conv.bias)


def official_init(model: nn.Module) -> None:
    """Re-initialise a freshly built ZegFormer the way the official code does."""
    for m in model.backbone.modules():
        if isinstance(m, nn.Conv2d):
            _msra_fill(m)
    for m in model.pixel_decoder.modules():
        if isinstance(m, nn.Conv2d):
            _xavier_fill(m)
    _xavier_fill(model.predictor.input_proj)
    for p in model.predictor.transformer.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


def _rename_torchvision(key: str) -> Optional[str]:
    """torchvision ResNet name → our backbone name (``None`` for fc/num_batches_tracked)."""
    if key.startswith("fc.") or key.endswith("num_batches_tracked"):
        return None
    m = re.match(r"^layer(\d)\.(\d+)\.(conv|bn)(\d)\.(.*)$", key)
    if m:
        stage, block, kind, idx, rest = m.groups()
        base = f"res{int(stage) + 1}.{block}.conv{idx}"
        return f"{base}.{rest}" if kind == "conv" else f"{base}.norm.{rest}"
    m = re.match(r"^layer(\d)\.(\d+)\.downsample\.(0|1)\.(.*)$", key)
    if m:
        stage, block, which, rest = m.groups()
        base = f"res{int(stage) + 1}.{block}.shortcut"
        return f"{base}.{rest}" if which == "0" else f"{base}.norm.{rest}"
    if key == "conv1.weight":
        return "stem.conv1.weight"
    if key.startswith("bn1."):
        return "stem.conv1.norm." + key[4:]
    return key  # already in our naming


def load_backbone(model: nn.Module, path: Path) -> None:
    """ImageNet ResNet weights (torchvision state dict, or our naming) into ``model.backbone``."""
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    renamed: Dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        k = k[len("backbone.") :] if k.startswith("backbone.") else k
        new = _rename_torchvision(k)
        if new is not None:
            renamed[new] = v.float()
    missing, unexpected = model.backbone.load_state_dict(renamed, strict=False)
    if unexpected or [m for m in missing if not m.endswith(("running_mean", "running_var"))]:
        raise ValueError(f"{path} does not fit the backbone: missing {missing[:10]}, unexpected {unexpected[:10]}")
    log.info("loaded backbone weights from %s", path)


def load_clip(model: nn.Module, source: str) -> None:
    """CLIP weights (OpenAI state-dict file, TorchScript archive or open_clip tag) into ``model.clip``."""
    from .convert_official import load_clip_source

    sd = {
        k: v.float()
        for k, v in load_clip_source(source).items()
        if k not in ("input_resolution", "context_length", "vocab_size")
    }
    model.clip.load_state_dict(sd, strict=True)
    log.info("loaded CLIP weights from %s", source)


def load_our_checkpoint(model: nn.Module, path: Path) -> None:
    from .checkpoint import read_checkpoint

    payload = read_checkpoint(path)
    model.load_state_dict(payload["model"], strict=True)
    log.info("initialised from checkpoint %s", path)
