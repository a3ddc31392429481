"""Our checkpoint format: weights + model config + class names + versions, written atomically.

A checkpoint alone is enough to rebuild its model (``load_model``). Loading always uses
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch

from sdk.atomicio import atomic_path

from .config import ModelConfig
from .model import ZegFormer, build_model

FORMAT = "zegformer-sdk/checkpoint"
FORMAT_VERSION = 1
PathLike = Union[str, os.PathLike]


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, of a foreign format or inconsistent."""


def versions() -> Dict[str, str]:
    import open_clip

    return {
        "torch": str(torch.__version__),
        "open_clip": str(open_clip.__version__),
        "python": platform.python_version(),
    }


def atomic_save(obj: Any, path: PathLike) -> None:
    """``torch.save`` to a temporary file in the same directory, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_checkpoint(
    path: PathLike,
    model: ZegFormer,
    class_names: Sequence[str],
    seen: Sequence[bool],
    extra: Optional[Dict[str, Any]] = None,
) -> None:
    """Write ``model`` with its config and the class list (all classes, seen flags) it is meant for."""
    if len(class_names) != len(seen):
        raise ValueError("class_names and seen must have the same length")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.cfg.to_dict(),
        "classes": {"names": list(class_names), "seen": [bool(s) for s in seen]},
        "versions": versions(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    payload.update(extra or {})
    atomic_save(payload, path)


def read_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Load and validate one of our checkpoints (a dict), without building the model."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle with disallowed globals, not a torch file...
        # only torch's first sentence: the next ones advise weights_only=False (unsafe on untrusted files)
        detail = " ".join(str(e).split()).split(". ")[0][:160]
        raise CheckpointError(
            f"cannot read checkpoint {path}: not a complete PyTorch file of tensors ({type(e).__name__}: {detail})"
        ) from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a zegformer-sdk checkpoint (official ZegFormer "
            "checkpoints must be imported first: python -m train.convert_official)"
        )
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {payload['format_version']}; "
            f"this code reads up to {FORMAT_VERSION}: upgrade zegformer-sdk"
        )
    return payload


def load_model(path: PathLike, device: Union[str, torch.device] = "cpu") -> Tuple[ZegFormer, Dict[str, Any]]:
    """Rebuild the model of a checkpoint; returns ``(model in eval mode, checkpoint dict)``."""
    payload = read_checkpoint(path)
    model = build_model(ModelConfig.from_dict(payload["config"]))
    missing, unexpected = model.load_state_dict(payload["model"], strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match its config: missing {missing[:10]}, unexpected {unexpected[:10]}"
        )
    return model.to(device).eval(), payload
