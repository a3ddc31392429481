"""Training state in checkpoints (optimizer, scheduler, scaler, step, RNG states) and per-step seeds.

Everything is stored as tensors, lists, ints, floats and strings so that the checkpoint loads
with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
from typing import Any, Dict, Optional

import numpy as np
import torch


def step_seed(seed: int, step: int, rank: int) -> int:
    """A 63-bit seed derived from ``(seed, step, rank)``."""
    a, b = np.random.SeedSequence([seed, step, rank]).generate_state(2)
    return (int(a) << 31) ^ int(b)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's and Python's global generators."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def rng_state() -> Dict[str, Any]:
    """The global RNG states as tensors/lists/ints."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(version),
            "internal": [int(x) for x in internal],
            "gauss_next": None if gauss_next is None else float(gauss_next),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def capture(step: int, optimizer, scheduler, scaler: Optional[torch.amp.GradScaler], nonfinite: int) -> Dict[str, Any]:
    """The ``train_state`` entry of a checkpoint."""
    return {
        "step": int(step),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "rng": rng_state(),
        "consecutive_nonfinite": int(nonfinite),
    }


def restore(state: Dict[str, Any], optimizer, scheduler, scaler: Optional[torch.amp.GradScaler]) -> int:
    """Load a ``train_state`` into the optimizer/scheduler/scaler and RNGs; returns the next step."""
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return int(state["step"])
