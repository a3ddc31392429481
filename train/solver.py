"""Optimizer and learning-rate schedule of the official recipe.

AdamW; per-parameter groups as detectron2/MaskFormer build them: the backbone's learning rate
× ``backbone_multiplier``; weight decay ``weight_decay_norm`` on normalisation layers and
``weight_decay_embed`` on embeddings (both 0 officially); frozen parameters (CLIP, the fixed
logit scale) are left out. Poly schedule ``lr · (1 − it/max_iter)^power`` with optional linear
warm-up; full-model gradient-norm clipping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List

import torch
from torch import nn

NORM_TYPES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


@dataclass
class SolverConfig:
    batch_size: int = 32  # global: all ranks × accumulation steps
    accumulate: int = 1  # gradient accumulation steps per optimizer step
    lr: float = 1e-4
    weight_decay: float = 1e-4
    weight_decay_norm: float = 0.0
    weight_decay_embed: float = 0.0
    backbone_multiplier: float = 0.1
    max_iter: int = 60000
    poly_power: float = 0.9
    warmup_iters: int = 0
    warmup_factor: float = 1.0
    clip_grad_norm: float = 0.01  # full model, L2; <= 0 disables
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8


def param_groups(model: nn.Module, cfg: SolverConfig) -> List[Dict[str, Any]]:
    """One group per trainable parameter with its lr and weight decay (detectron2 style)."""
    groups, memo = [], set()
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or p in memo:
                continue
            memo.add(p)
            lr, wd = cfg.lr, cfg.weight_decay
            if module_name.startswith("backbone") or ".backbone" in module_name:
                lr *= cfg.backbone_multiplier
            if isinstance(module, NORM_TYPES):
                wd = cfg.weight_decay_norm
            if isinstance(module, nn.Embedding):
                wd = cfg.weight_decay_embed
            groups.append({"params": [p], "lr": lr, "weight_decay": wd, "name": f"{module_name}.{name}"})
    return groups


def build_optimizer(model: nn.Module, cfg: SolverConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)


def lr_factor(step: int, cfg: SolverConfig) -> float:
    """Multiplier of each group's base lr at ``step`` (detectron2's WarmupPolyLR, linear warm-up)."""
    factor = 1.0
    if step < cfg.warmup_iters:
        alpha = step / cfg.warmup_iters
        factor = cfg.warmup_factor * (1 - alpha) + alpha
    return factor * max(0.0, 1 - step / cfg.max_iter) ** cfg.poly_power


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: SolverConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))


def clip_gradients(params: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Clip the global L2 norm of all gradients; returns the norm before clipping."""
    params = [p for p in params if p.grad is not None]
    if max_norm <= 0:
        return (
            torch.linalg.vector_norm(torch.stack([p.grad.detach().norm() for p in params]))
            if params
            else torch.zeros(())
        )
    return torch.nn.utils.clip_grad_norm_(params, max_norm)
