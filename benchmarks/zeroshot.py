"""Zero-shot accuracy of every SDK mode and backend on a model that means something.

    python benchmarks/zeroshot.py [--work DIR] [--clip-steps 400] [--iters 3000] [--docs]
    python benchmarks/zeroshot.py --precisions fp32,bf16,int8,fp16 --backends onnxruntime,openvino,torch

Runs the quick start's steps (``train.quickstart``: compositional world → small CLIP trained from
scratch → ZegFormer on the seen classes, CLIP frozen → bundle; resumable, cached in ``--work``),
then evaluates the bundle through the SDK on the held-out images with the official GZSS protocol
in each mode (``cropmask``, ``pruned``, ``maskpool``, ``proposal``) and backend (torch, ONNX
Runtime): seen / unseen mIoU, hIoU, agreement of each mode's label maps with ``cropmask``, and the
fraction of queries ``pruned`` sends to CLIP. ``--precisions`` adds the precision tiers (int8/fp16
graphs are added to the bundle, int8 calibrated on the world's training images): every agreement is
with the faithful map (the first backend's fp32 ``cropmask``), so this is where the precision tiers'
and fast modes' accuracy is measured on a model whose decisions are not noise. Writes
``benchmarks/results/zeroshot.{json,md}`` (``--docs`` also copies the example picture to
``docs/zeroshot_example.png``); ``benchmarks/latency.py`` shows these accuracies beside its speeds.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, machine, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("runs/zeroshot-benchmark"),
                   help="working folder, reused when re-run (default runs/zeroshot-benchmark)")
    p.add_argument("--train", type=int, default=400)
    p.add_argument("--val", type=int, default=60)
    p.add_argument("--clip-steps", type=int, default=400)
    p.add_argument("--iters", type=int, default=3000)
    p.add_argument("--backends", default="torch,onnxruntime",
                   help="comma list; the first one's fp32 cropmask is the faithful reference (default torch,onnxruntime)")
    p.add_argument("--precisions", default="fp32", help="comma list of tiers: fp32,bf16,int8,fp16 (each backend "
                   "runs the ones it supports on the CPU; default fp32)")
    p.add_argument("--calibration-images", type=int, default=40,
                   help="int8: training images of the world to calibrate on (default 40)")
    p.add_argument("--out-dir", type=Path, default=RESULTS, help="where zeroshot.{json,md} go")
    p.add_argument("--docs", action="store_true", help="copy the example picture to docs/zeroshot_example.png")
    return p.parse_args(argv)


def train_seconds(run: Path) -> Optional[float]:
    log = run / "train_log.jsonl"
    if not log.is_file():
        return None
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return float(lines[-1]["time_s"]) if lines else None


def markdown(clip: Dict[str, Any], records: List[Dict[str, Any]], meta: Dict[str, Any]) -> str:
    from train.quickstart import summary

    m = machine()
    tiers = (f" --precisions {','.join(meta['precisions'])} --backends {','.join(meta['backends'])}"
             if meta.get("precisions", ["fp32"]) != ["fp32"] else "")
    lines = ["# Zero-shot world: GZSS per SDK mode and backend", "",
             f"`python benchmarks/zeroshot.py --clip-steps {meta['clip_steps']} --iters {meta['iters']}"
             f"{tiers}` — "
             f"{meta['classes']} classes ({meta['unseen']} unseen), {meta['val']} held-out images at their own size "
             f"(~144 px). CLIP: {clip['clip_config']['vision_layers']}-layer ViT width "
             f"{clip['clip_config']['vision_width']}, patch {clip['clip_config']['patch_size']} on "
             f"{clip['clip_config']['image_size']}-px crops, {clip['clip_config']['text_layers']}-layer text "
             f"transformer width {clip['clip_config']['text_width']}, 77 tokens. Wall times: CLIP "
             f"{clip['seconds']:.0f} s, ZegFormer {meta['zegformer_seconds'] or float('nan'):.0f} s "
             f"({meta['iters']} steps). Machine: {m.get('cpu', m['processor'])}, {m['cpu_count']} cores, "
             "shared with other jobs during the run (times are pessimistic).", "",
             summary(clip, records)]
    return "\n".join(lines)


def evaluate_tiers(bundle: Path, data: Path, backends: List[str], precisions: List[str],
                   calibration_images: int) -> List[Dict[str, Any]]:
    """GZSS of every backend × precision × mode; int8/fp16 graphs added first (int8 calibrated on
    the world's training images, at their own size)."""
    from benchmarks.precision_bench import ensure_variants
    from train.data import build_dataset
    from train.zeroshot_eval import evaluate_bundle

    ensure_variants(bundle, precisions, calibration_images, calibration=data / "train" / "images",
                    calibration_size=144)
    dataset = build_dataset("folder", str(data), "val")
    return evaluate_bundle(bundle, dataset, backends=backends, precisions=precisions, progress=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = parse_args(argv)
    import logging

    from train import quickstart as qs

    logging.basicConfig(level=logging.WARNING)
    a.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = qs.step_world(a.work, a.train, a.val, 0)
    clip = qs.step_clip(a.work, data, a.clip_steps, [])
    checkpoint = qs.step_zegformer(a.work, data, a.iters, [])
    bundle = qs.step_export(a.work, checkpoint)
    backends = [b for b in a.backends.split(",") if b]
    precisions = [p for p in a.precisions.split(",") if p]
    records = qs.step_evaluate(a.work, bundle, data, backends, 0)
    if precisions != ["fp32"]:
        records = evaluate_tiers(bundle, data, backends, precisions, a.calibration_images)
    picture = qs.step_picture(a.work, bundle, data, records)
    from train.data.compositional import read_world

    world = read_world(data)
    meta = {"clip_steps": clip["steps"], "iters": a.iters, "classes": len(world.class_names),
            "unseen": len(world.unseen_pairs), "val": a.val, "zegformer_seconds": train_seconds(a.work / "run"),
            "clip_seconds": clip["seconds"], "clip_zero_shot": clip["zero_shot"], "bundle": str(bundle),
            "precisions": precisions, "backends": backends, "seconds_this_run": round(time.perf_counter() - t0, 1)}
    out = write_results("zeroshot", [{**r, "meta": meta} for r in records], markdown(clip, records, meta),
                        out_dir=a.out_dir)
    if a.docs:
        shutil.copyfile(picture, ROOT / "docs" / "zeroshot_example.png")
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
