"""The training loop: build everything from a config, train, checkpoint, evaluate, resume."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import nn

from . import distributed as dist
from . import train_state
from .checkpoint import read_checkpoint, save_checkpoint
from .classes import prompt_templates
from .config_io import Config, dump, loss_config, model_config, solver_config
from .data import MissingFileError, build_dataset
from .data.loader import StepDataset, StepPlan, step_loader
from .data.transforms import AugmentConfig
from .evaluate import evaluate_model
from .losses import SetCriterion, normalizers
from .matcher import HungarianMatcher
from .model import build_model
from .model.layers import thaw_batchnorm
from .runtime import TrainForward, pick_device, set_determinism, weights_digest
from .solver import build_optimizer, build_scheduler, clip_gradients

log = logging.getLogger(__name__)
EXIT_TERMINATED = 143  # 128 + SIGTERM: checkpoint written, run can be resumed
EXIT_INTERRUPTED = 130  # 128 + SIGINT (Ctrl-C): checkpoint written, run can be resumed


class TrainingStopped(RuntimeError):
    """Training stopped early (too many consecutive non-finite losses)."""


class Trainer:
    """Owns model, data, optimizer and state; ``run()`` trains to ``solver.max_iter``."""

    def __init__(self, cfg: Config, resume: Optional[Path] = None):
        self.cfg = cfg
        t = cfg["train"]
        self.device = pick_device(t["device"])
        dist.init(self.device.type)
        self.rank, self.world = dist.rank(), dist.world_size()
        if t["threads"]:
            torch.set_num_threads(int(t["threads"]))
        set_determinism(bool(t["deterministic"]))
        train_state.seed_everything(int(t["seed"]))
        self.out = Path(t["output_dir"])
        self.solver = solver_config(cfg)
        self._build_data()
        self._build_model()
        self.step, self.nonfinite, self._stop = 0, 0, False
        self._started, self._eval_seconds = time.perf_counter(), 0.0
        if resume:
            self._resume(Path(resume))
        self.writer = self._tensorboard() if dist.is_main() else None

    # ---- construction -------------------------------------------------------------------------
    def _build_data(self) -> None:
        d = self.cfg["data"]
        self.train_set = build_dataset(d["dataset"], d["root"], d["train_split"])
        try:
            self.val_set = build_dataset(d["dataset"], d["root"], d["val_split"]) if d["val_split"] else None
        except MissingFileError as e:
            log.warning("no validation split (%s): periodic evaluation is off", e)
            self.val_set = None
        self.aug = AugmentConfig(
            crop_size=int(d["crop_size"]),
            scales=tuple(d["scales"]),
            max_size=int(d["max_size"]),
            single_category_max_area=float(d["single_category_max_area"]),
            color_aug=bool(d["color_aug"]),
            flip=bool(d["flip"]),
        )
        self.plan = StepPlan(
            len(self.train_set),
            self.solver.batch_size,
            self.world,
            self.solver.accumulate,
            int(self.cfg["train"]["seed"]),
        )
        if not any(self.train_set.seen):
            raise ValueError(f"{self.train_set}: no seen classes to train on")

    def _build_model(self) -> None:
        from .init_weights import load_backbone, load_clip, load_our_checkpoint, official_init

        mcfg = model_config(self.cfg)
        self.model = build_model(mcfg)
        init = self.cfg["init"]
        if init["checkpoint"]:
            load_our_checkpoint(self.model, Path(init["checkpoint"]))
        else:
            official_init(self.model)
            if init["backbone"]:
                load_backbone(self.model, Path(init["backbone"]))
            if init["clip"]:
                load_clip(self.model, str(init["clip"]))
        if self.cfg["train"]["backbone_norm"] == "train":
            log.info("backbone BatchNorm trained: %d layers", thaw_batchnorm(self.model.backbone))
        for p in self.model.clip.parameters():  # CLIP is frozen, as officially
            p.requires_grad_(False)
        self.model.to(self.device)
        with torch.no_grad():
            self.text = self.model.text_embeddings(self.train_set.seen_names, prompt_templates(mcfg.train_prompt)).to(
                self.device
            )
        lc = loss_config(self.cfg)
        matcher = HungarianMatcher(lc.class_weight, lc.mask_weight, lc.dice_weight, lc.focal_alpha, lc.focal_gamma)
        self.criterion = SetCriterion(len(self.train_set.seen_names), lc, matcher)
        self.forward = TrainForward(self.model)
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward = nn.parallel.DistributedDataParallel(self.forward, device_ids=ids)
        self.optimizer = build_optimizer(self.model, self.solver)
        self.scheduler = build_scheduler(self.optimizer, self.solver)
        t = self.cfg["train"]
        amp = t["amp"] if t["amp"] != "auto" else self.device.type == "cuda"
        if self.device.type == "cuda":
            self.amp_dtype = getattr(torch, t["amp_dtype"]) if amp else None
        else:
            self.amp_dtype = torch.bfloat16 if t["cpu_bf16"] else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    def _resume(self, path: Path) -> None:
        payload = read_checkpoint(path)
        if "train_state" not in payload:
            raise ValueError(
                f"{path} has no train_state (not written by train/train.py); "
                "use init.checkpoint=PATH to start from its weights instead"
            )
        self.model.load_state_dict(payload["model"])
        self.step = train_state.restore(payload["train_state"], self.optimizer, self.scheduler, self.scaler)
        self.nonfinite = int(payload["train_state"].get("consecutive_nonfinite", 0))
        log.info("resumed from %s at step %d", path, self.step)

    def _tensorboard(self):
        if not self.cfg["train"]["tensorboard"]:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.info("tensorboard is not installed: no TensorBoard scalars (pip install tensorboard)")
            return None
        return SummaryWriter(str(self.out / "tb"), purge_step=self.step)

    # ---- one optimizer step ------------------------------------------------------------------
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_step(self, micro: List[Dict[str, object]]) -> Dict[str, float]:
        """Forward/backward over this rank's micro-batches, then one synchronised optimizer step."""
        q = self.model.cfg.num_queries
        local = np.sum([normalizers(m["targets"], q, self.criterion.cfg.no_object_weight) for m in micro], axis=0)
        total_masks, total_w = dist.all_reduce_sum([float(local[0]), float(local[1])], self.device)
        num_masks, ce_norm = max(total_masks / self.world, 1.0), total_w / self.world
        self.optimizer.zero_grad(set_to_none=True)
        sums: Dict[str, float] = {}
        for i, m in enumerate(micro):
            sync = self.world == 1 or i == len(micro) - 1
            ctx = contextlib.nullcontext() if sync else self.forward.no_sync()
            images = m["images"].to(self.device, non_blocking=True).float()
            targets = [{k: v.to(self.device, non_blocking=True) for k, v in t.items()} for t in m["targets"]]
            with ctx:
                with self._autocast():
                    out = self.forward(images, self.text)
                losses = self.criterion(out, targets, num_masks, ce_norm)
                self.scaler.scale(losses["loss"]).backward()
            for k in ("loss", "loss_ce", "loss_mask", "loss_dice"):
                sums[k] = sums.get(k, 0.0) + float(losses[k].detach())
        finite = all(math.isfinite(v) for v in sums.values())
        keys = sorted(sums)
        red = dist.all_reduce_sum(
            [sums[k] for k in keys] + [0.0 if finite else 1.0, 1.0 if self._stop else 0.0], self.device
        )
        stats = {k: v / self.world for k, v in zip(keys, red)}
        finite, self._stop = red[-2] == 0, red[-1] > 0
        if finite:
            self.scaler.unscale_(self.optimizer)
            stats["grad_norm"] = float(clip_gradients(self.model.parameters(), self.solver.clip_grad_norm))
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.nonfinite = 0
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self.nonfinite += 1
        stats["finite"] = float(finite)
        stats["lr"] = max(g["lr"] for g in self.optimizer.param_groups)
        with warnings.catch_warnings():  # a skipped first step makes torch warn about the call order
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()
        return stats

    # ---- the loop ----------------------------------------------------------------------------
    def run(self) -> int:
        """Train from ``self.step`` to ``max_iter``; returns the process exit code."""
        t = self.cfg["train"]
        if dist.is_main():
            self.out.mkdir(parents=True, exist_ok=True)
            dump(self.cfg, self.out / "config.yaml")
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        previous_int = signal.signal(signal.SIGINT, self._on_sigterm)  # Ctrl-C checkpoints too
        self._signal = signal.SIGTERM  # (another rank's signal stops this one as a SIGTERM)
        ds = StepDataset(
            self.train_set, self.plan, self.rank, self.aug, self.train_set.seen_map(), self.solver.max_iter
        )
        bar = self._progress()
        self._started = started = last_time = time.perf_counter()
        self.forward.train()
        self.model.clip.eval()
        try:
            for micro in step_loader(ds, self.step, int(self.cfg["data"]["num_workers"])):
                torch.manual_seed(train_state.step_seed(int(t["seed"]), self.step, self.rank))
                stats = self.train_step(micro)
                self.step += 1
                now = time.perf_counter()
                stats["images_per_s"] = self.solver.batch_size / max(now - last_time, 1e-9)
                self._log(stats, now - started, bar)
                if not stats["finite"] and self.nonfinite >= int(t["max_nonfinite"]):
                    self.save("last.pth")
                    raise TrainingStopped(
                        f"{self.nonfinite} consecutive non-finite losses at step {self.step}: "
                        "lower solver.lr, check the data, or disable AMP (train.amp=false)"
                    )
                if self._stop:
                    self.save("last.pth")
                    name = signal.Signals(self._signal).name
                    log.warning(
                        "%s: checkpoint %s written at step %d; exiting (continue with the same command)",
                        name,
                        self.out / "last.pth",
                        self.step,
                    )
                    return EXIT_INTERRUPTED if self._signal == signal.SIGINT else EXIT_TERMINATED
                if t["checkpoint_period"] and self.step % int(t["checkpoint_period"]) == 0:
                    self.save("last.pth")
                if t["eval_period"] and self.step % int(t["eval_period"]) == 0 and self.step < self.solver.max_iter:
                    self.evaluate()
                last_time = time.perf_counter()
            self.save("last.pth")
            self.save("model_final.pth")
            self.check_replicas()
            self.evaluate()
            return 0
        finally:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)
            if bar is not None:
                bar.close()
            if self.writer is not None:
                self.writer.close()

    def _on_sigterm(self, signum, frame) -> None:
        if self._stop and signum == signal.SIGINT:  # a second Ctrl-C: stop now, without a checkpoint
            raise KeyboardInterrupt
        self._stop, self._signal = True, signum

    def _progress(self):
        if not (dist.is_main() and self.cfg["train"]["progress"]):
            return None
        from tqdm import tqdm

        return tqdm(total=self.solver.max_iter, initial=self.step, desc="train", unit="it", dynamic_ncols=True)

    def _log(self, stats: Dict[str, float], elapsed: float, bar) -> None:
        if not dist.is_main():
            return
        if bar is not None:
            bar.update(1)
            bar.set_postfix(
                loss=f"{stats['loss']:.3f}",
                img_s=f"{stats['images_per_s']:.1f}",
                lr=f"{stats['lr']:.2e}",
                refresh=False,
            )
        if self.step % int(self.cfg["train"]["log_period"]) and self.step != self.solver.max_iter:
            return
        record = {"step": self.step, "time_s": round(elapsed, 3), **{k: float(v) for k, v in stats.items()}}
        with open(self.out / "train_log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for k, v in stats.items():
                self.writer.add_scalar(f"train/{k}", v, self.step)
        log.info(
            "step %d: loss %.4f (ce %.4f mask %.4f dice %.4f) lr %.2e %.1f img/s",
            self.step,
            stats["loss"],
            stats["loss_ce"],
            stats["loss_mask"],
            stats["loss_dice"],
            stats["lr"],
            stats["images_per_s"],
        )

    # ---- checkpoints and evaluation ----------------------------------------------------------
    def save(self, name: str) -> Path:
        path = self.out / name
        if dist.is_main():
            state = train_state.capture(self.step, self.optimizer, self.scheduler, self.scaler, self.nonfinite)
            save_checkpoint(
                path,
                self.model,
                self.train_set.class_names,
                self.train_set.seen,
                extra={"train_state": state, "train_config": self.cfg},
            )
        dist.barrier()
        return path

    def check_replicas(self) -> bool:
        """Every rank's weights hash to the same value (written to ``replicas.json``)."""
        digests = dist.all_gather_object(weights_digest(self.model))
        same = len(set(digests)) == 1
        if dist.is_main():
            (self.out / "replicas.json").write_text(
                json.dumps({"step": self.step, "sha256": digests, "identical": same}, indent=1) + "\n"
            )
        if not same:
            log.error("ranks hold different weights at step %d: %s", self.step, digests)
        return same

    def evaluate(self) -> Optional[Dict[str, object]]:
        """Evaluate on the validation split under each configured protocol (images shared across
        ranks); rank 0 writes ``metrics.json`` (latest) and appends to ``eval_log.jsonl``."""
        if self.val_set is None:
            return None
        e = self.cfg["eval"]
        results: Dict[str, object] = {}
        t_start = time.perf_counter()
        for protocol in e["protocols"]:
            t0 = time.perf_counter()
            metrics = evaluate_model(
                self.model,
                self.val_set,
                self.train_set.seen_names,
                e["mode"],
                int(e["min_size"]),
                int(e["max_size"]),
                int(e["max_images"]),
                e["calibrate"],
                self.rank,
                self.world,
                self._reduce,
                bool(self.cfg["train"]["progress"]),
                protocol,
            )
            metrics["seconds"] = round(time.perf_counter() - t0, 2)
            results[protocol] = metrics
        self.model.clip.eval()
        self._eval_seconds += time.perf_counter() - t_start
        if dist.is_main() and results:
            self._record_eval(results, e["mode"])
        return results

    def _reduce(self, conf: np.ndarray) -> np.ndarray:
        if self.world == 1:
            return conf
        ct = torch.from_numpy(conf).to(self.device)
        torch.distributed.all_reduce(ct)
        return ct.cpu().numpy()

    def _record_eval(self, results: Dict[str, object], mode: str) -> None:
        elapsed = time.perf_counter() - self._started
        record = {
            "step": self.step,
            "mode": mode,
            "time_s": round(elapsed, 2),
            "train_time_s": round(elapsed - self._eval_seconds, 2),
            **{
                p: {"official": m["official"], "nan_safe": m["nan_safe"], "seconds": m["seconds"]}
                for p, m in results.items()
            },
        }
        with open(self.out / "eval_log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        (self.out / "metrics.json").write_text(
            json.dumps({"step": self.step, "mode": mode, **results}, indent=1) + "\n"
        )
        for protocol, m in results.items():
            off = m["official"]
            if self.writer is not None:
                for k, v in off.items():
                    if v is not None:
                        self.writer.add_scalar(f"eval_{protocol}/{k}", v, self.step)
            log.info(
                "eval (%s) at step %d: seen mIoU %s, unseen mIoU %s, hIoU %s, mIoU %s (official)",
                protocol,
                self.step,
                off["seen_mIoU"],
                off["unseen_mIoU"],
                off["hIoU"],
                off["mIoU"],
            )
