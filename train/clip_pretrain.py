"""Train a small CLIP from scratch on the compositional world, on the CPU, in minutes.

    python -m train.clip_pretrain --config configs/zeroshot-world.yaml --data data/world --out runs/world-clip

The architecture is the config's ``model.clip`` (an open_clip ``CLIP``: ViT image tower, text
transformer with the real CLIP BPE tokenizer and context length 77 — the same graphs, tokenizer
and export/SDK paths as ViT-B/16, only smaller). Training is contrastive on masked region crops
and whole images with template captions (``train.data.captions``); a caption counts as a positive
for every crop it is true of (``"something wavy"`` fits all wavy crops); 30 % of crops are shown in
grey and captioned by their texture alone, so texture features do not depend on colour. Unseen
classes never appear. The text tower is run on the first ``max(EOT)+1`` token positions only: with the causal
mask and end-of-text pooling this is exactly the 77-token result, several times cheaper.

After training, the CLIP logit scale is set by temperature scaling on seen-class crops only
(:func:`calibrate_logit_scale`): the ensemble reads CLIP's probabilities, as it reads the real CLIP's.

Writes ``OUT/clip.pt`` (an OpenAI-named state dict: what ``init.clip=``, ``convert_official --clip``
and ``load_clip`` read) and ``OUT/clip.json`` (architecture, training record, held-out zero-shot
accuracy of crops of seen and *unseen* classes), into a temporary folder renamed to ``OUT`` at the
end: ``OUT`` is complete or absent.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .classes import prompt_templates
from .config import ModelConfig
from .config_io import load_config, model_config
from .data.captions import CAPTION_MIX, CropSampler, positives
from .data.compositional import World, read_world
from .model.clip import build_clip, encode_image
from .model.text import class_text_embeddings, tokenize
from .text_geometry import attribute_balance

log = logging.getLogger(__name__)


@dataclass
class ClipTrainConfig:
    # the quick start's: the loss levels off by step ~400 of 800, and 600 steps keep the quick start in
    # 15 minutes (zeroshot_reproducibility.md, ninth pass)
    steps: int = 600
    batch_size: int = 128
    # 2e-3 left more seeds with a text tower that composes an unseen name from one word (a catch-all);
    # with the world's calibration of 0, 1e-3 put four seeds of five within 1.4 points of unseen mIoU
    # (zeroshot_reproducibility.md, eighth pass)
    lr: float = 1e-3
    warmup: int = 60
    weight_decay: float = 0.1
    minutes: float = 0.0  # > 0: stop (and cosine-anneal) by wall time instead of steps
    seed: int = 0
    threads: int = 1  # torch threads; a busy 2-core CPU runs 1 thread + 1 data worker best
    workers: int = 1  # data processes rendering scenes, crops and captions
    eval_per_class: int = 40
    caption_mix: Tuple[float, float, float, float] = CAPTION_MIX  # see train.data.captions.sample_caption
    grey: float = 0.3  # share of training crops shown in grey, captioned by their texture alone


def encode_text_short(clip: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``train.model.clip.encode_text`` on the first ``max(EOT)+1`` positions (identical result)."""
    eot = tokens.argmax(dim=-1)
    n = int(eot.max()) + 1
    x = clip.token_embedding(tokens[:, :n]) + clip.positional_embedding[:n]
    x = clip.transformer(x, attn_mask=clip.attn_mask[:n, :n])
    x = clip.ln_final(x)
    return x[torch.arange(x.shape[0]), eot] @ clip.text_projection


