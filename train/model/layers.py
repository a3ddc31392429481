"""Small building blocks shared by the backbone and the pixel decoder (detectron2 semantics)."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn
from torch.nn import functional as F


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine parameters, stored as buffers (detectron2)."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        bias = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1).to(x.dtype) + bias.reshape(1, -1, 1, 1).to(x.dtype)


class TrainableBatchNorm2d(nn.BatchNorm2d):
    """A :class:`FrozenBatchNorm2d` made trainable: batch statistics and a learned affine while
    training, the running statistics in eval mode (then it computes what the frozen layer would).

    For a backbone trained from scratch, where frozen identity statistics leave the ResNet with no
    normalisation at all. Its state dict has the frozen layer's four keys (no ``num_batches_tracked``,
    which only matters with ``momentum=None``), so checkpoints load into the official architecture."""

    def __init__(self, frozen: FrozenBatchNorm2d):
        super().__init__(frozen.weight.numel(), eps=frozen.eps)
        self.num_batches_tracked = None
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(self, name).copy_(getattr(frozen, name))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # skip BatchNorm's loader, which adds ``num_batches_tracked`` to state dicts of other layers
        state_dict.pop(prefix + "num_batches_tracked", None)
        nn.Module._load_from_state_dict(self, state_dict, prefix, *args, **kwargs)


def thaw_batchnorm(module: nn.Module) -> int:
    """Replace every :class:`FrozenBatchNorm2d` under ``module`` by a trainable copy; returns how many."""
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, FrozenBatchNorm2d):
                setattr(parent, name, TrainableBatchNorm2d(child))
                count += 1
    return count


class ConvNorm(nn.Conv2d):
    """Conv2d followed by an optional norm and activation; the norm is the ``.norm`` child.

    Mirrors detectron2's ``Conv2d`` so that parameter names (``conv.weight``,
    ``conv.norm.weight``) match official checkpoints one to one.
    """

    def __init__(
        self,
        *args,
        norm: Optional[nn.Module] = None,
        activation: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


class MLP(nn.Module):
    """A plain multi-layer perceptron with ReLU between layers (DETR's ``MLP``)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == last else F.relu(layer(x))
        return x
