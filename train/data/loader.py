"""Deterministic, resumable training batches.

The content of optimizer step ``s`` is a pure function of ``(seed, s)``: the global batch takes
the positions ``[s·B, (s+1)·B)`` of an endless sequence of epoch permutations (epoch ``e``
shuffled with ``(seed, e)``), and each item is augmented with its own generator seeded by
``(seed, s, position)``. Rank ``r`` of ``W`` takes positions ``r, r+W, …`` and splits them into
its accumulation micro-batches. So resuming needs only the step number, and any number of
ranks/micro-batches sees the same global batch as one process would.

(This replaces ``DistributedSampler``: it shards the same way — disjoint, equal shares per rank —
but its order depends on the step, not on an epoch counter kept in the loop.)
"""

from __future__ import annotations

import signal
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .base import SegmentationDataset
from .transforms import AugmentConfig, augment, class_masks


class StepPlan:
    """Which dataset items (and augmentation seeds) belong to each step, rank and micro-batch."""

    def __init__(self, dataset_len: int, global_batch: int, world: int, accumulate: int, seed: int):
        if dataset_len <= 0:
            raise ValueError("the training dataset is empty")
        if global_batch % (world * accumulate):
            raise ValueError(
                f"solver.batch_size={global_batch} must be divisible by ranks × accumulate = {world} × {accumulate}"
            )
        self.n, self.batch, self.world, self.accumulate, self.seed = dataset_len, global_batch, world, accumulate, seed
        self._perms: Dict[int, np.ndarray] = {}

    @property
    def micro_batch(self) -> int:
        return self.batch // (self.world * self.accumulate)

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._perms[epoch]

    def global_items(self, step: int) -> List[Tuple[int, int]]:
        """``(position, dataset index)`` of every item of the global batch of ``step``."""
        out = []
        for pos in range(step * self.batch, (step + 1) * self.batch):
            out.append((pos, int(self._perm(pos // self.n)[pos % self.n])))
        return out

    def rank_items(self, step: int, rank: int) -> List[List[Tuple[int, int]]]:
        """This rank's items of ``step``, split into ``accumulate`` micro-batches."""
        mine = self.global_items(step)[rank :: self.world]
        m = self.micro_batch
        return [mine[i * m : (i + 1) * m] for i in range(self.accumulate)]


class StepDataset(Dataset):
    """Item ``s`` = this rank's micro-batches of step ``s``, augmented and turned into targets."""

    def __init__(
        self,
        dataset: SegmentationDataset,
        plan: StepPlan,
        rank: int,
        aug: AugmentConfig,
        class_map: Sequence[int],
        max_iter: int,
    ):
        self.dataset, self.plan, self.rank, self.aug = dataset, plan, rank, aug
        self.class_map = np.asarray(class_map)
        self.max_iter = max_iter

    def __len__(self) -> int:
        return self.max_iter

    def item(self, step: int, position: int, index: int) -> Dict[str, torch.Tensor]:
        image, label = self.dataset.load(index)
        rng = np.random.default_rng([self.plan.seed, step, position])
        image, label = augment(image, label, self.aug, rng)
        labels, masks = class_masks(label, self.class_map)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "labels": torch.from_numpy(labels),
            "masks": torch.from_numpy(masks),
        }

    def __getitem__(self, step: int) -> List[Dict[str, object]]:
        micro = []
        for items in self.plan.rank_items(step, self.rank):
            samples = [self.item(step, pos, idx) for pos, idx in items]
            micro.append(
                {
                    "images": torch.stack([s["image"] for s in samples]),
                    "targets": [{"labels": s["labels"], "masks": s["masks"]} for s in samples],
                }
            )
        return micro


def _identity(x):
    return x


def _worker_init(_: int) -> None:
    # A SIGTERM sent to the whole process group (torchrun, SLURM) or a Ctrl-C (SIGINT to the
    # terminal's group) must reach the trainer, which checkpoints and exits; loader workers ignore
    # both and are shut down by the trainer.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def step_loader(ds: StepDataset, start_step: int, num_workers: int = 0) -> DataLoader:
    """Yields ``ds[start_step], ds[start_step + 1], …`` in order (workers prefetch ahead)."""
    return DataLoader(
        ds,
        batch_size=None,
        sampler=range(start_step, len(ds)),
        num_workers=num_workers,
        collate_fn=_identity,
        persistent_workers=False,
        worker_init_fn=_worker_init,
        prefetch_factor=2 if num_workers > 0 else None,
    )
