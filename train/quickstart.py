"""The quick start: synthetic data → a few minutes of CPU training → bundle → segmentation → mIoU.

    python -m train.quickstart [--out DIR] [--minutes N]

Needs no downloads. It (1) writes a synthetic dataset (textured shapes, some classes held out as
"unseen"), (2) trains the tiny model on the CPU for about ``--minutes``, (3) exports a bundle with
``python -m export`` when that package is present, (4) segments the held-out images through the SDK
(or the PyTorch reference when the SDK or the bundle is missing), and (5) prints the mIoU reached.

The tiny model's CLIP is random (no pretrained weights are downloaded), so its text embeddings
carry no meaning: seen classes are learned, zero-shot recognition of unseen classes cannot work.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from .config_io import load_config
from .data import build_dataset
from .data.synthetic import generate
from .evaluate import BundlePredictor, TorchPredictor, confusion, protocol_view
from .metrics import all_metrics

log = logging.getLogger(__name__)
CONFIG = Path(__file__).resolve().parent.parent / "configs" / "synthetic-tiny.yaml"
FALLBACK = ["model.preset=tiny", "model.train_prompt=single", "data.crop_size=128",
            "data.scales=[0.75,0.875,1.0,1.125,1.25]", "data.max_size=512", "solver.batch_size=8",
            "train.device=cpu", "eval.mode=proposal", "eval.min_size=0"]


def train_config(data: Path, out: Path, iters: Optional[int]) -> dict:
    base = [] if CONFIG.is_file() else FALLBACK
    over = [*base, f"data.root={data}", f"train.output_dir={out}", "train.eval_period=0", "eval.protocols=[]"]
    if iters:
        over.append(f"solver.max_iter={iters}")
    return load_config(CONFIG if CONFIG.is_file() else None, over)


def estimate_iterations(cfg: dict, minutes: float) -> int:
    """Time a few steps of the configured training and scale to ``minutes`` (within the config's bounds)."""
    from .engine import Trainer

    probe = dict(cfg, train=dict(cfg["train"], output_dir=str(Path(cfg["train"]["output_dir"]) / "probe"),
                                 progress=False, tensorboard=False))
    trainer = Trainer(probe)
    from .data.loader import StepDataset

    ds = StepDataset(trainer.train_set, trainer.plan, 0, trainer.aug, trainer.train_set.seen_map(), 12)
    times = []
    for step in range(12):
        t0 = time.perf_counter()
        trainer.train_step(ds[step])
        times.append(time.perf_counter() - t0)
    per_step = float(np.median(times[2:]))
    budget = minutes * 60 * 0.85  # leave room for evaluation and export
    return int(max(100, min(cfg["solver"]["max_iter"] * 4, budget / per_step)))


def export_bundle(checkpoint: Path, bundle: Path) -> Optional[Path]:
    try:
        from export.__main__ import main as export_main
    except ImportError as e:
        print(f"[quickstart] export step skipped: python -m export is not available ({e})")
        return None
    rc = export_main(["--checkpoint", str(checkpoint), "--out", str(bundle), "--force", "--no-progress", "-q"])
    if rc not in (0, None):
        print(f"[quickstart] export failed (exit code {rc}); continuing with the PyTorch reference")
        return None
    return bundle


def predictor_for(bundle: Optional[Path], checkpoint: Path, vocabulary, train_seen, mode: str):
    if bundle is not None:
        try:
            return BundlePredictor(bundle, vocabulary, mode=mode, min_size=0), "SDK bundle"
        except ImportError as e:
            print(f"[quickstart] the SDK is not importable ({e}); segmenting with the PyTorch reference")
    from .checkpoint import load_model

    model, _ = load_model(checkpoint)
    return TorchPredictor(model, vocabulary, train_seen, mode=mode, min_size=0), "PyTorch reference"


def save_examples(seen_predictor, all_predictor, dataset, out: Path, count: int = 6) -> None:
    """``image | prediction (seen classes) | prediction (all classes) | ground truth`` strips."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    palette = np.random.default_rng(0).integers(0, 256, (dataset.num_classes + 1, 3)).astype(np.uint8)
    palette[-1] = 0  # ignore: black
    seen_to_all = np.flatnonzero(dataset.seen)
    for i in range(min(count, len(dataset))):
        image, label = dataset.load(i)
        panels = [image, palette[seen_to_all[seen_predictor(image)]], palette[all_predictor(image)],
                  palette[np.where(label < 0, dataset.num_classes, label)]]
        Image.fromarray(np.concatenate(panels, 1)).save(out / f"example_{i}.png")


def evaluate(predictor_factory, dataset) -> Dict[str, dict]:
    results = {}
    for protocol in ("seen", "gzss"):
        view = protocol_view(dataset, protocol)
        predictor, via = predictor_factory(view.class_names)
        conf = confusion(predictor, view, range(len(view)), progress=False)
        results[protocol] = all_metrics(conf, view.seen, view.class_names)
        results[protocol]["via"] = via
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.quickstart", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("quickstart"), help="working folder (default ./quickstart)")
    ap.add_argument("--minutes", type=float, default=5.0, help="approximate training time (default 5)")
    ap.add_argument("--iters", type=int, help="train exactly this many steps instead of --minutes")
    ap.add_argument("--classes", type=int, default=12, help="synthetic classes (default 12)")
    ap.add_argument("--unseen", type=int, default=3, help="of which held out as unseen (default 3)")
    ap.add_argument("--train", type=int, default=200, help="synthetic training images (default 200)")
    ap.add_argument("--val", type=int, default=50, help="held-out images (default 50)")
    ap.add_argument("--mode", default="proposal", help="inference mode (default proposal; cropmask adds the "
                                                      "random CLIP's crop branch)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    data = a.out / "data"
    if not (data / "classes.txt").is_file():
        print(f"[quickstart] 1/5 writing a synthetic dataset to {data}")
        generate(data, num_classes=a.classes, num_unseen=a.unseen, num_train=a.train, num_val=a.val, progress=True)
    else:
        print(f"[quickstart] 1/5 using the synthetic dataset in {data}")
    run = a.out / "run"
    cfg = train_config(data, run, a.iters)
    if not a.iters:
        iters = estimate_iterations(cfg, a.minutes)
        cfg = train_config(data, run, iters)
    print(f"[quickstart] 2/5 training the tiny model for {cfg['solver']['max_iter']} steps on the CPU → {run}")
    from .engine import Trainer

    if Trainer(cfg).run() != 0:
        print("[quickstart] training did not finish")
        return 1
    checkpoint = run / "model_final.pth"
    print(f"[quickstart] 3/5 exporting {checkpoint}")
    bundle = export_bundle(checkpoint, a.out / "bundle")
    dataset = build_dataset("folder", str(data), "val")
    print(f"[quickstart] 4/5 segmenting {len(dataset)} held-out images")

    def factory(vocabulary):
        return predictor_for(bundle, checkpoint, vocabulary, dataset.seen_names, a.mode)

    results = evaluate(factory, dataset)
    save_examples(factory(dataset.seen_names)[0], factory(dataset.class_names)[0], dataset, a.out / "examples")
    seen, gz = results["seen"]["official"], results["gzss"]["official"]
    print(f"[quickstart] 5/5 results ({results['seen']['via']}, {time.perf_counter() - t0:.0f} s in all):")
    print(f"  seen-class mIoU (vocabulary = the {sum(dataset.seen)} seen classes): {100 * seen['mIoU']:.1f} %")
    print(f"  generalized zero-shot, all {dataset.num_classes} classes: seen mIoU {_pct(gz['seen_mIoU'])}, "
          f"unseen mIoU {_pct(gz['unseen_mIoU'])}, hIoU {_pct(gz['hIoU'])}")
    print("  note: the tiny model's CLIP is random (nothing was downloaded), so its text embeddings are\n"
          "  meaningless: seen classes are learned from the data, but unseen classes cannot be\n"
          "  recognised zero-shot, and in the generalized setting the unseen classes' random embeddings\n"
          "  compete with the seen ones and take over some of their pixels. Train with real CLIP weights\n"
          "  (configs/coco-stuff-r101.yaml) for zero-shot segmentation.")
    print(f"  examples (image | seen-class prediction | all-class prediction | ground truth): "
          f"{a.out / 'examples'}")
    return 0


def _pct(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


if __name__ == "__main__":
    sys.exit(main())
