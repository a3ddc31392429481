"""A bundle through the SDK on a labelled dataset: the official GZSS numbers per mode and backend.

For every backend (``torch``: the PyTorch reference; ``onnxruntime``) one ``Segmenter`` runs each
held-out image in every mode (``cropmask`` — the faithful official inference — ``pruned``,
``maskpool``, ``proposal``) with the dataset's full class list as the vocabulary (generalized
zero-shot: seen and unseen classes compete). Per (backend, mode) it reports the official seen /
unseen mIoU and hIoU (``train.metrics``), the label maps' agreement with the same backend's
``cropmask`` (pixel agreement and the mean IoU between the two maps), the fraction of queries
``pruned`` sends to CLIP (``result.info``) and the time per image.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .metrics import all_metrics, confusion_matrix

MODES = ("cropmask", "pruned", "maskpool", "proposal")
BACKENDS = ("torch", "onnxruntime")


def map_agreement(a: np.ndarray, b: np.ndarray) -> Dict[str, float]:
    """Pixel agreement and mean IoU between two label maps (over classes present in either)."""
    ious = [np.logical_and(a == c, b == c).sum() / np.logical_or(a == c, b == c).sum()
            for c in np.union1d(np.unique(a), np.unique(b))]
    return {"pixel_agreement": float(np.mean(a == b)), "miou": float(np.mean(ious))}


def evaluate_bundle(bundle: Path, dataset, modes: Sequence[str] = MODES, backends: Sequence[str] = BACKENDS,
                    max_images: int = 0, threads: Optional[int] = None, progress: bool = False) -> List[Dict[str, object]]:
    """One record per (backend, mode); see the module docstring."""
    from sdk import Segmenter

    n = len(dataset) if not max_images else min(max_images, len(dataset))
    names = list(dataset.class_names)
    records = []
    for backend in backends:
        seg = Segmenter(str(bundle), backend=backend, device="cpu", mode="cropmask", min_size=None,
                        threads=threads, cache_dir=False, vocabulary=names)
        k = len(names)
        conf = {m: np.zeros((k + 1, k + 1), np.int64) for m in modes}
        agree = {m: [] for m in modes}
        clip_q = {m: [0, 0] for m in modes}
        seconds = {m: 0.0 for m in modes}
        items = range(n)
        if progress:
            from tqdm import tqdm

            items = tqdm(items, desc=f"SDK {backend}", unit="img", leave=False)
        for i in items:
            image, label = dataset.load(i)
            ref = None
            for mode in modes:
                t0 = time.perf_counter()
                result = seg(image, mode=mode)
                seconds[mode] += time.perf_counter() - t0
                labels = np.asarray(result.label_map)
                conf[mode] += confusion_matrix(labels, label, k)
                if mode == "cropmask":
                    ref = labels
                if ref is not None:
                    agree[mode].append(map_agreement(labels, ref))
                if "clip_queries" in result.info:
                    clip_q[mode][0] += int(result.info["clip_queries"])
                    clip_q[mode][1] += int(result.info["queries"])
        for mode in modes:
            m = all_metrics(conf[mode], dataset.seen, names)
            rec: Dict[str, object] = {"name": f"{backend}/{mode}", "backend": backend, "mode": mode, "images": n,
                                      **{key: m["official"][key] for key in ("seen_mIoU", "unseen_mIoU", "hIoU", "mIoU")},
                                      "nan_safe": m["nan_safe"], "ms_per_image": 1e3 * seconds[mode] / max(n, 1),
                                      "median_ms": 1e3 * seconds[mode] / max(n, 1)}
            if agree[mode] and "cropmask" in modes:
                rec["agreement"] = float(np.mean([a["pixel_agreement"] for a in agree[mode]]))
                rec["agreement_miou"] = float(np.mean([a["miou"] for a in agree[mode]]))
            if clip_q[mode][1]:
                rec["clip_query_fraction"] = clip_q[mode][0] / clip_q[mode][1]
            rec["per_class_iou"] = {c["name"]: c["iou"] for c in m["per_class"]}
            records.append(rec)
    return records


def _pct(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def markdown_table(records: Sequence[Dict[str, object]]) -> str:
    """The GZSS table: backend, mode, seen/unseen mIoU, hIoU, agreement with cropmask, CLIP queries."""
    lines = ["| backend | mode | seen mIoU | unseen mIoU | hIoU | agreement with cropmask (pixels / map mIoU) "
             "| queries sent to CLIP | ms / image |", "|---|---|---|---|---|---|---|---|"]
    for r in records:
        agree = ("(reference)" if r["mode"] == "cropmask" else
                 f"{_pct(r.get('agreement'))} % / {_pct(r.get('agreement_miou'))} %" if "agreement" in r else "")
        queries = f"{_pct(r['clip_query_fraction'])} %" if "clip_query_fraction" in r else (
            "100 %" if r["mode"] == "cropmask" else "")
        lines.append(f"| {r['backend']} | {r['mode']} | {_pct(r['seen_mIoU'])} | {_pct(r['unseen_mIoU'])} | "
                     f"{_pct(r['hIoU'])} | {agree} | {queries} | {r['ms_per_image']:.0f} |")
    return "\n".join(lines) + "\n"