def multi_positive_loss(img: torch.Tensor, txt: torch.Tensor, pos: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE where every true (image, caption) pair is a positive, weighted equally."""
    logits = scale * img @ txt.t()
    i2t = -(pos / pos.sum(1, keepdim=True) * F.log_softmax(logits, 1)).sum(1).mean()
    t2i = -(pos / pos.sum(0, keepdim=True) * F.log_softmax(logits, 0)).sum(0).mean()
    return (i2t + t2i) / 2


class TokenCache:
    def __init__(self, context_length: int):
        self.ctx, self.cache = context_length, {}

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            for t, ids in zip(missing, tokenize(missing, self.ctx)):
                self.cache[t] = ids
        return torch.stack([self.cache[t] for t in texts])


class CropBatches(torch.utils.data.IterableDataset):
    """Endless ``(crops, token ids, positives)`` training batches, rendered in a loader process."""

    def __init__(self, world: World, mcfg: ModelConfig, cfg: ClipTrainConfig):
        super().__init__()
        self.world, self.mcfg, self.cfg = world, mcfg, cfg

    def __iter__(self):
        m = self.mcfg
        info = torch.utils.data.get_worker_info()
        # each data process its own stream (the DataLoader takes batches from them in a fixed turn);
        # one process keeps the plain seed
        seed = (self.cfg.seed, info.id) if info is not None and info.num_workers > 1 else self.cfg.seed
        sampler = CropSampler(
            self.world,
            m.crop_size,
            m.clip_pixel_mean,
            m.clip_pixel_std,
            seed=seed,
            caption_mix=self.cfg.caption_mix,
            grey=self.cfg.grey,
        )
        tokens = TokenCache(m.clip.context_length)
        torch.set_num_threads(1)
        while True:
            crops, captions, img_att, cap_att = sampler.batch(self.cfg.batch_size)
            yield crops, tokens(captions), positives(img_att, cap_att)


@torch.no_grad()
def zero_shot_accuracy(
    clip: torch.nn.Module, world: World, mcfg: ModelConfig, per_class: int = 40, seed: int = 1234
) -> Dict[str, object]:
    """Held-out crops (fresh scenes of all classes, exact masks) classified by the CLIP prompt
    ensemble of the class names: accuracy on seen and unseen classes among all classes
    (generalized) and unseen among unseen only, with chance levels."""
    clip.eval()
    names, seen = world.class_names, np.array(world.seen)
    text = class_text_embeddings(clip, names, prompt_templates(mcfg.clip_prompt))
    sampler = CropSampler(
        world, mcfg.crop_size, mcfg.clip_pixel_mean, mcfg.clip_pixel_std, seed=seed, classes=range(len(names))
    )
    crops, labels = [], []
    while len(labels) < per_class * len(names):
        c, regions = sampler.regions(jitter=False)
        crops.append(c)
        labels += [r["class"] for r in regions]
    feats = torch.cat([encode_image(clip, x) for x in torch.cat(crops).split(256)])
    scores = (feats @ text.t()).numpy()
    labels = np.array(labels)
    pred = scores.argmax(1)
    unseen_ids = np.flatnonzero(~seen)
    pred_unseen_only = unseen_ids[scores[:, unseen_ids].argmax(1)]
    is_unseen = ~seen[labels]

    def acc(mask, p):
        return float((p[mask] == labels[mask]).mean()) if mask.any() else None

    return {
        "crops": int(len(labels)),
        "classes": len(names),
        "unseen_classes": int(len(unseen_ids)),
        "seen_acc_all": acc(~is_unseen, pred),
        "unseen_acc_all": acc(is_unseen, pred),
        "unseen_acc_unseen_only": acc(is_unseen, pred_unseen_only),
        "chance_all": 1 / len(names),
        "chance_unseen_only": 1 / max(1, len(unseen_ids)),
        "per_class_acc": {names[k]: acc(labels == k, pred) for k in range(len(names))},
    }


@torch.no_grad()
def text_balance(clip: torch.nn.Module, world: World, mcfg: ModelConfig) -> Dict[str, object]:
    """:func:`train.text_geometry.attribute_balance` of the class names' prompt-ensemble embeddings."""
    text = class_text_embeddings(clip.eval(), world.class_names, prompt_templates(mcfg.clip_prompt))
    return attribute_balance(text.numpy(), world.pairs, world.seen)


def saved_text_balance(
    clip_dir: Path, info: Dict[str, object], config: Path, overrides: Sequence[str] = ()
) -> Dict[str, object]:
    """:func:`text_balance` of a written CLIP folder whose ``clip.json`` is ``info``: its record, or
    measured now for a folder written before that record existed."""
    if "text_balance" in info:
        return info["text_balance"]
    mcfg = model_config(load_config(config, overrides))
    clip = build_clip(info["clip_config"])
    clip.load_state_dict(torch.load(Path(clip_dir) / "clip.pt", map_location="cpu", weights_only=True))
    return text_balance(clip, World.from_dict(info["world"]), mcfg)


@torch.no_grad()
def calibrate_logit_scale(
    clip: torch.nn.Module, world: World, mcfg: ModelConfig, per_class: int = 30, seed: int = 4321
) -> float:
    """Temperature scaling (Guo et al., 2017) on the *seen* classes only: the CLIP logit scale that
    maximises the likelihood of the right class among the seen class names on fresh seen-class crops.

    The contrastive loss with multi-positive captions settles on a soft temperature (~14); the
    ZegFormer ensemble reads CLIP's probabilities (``softmax(scale * cos)``), as the official model
    does with CLIP's 100. Written into ``clip.logit_scale`` (what export records); returns it."""
    seen_ids = [i for i, s in enumerate(world.seen) if s]
    names = [world.class_names[i] for i in seen_ids]
    text = class_text_embeddings(clip, names, prompt_templates(mcfg.clip_prompt))
    sampler = CropSampler(world, mcfg.crop_size, mcfg.clip_pixel_mean, mcfg.clip_pixel_std, seed=seed, classes=seen_ids)
    crops, labels = [], []
    while len(labels) < per_class * len(names):
        c, regions = sampler.regions()
        crops.append(c)
        labels += [seen_ids.index(r["class"]) for r in regions]
    cos = torch.cat([encode_image(clip, x) for x in torch.cat(crops).split(256)]) @ text.t()
    target = torch.tensor(labels)
    grid = torch.exp(torch.linspace(math.log(5.0), math.log(100.0), 60))
    nll = torch.stack([F.cross_entropy(s * cos, target) for s in grid])
    best = float(grid[int(nll.argmin())])
    clip.logit_scale.fill_(math.log(best))
    return best


def lr_at(step: int, total: int, cfg: ClipTrainConfig, progress: float) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train_clip(world: World, mcfg: ModelConfig, cfg: ClipTrainConfig, progress: bool = True) -> Dict[str, object]:
    """Train; returns ``{"model", "log", "seconds", "steps"}``."""
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    clip = build_clip(vars(mcfg.clip)).train()
    decay = [p for n, p in clip.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in clip.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
        foreach=True,
    )
    batches = iter(
        torch.utils.data.DataLoader(
            CropBatches(world, mcfg, cfg),
            batch_size=None,
            num_workers=cfg.workers,
            prefetch_factor=4 if cfg.workers else None,
        )
    )
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps if not cfg.minutes else None, desc="clip", unit="it", dynamic_ncols=True)
    records: List[Dict[str, float]] = []
    t0, cpu0, step = time.perf_counter(), time.process_time(), 0
    while True:
        elapsed = time.perf_counter() - t0
        frac = elapsed / (cfg.minutes * 60) if cfg.minutes else step / cfg.steps
        if frac >= 1.0:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg.steps, cfg, frac)
        crops, tokens, pos = next(batches)
        img = encode_image(clip, crops)
        txt = encode_text_short(clip, tokens)
        txt = txt / txt.norm(dim=-1, keepdim=True)
        loss = multi_positive_loss(img, txt, pos, clip.logit_scale.exp().clamp(max=100))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(clip.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 20 == 0 or step == 1:
            records.append(
                {
                    "step": step,
                    "time_s": round(time.perf_counter() - t0, 2),
                    "loss": float(loss.detach()),
                    "logit_scale": float(clip.logit_scale.detach().exp()),
                }
            )
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)
    if bar is not None:
        bar.close()
    return {
        "model": clip.eval(),
        "log": records,
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - cpu0,
        "steps": step,
    }


