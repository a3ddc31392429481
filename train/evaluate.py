"""Generalized zero-shot evaluation of a checkpoint (PyTorch) or an exported bundle (SDK).

    python -m train.evaluate --checkpoint CKPT --dataset NAME_OR_FOLDER [--root DIR] --out DIR
    python -m train.evaluate --bundle BUNDLE_DIR --dataset NAME_OR_FOLDER [--root DIR] --out DIR

The vocabulary is the evaluated dataset's class list (cross-dataset evaluation: a COCO-Stuff
model on ADE-847 or VOC classifies into the target classes); a vocabulary class is "seen" for
the model's ensemble/calibration when it is one of the checkpoint's training classes, while the
reported seen/unseen split is the dataset's own. Images are resized so that the shortest side is
``--min-size`` (640; 0 keeps the size), predictions are made at the original size, and metrics are
computed as the official evaluator does (``train.metrics``). Writes ``metrics.json`` and
``metrics.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import torch

from .classes import prompt_templates
from .data import SegmentationDataset, build_dataset
from .metrics import all_metrics, confusion_matrix

log = logging.getLogger(__name__)
Predictor = Callable[[np.ndarray], np.ndarray]


def resize_shortest_edge(image: np.ndarray, min_size: int, max_size: int = 2560) -> np.ndarray:
    """detectron2's test-time ``ResizeShortestEdge`` (PIL bilinear on uint8); identity for ``min_size=0``."""
    from sdk.preprocess import resize_shortest_edge as sdk_resize

    return sdk_resize(image, min_size or None, max_size)


class TorchPredictor:
    """Checkpoint inference through ``train.inference.segment`` (the faithful reference)."""

    def __init__(
        self,
        model,
        vocabulary: Sequence[str],
        train_seen: Sequence[str],
        mode: str = "cropmask",
        min_size: int = 640,
        max_size: int = 2560,
        calibrate: Optional[float] = None,
    ):
        from .inference import segment

        self.segment, self.model, self.mode = segment, model, mode
        self.min_size, self.max_size = min_size, max_size
        cfg = model.cfg
        self.calibrate = cfg.gzero_calibrate if calibrate is None else calibrate
        self.seen = [n in set(train_seen) for n in vocabulary]
        with torch.no_grad():
            self.text = model.text_embeddings(list(vocabulary), prompt_templates(cfg.test_prompt))
            self.text_clip = (
                model.text_embeddings(list(vocabulary), prompt_templates(cfg.clip_prompt))
                if mode == "cropmask"
                else None
            )

    def __call__(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        x = resize_shortest_edge(image, self.min_size, self.max_size)
        out = self.segment(
            self.model,
            x,
            self.text,
            self.text_clip,
            self.seen,
            mode=self.mode,
            out_size=(h, w),
            calibrate=self.calibrate,
        )
        return out["sem_seg"].argmax(0).cpu().numpy()


class BundlePredictor:
    """Bundle inference through the SDK (``from sdk import Segmenter``)."""

    def __init__(
        self,
        bundle: Path,
        vocabulary: Sequence[str],
        mode: str = "cropmask",
        min_size: int = 640,
        backend: str = "auto",
        device: str = "auto",
    ):
        from sdk import Segmenter  # lazily: the SDK is only needed for --bundle

        self.vocabulary = list(vocabulary)
        self.seg = Segmenter(str(bundle), backend=backend, device=device, mode=mode, min_size=min_size or None)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        result = self.seg(image, vocabulary=self.vocabulary)
        if list(result.class_names) != self.vocabulary:
            raise RuntimeError("the SDK returned classes in another order than the vocabulary")
        return np.asarray(result.label_map)


class SeenOnlyView:
    """The "seen" protocol's view of a dataset (the official training-time test sets): only the
    seen classes form the vocabulary and unseen pixels are ignored."""

    def __init__(self, dataset: SegmentationDataset):
        self.dataset = dataset
        self.name = dataset.name
        self.class_names = dataset.seen_names
        self.seen = [True] * len(self.class_names)
        self._map = dataset.seen_map()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.dataset)

    def load(self, index: int):
        image, label = self.dataset.load(index)
        return image, np.where(label >= 0, self._map[np.clip(label, 0, None)], label)


def protocol_view(dataset: SegmentationDataset, protocol: str):
    """``gzss``: all classes (generalized zero-shot); ``seen``: seen classes only, unseen ignored."""
    if protocol == "gzss":
        return dataset
    if protocol == "seen":
        return SeenOnlyView(dataset)
    raise ValueError(f"unknown evaluation protocol {protocol!r}; choose gzss or seen")


def confusion(
    predictor: Predictor, dataset: SegmentationDataset, indices: Sequence[int], progress: bool = True
) -> np.ndarray:
    """Accumulated ``(K+1)×(K+1)`` confusion matrix of ``predictor`` over ``dataset[indices]``."""
    conf = np.zeros((dataset.num_classes + 1,) * 2, np.int64)
    items = indices
    if progress:
        from tqdm import tqdm

        items = tqdm(indices, desc=f"eval {dataset.name}", unit="img", leave=False)
    for i in items:
        image, label = dataset.load(i)
        conf += confusion_matrix(predictor(image), label, dataset.num_classes)
    return conf


