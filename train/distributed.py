"""Data-parallel plumbing for ``torchrun``: process group from the environment, small collectives.

NCCL when training on CUDA, gloo on the CPU. Multi-node runs use torchrun's own flags
(``--nnodes``, ``--node_rank``, ``--rdzv_endpoint``); nothing here is node-specific.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import List

import torch
import torch.distributed as dist


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def init(device_type: str, timeout_s: int = 1800) -> None:
    """Join the process group torchrun describes (no-op for a single process)."""
    if env_world_size() <= 1 or is_initialized():
        return
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))


def cleanup() -> None:
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_reduce_sum(values: List[float], device: torch.device) -> List[float]:
    """Sum a list of floats over all ranks (float64)."""
    if not is_initialized():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_mean(values: List[float], device: torch.device) -> List[float]:
    n = world_size()
    return [v / n for v in all_reduce_sum(values, device)]


def any_rank(flag: bool, device: torch.device) -> bool:
    """True if ``flag`` is true on any rank (e.g. a SIGTERM seen by one process)."""
    return all_reduce_sum([1.0 if flag else 0.0], device)[0] > 0


def broadcast_object(obj, src: int = 0):
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj) -> list:
    """``[obj of rank 0, obj of rank 1, …]`` (``[obj]`` for a single process)."""
    if not is_initialized():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out