def save_clip(out: Path, clip: torch.nn.Module, info: Dict[str, object]) -> Path:
    """Write ``clip.pt`` + ``clip.json`` into a temporary sibling folder, then rename it to ``out``."""
    out = Path(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    torch.save({k: v.detach().cpu() for k, v in clip.state_dict().items()}, tmp / "clip.pt")
    (tmp / "clip.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def pretrain(
    config: Path,
    data: Optional[Path],
    out: Path,
    cfg: ClipTrainConfig,
    overrides: Sequence[str] = (),
    progress: bool = True,
) -> Dict[str, object]:
    """Train, evaluate zero-shot and save; returns the ``clip.json`` record."""
    mcfg = model_config(load_config(config, overrides))
    world = (read_world(data) if data else None) or World()
    run = train_clip(world, mcfg, cfg, progress)
    learned_scale = float(run["model"].logit_scale.detach().exp())
    scale = calibrate_logit_scale(run["model"], world, mcfg)
    metrics = zero_shot_accuracy(run["model"], world, mcfg, cfg.eval_per_class)
    balance = text_balance(run["model"], world, mcfg)
    info = {
        "format": "zegformer-sdk/world-clip",
        "clip_config": asdict(mcfg.clip),
        "world": world.to_dict(),
        "train": asdict(cfg),
        "steps": run["steps"],
        "seconds": round(run["seconds"], 1),
        "cpu_seconds_main_process": round(run["cpu_seconds"], 1),
        "threads": torch.get_num_threads(),
        "log": run["log"],
        "zero_shot": metrics,
        "text_balance": balance,
        "logit_scale": {"learned": round(learned_scale, 3), "calibrated_on_seen": round(scale, 3)},
    }
    save_clip(out, run["model"], info)
    return info


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m train.clip_pretrain", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--config",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "configs" / "zeroshot-world.yaml",
        help="the ZegFormer config whose model.clip is trained",
    )
    ap.add_argument(
        "--data", type=Path, help="a world folder (its meta.json names the world); default: the default world"
    )
    ap.add_argument("--out", type=Path, required=True, help="output folder (replaced when complete)")
    d = ClipTrainConfig()
    ap.add_argument("--steps", type=int, default=d.steps, help=f"optimizer steps (default {d.steps})")
    ap.add_argument("--minutes", type=float, default=0.0, help="train for this wall time instead of --steps")
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--threads", type=int, default=d.threads, help=f"torch threads (default {d.threads})")
    ap.add_argument("--workers", type=int, default=d.workers, help=f"data processes (default {d.workers})")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument(
        "--grey",
        type=float,
        default=d.grey,
        help=f"share of crops shown in grey and captioned by their texture alone, which keeps texture features "
        f"free of colour (default {d.grey})",
    )
    ap.add_argument("overrides", nargs="*", help="KEY=VALUE overrides of the config (e.g. model.clip.vision_layers=2)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = ClipTrainConfig(
        steps=a.steps,
        minutes=a.minutes,
        batch_size=a.batch_size,
        lr=a.lr,
        threads=a.threads,
        workers=a.workers,
        seed=a.seed,
        grey=a.grey,
    )
    info = pretrain(a.config, a.data, a.out, cfg, a.overrides)
    z = info["zero_shot"]
    print(
        f"CLIP trained {info['steps']} steps in {info['seconds']:.0f} s → {a.out / 'clip.pt'}\n"
        f"held-out crops: seen {z['seen_acc_all']:.3f}, unseen {z['unseen_acc_all']:.3f} (among all "
        f"{z['classes']}, chance {z['chance_all']:.3f}); unseen among unseen {z['unseen_acc_unseen_only']:.3f} "
        f"(chance {z['chance_unseen_only']:.3f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