def evaluate_model(
    model,
    dataset: SegmentationDataset,
    train_seen: Sequence[str],
    mode: str = "proposal",
    min_size: int = 640,
    max_size: int = 2560,
    max_images: int = 0,
    calibrate: Optional[float] = None,
    rank: int = 0,
    world: int = 1,
    reduce: Optional[Callable[[np.ndarray], np.ndarray]] = None,
    progress: bool = True,
    protocol: str = "gzss",
) -> Dict[str, object]:
    """Metrics of ``model`` on ``dataset`` (images split over ranks; ``reduce`` sums the matrices)."""
    dataset = protocol_view(dataset, protocol)
    was_training = model.training
    model.eval()
    try:
        predictor = TorchPredictor(model, dataset.class_names, train_seen, mode, min_size, max_size, calibrate)
        n = len(dataset) if not max_images else min(max_images, len(dataset))
        conf = confusion(predictor, dataset, list(range(rank, n, world)), progress and rank == 0)
    finally:
        model.train(was_training)
    if reduce is not None:
        conf = reduce(conf)
    return all_metrics(conf, dataset.seen, dataset.class_names)


def markdown(metrics: Dict[str, object], title: str) -> str:
    """A markdown report: summary table (official and NaN-safe) and per-class IoU (percent)."""

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.2f}"

    off, safe = metrics["official"], metrics["nan_safe"]
    lines = [f"# {title}", "", "| metric (%) | official | NaN-safe |", "|---|---|---|"]
    for key in ("seen_mIoU", "unseen_mIoU", "hIoU", "mIoU"):
        lines.append(f"| {key} | {pct(off[key])} | {pct(safe[key])} |")
    for key in ("pACC", "mACC", "fwIoU"):
        lines.append(f"| {key} | {pct(off[key])} | |")
    lines += ["", "| class | seen | IoU (%) | acc (%) | gt pixels |", "|---|---|---|---|---|"]
    for c in metrics["per_class"]:
        lines.append(
            f"| {c['name']} | {'yes' if c['seen'] else 'no'} | {pct(c['iou'])} | {pct(c['acc'])} | {c['gt_pixels']} |"
        )
    return "\n".join(lines) + "\n"


def write_report(metrics: Dict[str, object], out: Path, title: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n", encoding="utf-8")
    (out / "metrics.md").write_text(markdown(metrics, title), encoding="utf-8")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m train.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="our checkpoint (train/train.py or convert_official)")
    src.add_argument("--bundle", type=Path, help="an exported SDK bundle (python -m export) instead")
    ap.add_argument(
        "--dataset", required=True, help="coco-stuff | voc | ade-847 (with --root), or a folder dataset's path"
    )
    ap.add_argument("--root", help="dataset root for the built-in datasets")
    ap.add_argument("--split", default="val", help="dataset split (default val)")
    ap.add_argument(
        "--protocol",
        default="gzss",
        choices=["gzss", "seen"],
        help="gzss: all classes, generalized zero-shot (default); seen: the seen classes "
        "only, unseen pixels ignored (the official training-time test sets)",
    )
    ap.add_argument(
        "--out",
        type=Path,
        help="output folder for metrics.json/.md (default: beside the checkpoint/bundle, eval-DATASET-SPLIT-PROTOCOL)",
    )
    ap.add_argument(
        "--mode",
        default="cropmask",
        help="cropmask (official) | proposal (no CLIP branch); the SDK accepts its own modes too",
    )
    ap.add_argument("--min-size", type=int, default=640, help="test shortest side; 0 keeps the size (default 640)")
    ap.add_argument("--max-size", type=int, default=2560, help="longest side cap (default 2560)")
    ap.add_argument("--max-images", type=int, default=0, help="evaluate only the first N images")
    ap.add_argument("--calibrate", type=float, help="seen-class calibration (default: the model's, 0.1)")
    ap.add_argument("--device", default="cpu", help="torch device for --checkpoint (default cpu)")
    ap.add_argument("--backend", default="auto", help="SDK backend for --bundle (default auto)")
    return ap.parse_args(argv)


def default_out(a: argparse.Namespace) -> Path:
    """``<folder of the checkpoint or bundle>/eval-<dataset>-<split>-<protocol>``."""
    source = Path(a.checkpoint or a.bundle).absolute()
    return source.parent / f"eval-{Path(a.dataset).name}-{a.split}-{a.protocol}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .checkpoint import CheckpointError
    from .data.errors import DatasetError

    try:
        return run(argv)
    except (DatasetError, CheckpointError, OSError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


def run(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    a = parse_args(argv)
    a.out = a.out or default_out(a)
    dataset = protocol_view(build_dataset(a.dataset, a.root, a.split), a.protocol)
    n = len(dataset) if not a.max_images else min(a.max_images, len(dataset))
    t0 = time.perf_counter()
    if a.checkpoint:
        from .checkpoint import load_model

        model, payload = load_model(a.checkpoint, a.device)
        train_seen = [c for c, s in zip(payload["classes"]["names"], payload["classes"]["seen"]) if s]
        predictor = TorchPredictor(model, dataset.class_names, train_seen, a.mode, a.min_size, a.max_size, a.calibrate)
        source = str(a.checkpoint)
    else:
        predictor = BundlePredictor(a.bundle, dataset.class_names, a.mode, a.min_size, a.backend)
        source = str(a.bundle)
    metrics = all_metrics(confusion(predictor, dataset, list(range(n))), dataset.seen, dataset.class_names)
    metrics["meta"] = {
        "source": source,
        "via": "checkpoint" if a.checkpoint else "bundle",
        "dataset": dataset.name,
        "split": a.split,
        "protocol": a.protocol,
        "images": n,
        "mode": a.mode,
        "min_size": a.min_size,
        "max_size": a.max_size,
        "seconds": time.perf_counter() - t0,
    }
    write_report(
        metrics, a.out, f"{dataset.name} ({a.split}, {a.protocol}, {n} images) — {Path(source).name}, {a.mode}"
    )
    off = metrics["official"]
    print(
        f"seen mIoU {off['seen_mIoU']}, unseen mIoU {off['unseen_mIoU']}, hIoU {off['hIoU']}, "
        f"mIoU {off['mIoU']} (official; fractions) → {a.out / 'metrics.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
