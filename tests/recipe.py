"""The reference fixture's deterministic weight recipe (``shared/reference/README.md``), exactly."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path
from typing import Dict

import torch

KEEP_LOG100 = "sem_seg_head.predictor.logit_scale"


def recipe_tensor(name: str, shape) -> torch.Tensor:
    g = torch.Generator().manual_seed(zlib.crc32(name.encode("utf-8")))
    if name == KEEP_LOG100:
        return torch.tensor([math.log(1 / 0.01)], dtype=torch.float32)  # the configured value
    if name == "sem_seg_head.predictor.clip_model.logit_scale":
        return torch.full(shape, math.log(100.0))
    if name.endswith("running_var"):
        return torch.ones(shape)
    if name.endswith("running_mean"):
        return torch.zeros(shape)
    if len(shape) == 1 and name.endswith("weight"):
        return 1.0 + 0.05 * torch.randn(shape, generator=g)
    if len(shape) == 1:
        return 0.02 * torch.randn(shape, generator=g)
    if name == "sem_seg_head.predictor.query_embed.weight":
        return 1.0 * torch.randn(shape, generator=g)
    fan_in = math.prod(shape[1:])
    return torch.randn(shape, generator=g) * (1.0 / math.sqrt(fan_in))


def official_state_dict(reference_dir: Path) -> Dict[str, torch.Tensor]:
    """Every entry of the official eval model's state dict, regenerated from names and shapes."""
    shapes = json.loads((reference_dir / "official_state_dict_shapes.json").read_text())
    return {name: recipe_tensor(name, tuple(v["shape"])) for name, v in shapes.items()}
