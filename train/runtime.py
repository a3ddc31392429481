"""Small runtime helpers of the training loop: device choice, determinism, the DDP forward, digests."""

from __future__ import annotations

import hashlib
import os
from typing import Dict

import torch
from torch import nn

from . import distributed as dist


class TrainForward(nn.Module):
    """What DistributedDataParallel wraps: ``forward`` = the model's ``forward_train``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, text_features: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.model.forward_train(images, text_features)


def pick_device(name: str) -> torch.device:
    """``auto`` → this rank's CUDA device when there is one, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", dist.local_rank())
    return torch.device(name)


def set_determinism(on: bool) -> None:
    """Deterministic kernels (and cuBLAS workspace) when ``on``."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def weights_digest(model: nn.Module) -> str:
    """SHA-256 over every state-dict entry's name and bytes (replica consistency checks)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
