"""The quick start: zero-shot segmentation you can measure, from nothing, on a CPU.

    python -m train.quickstart [--out DIR] [--clip-steps N] [--iters N] [--val N]

Needs no downloads. In ``--out`` (default ``./quickstart``) it
  1. writes the compositional world (``train.data.compositional``): regions named by colour ×
     texture phrases ("lime wavy"); 8 of the 40 classes are *unseen* — new combinations of
     attributes seen elsewhere — and never appear in any training image or caption;
  2. trains a small CLIP from scratch on region crops and captions (``train.clip_pretrain``);
  3. trains ZegFormer on the seen classes with that CLIP frozen (the official recipe);
  4. exports a bundle (``python -m export``);
  5. evaluates the bundle through the SDK with the official GZSS protocol in every mode
     (seen / unseen mIoU, hIoU, agreement with ``cropmask``; ``--backends`` adds torch), and
  6. saves a picture of an unseen class found by name.

Every step writes to a temporary name and renames when complete, so each output is complete or
absent: re-running after Ctrl-C continues (ZegFormer training resumes from its last checkpoint)
or restarts the interrupted step. Delete a step's output to redo it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parent.parent  # the checkout (the quick start runs from it)
CONFIG = REPO / "configs" / "zeroshot-world.yaml"


# The same x86 kernels on every CPU with AVX2: torch picks AVX-512 kernels where the CPU has them and
# AVX2 ones elsewhere, and the two round differently from the first training step on (measured: loss
# 25.416285 vs 25.416286 at step 1), which thousands of steps amplify into a different model. Read lazily by
# torch, MKL and oneDNN, so setting them before the first tensor operation is enough.
PORTABLE_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def pin_cpu_kernels(native: bool = False) -> str:
    """Use the AVX2 kernel paths (unless ``native`` or the CPU lacks AVX2); returns the path torch uses.
    Only in a process that has not imported torch yet (a command line): elsewhere the choice may be
    made already, and the environment of a process that imported this module is left alone."""
    fresh = "torch" not in sys.modules
    import torch

    if fresh and not native and torch.cpu._is_avx2_supported():
        for key, value in PORTABLE_KERNELS.items():
            os.environ.setdefault(key, value)
    return str(torch.backends.cpu.get_cpu_capability())


# The quick start's settings, also the defaults of ``benchmarks/zeroshot.py`` (its band holds for them).
DEFAULTS = {"train": 2000, "val": 200, "clip_steps": 600, "iters": 4000}

# The held-out images are the same for every --seed: the seed spread then measures training, not which
# 200 images were drawn (on one model, 60-image draws moved unseen mIoU from 33 to 51).
VAL_SEED = 0


def say(msg: str) -> None:
    print(f"[quickstart] {msg}", flush=True)


def fresh_tmp(path: Path) -> Path:
    """An empty temporary sibling of ``path`` (a stale one from an interrupted run is removed)."""
    tmp = path.parent / f".{path.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    return tmp


def step_world(out: Path, num_train: int, num_val: int, seed: int) -> Path:
    from .data.compositional import World, generate_folder

    data = out / "data"
    if (data / "meta.json").is_file():
        say(f"1/6 world: using {data}")
        return data
    say(f"1/6 world: writing {num_train} training and {num_val} held-out images to {data}")
    tmp = fresh_tmp(data)
    generate_folder(tmp, World(), num_train, num_val, seed=seed, progress=True, val_seed=VAL_SEED)
    os.replace(tmp, data)
    return data


def step_clip(out: Path, data: Path, steps: int, overrides: Sequence[str], seed: int = 0) -> Dict[str, object]:
    from .clip_pretrain import ClipTrainConfig, pretrain, saved_text_balance

    clip_dir = out / "clip"
    if (clip_dir / "clip.json").is_file():
        say(f"2/6 CLIP: using {clip_dir / 'clip.pt'}")
        info = json.loads((clip_dir / "clip.json").read_text(encoding="utf-8"))
        info["text_balance"] = saved_text_balance(clip_dir, info, CONFIG, overrides)
        return info
    say(f"2/6 CLIP: training a small CLIP from scratch for {steps} steps → {clip_dir}")
    return pretrain(CONFIG, data, clip_dir, ClipTrainConfig(steps=steps, seed=seed), overrides)


def train_config(data: Path, run: Path, clip: Path, iters: int, overrides: Sequence[str], seed: int = 0) -> dict:
    from .config_io import load_config

    return load_config(
        CONFIG,
        [
            f"train.seed={seed}",
            *overrides,
            f"data.root={data}",
            f"train.output_dir={run}",
            f"init.clip={clip}",
            f"solver.max_iter={iters}",
            "eval.protocols=[]",
        ],
    )


def step_zegformer(out: Path, data: Path, iters: int, overrides: Sequence[str], seed: int = 0) -> Path:
    from .engine import Trainer

    run = out / "run"
    final = run / "model_final.pth"
    if final.is_file():
        say(f"3/6 ZegFormer: using {final}")
        return final
    cfg = train_config(data, run, out / "clip" / "clip.pt", iters, overrides, seed)
    resume = run / "last.pth" if (run / "last.pth").is_file() else None
    say(
        f"3/6 ZegFormer: training on the seen classes, CLIP frozen, {iters} steps → {run}"
        + (f" (resuming {resume})" if resume else "")
    )
    if Trainer(cfg, resume=resume).run() != 0:
        raise SystemExit("[quickstart] ZegFormer training stopped; re-run to resume")
    return final


def step_export(out: Path, checkpoint: Path) -> Path:
    from export.__main__ import main as export_main

    bundle = out / "bundle"
    if (bundle / "manifest.json").is_file():
        say(f"4/6 export: using {bundle}")
        return bundle
    say(f"4/6 export: writing the bundle {bundle}")
    rc = export_main(
        [
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(bundle),
            "--dense-size",
            "128x128",
            "--image-size",
            "160x160",
            "--force",
            "--no-progress",
            "-q",
        ]
    )
    if rc not in (0, None):
        raise SystemExit(f"[quickstart] export failed (exit code {rc})")
    return bundle


def step_evaluate(out: Path, bundle: Path, data: Path, backends: Sequence[str], max_images: int) -> List[dict]:
    from sdk.atomicio import write_json_atomic

    from .data import build_dataset
    from .zeroshot_eval import evaluate_bundle

    path = out / "gzss.json"
    if path.is_file():
        say(f"5/6 evaluation: using {path}")
        return json.loads(path.read_text(encoding="utf-8"))["records"]
    dataset = build_dataset("folder", str(data), "val")
    n = min(max_images, len(dataset)) if max_images else len(dataset)
    say(f"5/6 evaluation: {n} held-out images through the SDK, every mode, backends {', '.join(backends)}")
    records = evaluate_bundle(bundle, dataset, backends=backends, max_images=max_images, progress=True)
    write_json_atomic(path, {"bundle": str(bundle), "images": n, "records": records})
    return records


def step_picture(out: Path, bundle: Path, data: Path, records: List[dict]) -> Path:
    """Input | cropmask (every class) | proposal mode, on the held-out image where cropmask finds an
    unseen class best; unseen classes are marked ``*`` in the legends."""
    from .data import build_dataset

    path = out / "zeroshot_example.png"
    if path.is_file():
        say(f"6/6 picture: {path}")
        return path
    from sdk import Segmenter
    from sdk.atomicio import atomic_path
    from sdk.visualize import save_rgb

    dataset = build_dataset("folder", str(data), "val")
    names = list(dataset.class_names)
    seg = Segmenter(str(bundle), backend="onnxruntime", device="cpu", min_size=None, cache_dir=False, vocabulary=names)
    best, best_score = 0, -1.0
    for i in range(min(len(dataset), 40)):
        image, label = dataset.load(i)
        pred = np.asarray(seg(image).label_map)
        for k in np.unique(label[label >= 0]):
            if dataset.seen[k]:
                continue
            iou = np.logical_and(pred == k, label == k).sum() / np.logical_or(pred == k, label == k).sum()
            score = iou * min(1.0, (label == k).mean() * 5)  # prefer sizeable regions
            if score > best_score:
                best, best_score = i, score
    image, _ = dataset.load(best)
    panels = [_panel(image, None, "input (* = unseen class)")]
    for mode, title in (("cropmask", "cropmask (faithful)"), ("proposal", "proposal (no CLIP)")):
        panels.append(_panel(image, seg(image, mode=mode), title))
    height = max(p.shape[0] for p in panels)
    canvas = np.concatenate(
        [np.pad(p, ((0, height - p.shape[0]), (0, 6), (0, 0)), constant_values=255) for p in panels], 1
    )
    with atomic_path(path) as tmp:
        save_rgb(tmp, canvas)
    say(f"6/6 picture: {path} (held-out image {best})")
    return path


def _panel(image: np.ndarray, result, title: str, zoom: int = 2) -> np.ndarray:
    from dataclasses import replace

    import cv2

    from sdk.visualize import overlay

    big = np.repeat(np.repeat(image, zoom, 0), zoom, 1)
    if result is None:
        panel = big
    else:
        labels = np.repeat(np.repeat(result.label_map, zoom, 0), zoom, 1)
        segments = [
            replace(s, name=s.name + ("" if s.seen else " *"), area=s.area * zoom * zoom, label_map=labels)
            for s in result.segments
        ]
        panel = overlay(big, replace(result, label_map=labels, segments=segments), alpha=0.55)
    head = np.full((26, panel.shape[1], 3), 255, np.uint8)
    cv2.putText(head, title, (4, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([head, panel], 0)


def summary(clip_info: Dict[str, object], records: List[dict]) -> str:
    from .text_geometry import warnings
    from .zeroshot_eval import FAITHFUL_MODE, markdown_table, takeover_lines

    z = clip_info["zero_shot"]
    lines = [
        f"CLIP ({clip_info['steps']} steps, {clip_info['seconds']:.0f} s): held-out crops of unseen classes "
        f"named correctly {100 * z['unseen_acc_unseen_only']:.1f} % among the {z['unseen_classes']} unseen "
        f"classes (chance {100 * z['chance_unseen_only']:.1f} %), {100 * z['unseen_acc_all']:.1f} % among all "
        f"{z['classes']} (chance {100 * z['chance_all']:.1f} %); seen classes {100 * z['seen_acc_all']:.1f} %.",
        *(f"WARNING: {w}" for w in warnings(clip_info["text_balance"])),
        "",
        "Generalized zero-shot segmentation of the held-out images (official metrics, %):",
        "",
        markdown_table(records),
    ]
    faithful = next((r for r in records if r["mode"] == FAITHFUL_MODE), None)
    if faithful is not None:
        lines += ["", *takeover_lines(faithful)]
    return "\n".join(lines)


def band_lines(a: argparse.Namespace, records: List[dict]) -> List[str]:
    """This run next to the expected band (``train/resources/zeroshot_band.json``, measured over seeds)."""
    from .zeroshot_band import read_band, verdict

    val = int(records[0]["images"]) if records else a.val  # what was evaluated (an existing world keeps its size)
    return verdict(records, read_band(), {"train": a.train, "val": val, "clip_steps": a.clip_steps, "iters": a.iters})


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m train.quickstart", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=Path("quickstart"), help="working folder (default ./quickstart)")
    d = DEFAULTS
    ap.add_argument("--train", type=int, default=d["train"], help=f"training images (default {d['train']})")
    ap.add_argument("--val", type=int, default=d["val"], help=f"held-out images (default {d['val']})")
    ap.add_argument(
        "--clip-steps", type=int, default=d["clip_steps"], help=f"CLIP training steps (default {d['clip_steps']})"
    )
    ap.add_argument("--iters", type=int, default=d["iters"], help=f"ZegFormer training steps (default {d['iters']})")
    ap.add_argument(
        "--backends",
        default="onnxruntime",
        help="SDK backends to evaluate, comma list (default onnxruntime; torch,onnxruntime also shows the PyTorch "
        "reference's maps agree, ~15 s more)",
    )
    ap.add_argument("--eval-images", type=int, default=0, help="evaluate only the first N held-out images")
    ap.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds everything: the world's images, CLIP's and ZegFormer's initialisation and data order (default 0)",
    )
    ap.add_argument(
        "--native-kernels",
        action="store_true",
        help="use this CPU's fastest kernels (AVX-512 where "
        "present) instead of the AVX2 ones every x86 CPU shares: faster there, but another draw of the "
        "numbers than other machines get for the same seed",
    )
    ap.add_argument("overrides", nargs="*", help="KEY=VALUE overrides of configs/zeroshot-world.yaml")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    kernels = pin_cpu_kernels(a.native_kernels)
    t0 = time.perf_counter()
    a.out.mkdir(parents=True, exist_ok=True)
    say(f"seed {a.seed}, CPU kernels {kernels}" + (" (native)" if a.native_kernels else ""))
    data = step_world(a.out, a.train, a.val, a.seed)
    clip_info = step_clip(a.out, data, a.clip_steps, a.overrides, a.seed)
    checkpoint = step_zegformer(a.out, data, a.iters, a.overrides, a.seed)
    bundle = step_export(a.out, checkpoint)
    records = step_evaluate(a.out, bundle, data, [b for b in a.backends.split(",") if b], a.eval_images)
    picture = step_picture(a.out, bundle, data, records)
    print()
    print(summary(clip_info, records))
    print("\n".join(band_lines(a, records)))
    print(
        f'bundle: {bundle}   (python -m sdk segment IMAGE --bundle {bundle} --vocab "lime wavy;red plain" '
        f"--out results/)\npicture: {picture}\ntable: {a.out / 'gzss.json'}   "
        f"({time.perf_counter() - t0:.0f} s in this run)"
    )
    print(
        f"try it in a browser: pip install -e '{REPO}[demo]' && python -m sdk demo --bundle {bundle}   "
        "(then open http://127.0.0.1:7860)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
