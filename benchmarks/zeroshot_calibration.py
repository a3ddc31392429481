"""What the GZERO calibration does on the zero-shot testbed, per seed.

    python benchmarks/zeroshot_calibration.py --work runs/zeroshot-benchmark --seeds 0,1,2,3,4

The official ensemble subtracts ``gzero_calibrate`` from the seen classes' scores before the argmax
(0.1 on COCO-Stuff; the world's config sets 0). This takes each seed's quick-start bundle
(``WORK/seed-N/bundle``, from ``benchmarks/zeroshot.py --seeds``), asks the SDK once per image for its
``cropmask`` scores, undoes the bundle's own calibration and re-takes the argmax with each value of
``--calibrations``: the same maps a bundle exported with that value gives. Two measures per value:

* on the held-out images, the official GZSS metrics (seen / unseen mIoU, hIoU) and the classes that
  took 30 % or more of another class's pixels;
* on training images, which hold seen classes only, the share of their pixels labelled with an
  *unseen* class — a measure that needs no unseen label: every such pixel is a mistake.

Writes ``benchmarks/results/zeroshot_calibration.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, machine, write_results  # noqa: E402

DEFAULT_CALIBRATIONS = "-0.1,0,0.05,0.1,0.2,0.3"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("runs/zeroshot-benchmark"), help="benchmarks/zeroshot.py's --work")
    p.add_argument("--seeds", default="0,1,2", help="comma list of seeds (WORK/seed-N must hold a bundle)")
    p.add_argument("--calibrations", default=DEFAULT_CALIBRATIONS, help=f"comma list (default {DEFAULT_CALIBRATIONS})")
    p.add_argument("--val-images", type=int, default=0, help="held-out images per seed (default 0 = all)")
    p.add_argument("--train-images", type=int, default=100, help="training images per seed (default 100)")
    p.add_argument("--out-dir", type=Path, default=RESULTS, help="where zeroshot_calibration.{json,md} go")
    return p.parse_args(argv)


def confusions(seed_dir: Path, split: str, limit: int, calibrations: List[float]) -> Dict[float, np.ndarray]:
    """Per calibration, the ``[pred, truth]`` confusion matrix of ``split`` (cropmask, ONNX Runtime fp32)."""
    from sdk import Segmenter
    from train.data import build_dataset
    from train.metrics import confusion_matrix

    dataset = build_dataset("folder", str(seed_dir / "data"), split)
    names = list(dataset.class_names)
    bundle = seed_dir / "bundle"
    own = float(json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))["inference"]["gzero_calibrate"])
    seg = Segmenter(
        str(bundle),
        backend="onnxruntime",
        device="cpu",
        mode="cropmask",
        min_size=None,
        cache_dir=False,
        vocabulary=names,
    )
    seen = np.asarray(seg.vocabulary.seen, bool)[:, None, None]  # calibrated: the bundle's training classes
    out: Dict[float, Any] = {c: 0 for c in calibrations}
    for i in range(min(limit, len(dataset)) if limit else len(dataset)):
        image, label = dataset.load(i)
        raw = np.asarray(seg(image, return_probs=True).probs) + own * seen  # the scores before calibration
        for c in calibrations:
            out[c] = out[c] + confusion_matrix((raw - c * seen).argmax(0), label, len(names))
    return out


def seed_records(seed: int, seed_dir: Path, a: argparse.Namespace, calibrations: List[float]) -> List[Dict[str, Any]]:
    from train.data import build_dataset
    from train.metrics import official_metrics, takeovers

    dataset = build_dataset("folder", str(seed_dir / "data"), "val")
    names, seen = list(dataset.class_names), np.asarray(dataset.seen, bool)
    k = len(names)
    val = confusions(seed_dir, "val", a.val_images, calibrations)
    train = confusions(seed_dir, "train", a.train_images, calibrations)
    records = []
    for c in calibrations:
        m = official_metrics(val[c], seen)
        t = np.asarray(train[c])[:k, :k]
        records.append(
            {
                "seed": seed,
                "calibration": c,
                **{key: m[key] for key in ("seen_mIoU", "unseen_mIoU", "hIoU")},
                "takeovers": takeovers(val[c], names),
                "train_seen_pixels_as_unseen": float(t[~seen][:, seen].sum() / max(t[:, seen].sum(), 1)),
            }
        )
    return records


def markdown(records: List[Dict[str, Any]], seeds: List[int], calibrations: List[float], a: argparse.Namespace) -> str:
    m = machine()

    def cell(c: float, key: str) -> str:
        values = [r[key] for r in records if r["calibration"] == c]
        return " / ".join(f"{100 * v:.1f}" for v in values) + f" (spread {100 * (max(values) - min(values)):.1f})"

    lines = [
        "# Zero-shot testbed: the GZERO calibration, per seed",
        "",
        f"`python benchmarks/zeroshot_calibration.py --seeds {','.join(map(str, seeds))}` — each seed's quick-start "
        f"bundle, cropmask, ONNX Runtime fp32; held-out images: {a.val_images or 'all'}, training images: "
        f"{a.train_images}. Values per seed ({', '.join(map(str, seeds))}), %. Machine: "
        f"{m.get('cpu', m['processor'])}, {m['cpu_count']} cores.",
        "",
        "| calibration | seen mIoU | unseen mIoU | hIoU | takeovers | training pixels (seen classes) labelled unseen |",
        "|---|---|---|---|---|---|",
    ]
    for c in calibrations:
        rows = [r for r in records if r["calibration"] == c]
        lines.append(
            f"| {c:g} | {cell(c, 'seen_mIoU')} | {cell(c, 'unseen_mIoU')} | {cell(c, 'hIoU')} | "
            + " / ".join(str(len(r["takeovers"])) for r in rows)
            + " | "
            + " / ".join(f"{100 * r['train_seen_pixels_as_unseen']:.1f}" for r in rows)
            + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    calibrations = [float(c) for c in a.calibrations.split(",") if c.strip()]
    records = [r for s in seeds for r in seed_records(s, a.work / f"seed-{s}", a, calibrations)]
    out = write_results("zeroshot_calibration", records, markdown(records, seeds, calibrations, a), out_dir=a.out_dir)
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
