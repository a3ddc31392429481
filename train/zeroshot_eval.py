"""A bundle through the SDK on a labelled dataset: the official GZSS numbers per configuration.

A configuration is a backend (``torch``: the PyTorch reference; ``onnxruntime``; ``openvino``), a
precision tier (``fp32`` — faithful — ``bf16``, ``int8``, ``fp16``; ``sdk/precision.py``) and a
mode (``cropmask`` — the faithful official inference — ``pruned``, ``maskpool``, ``proposal``).
Every held-out image runs through each configuration with the dataset's full class list as the
vocabulary (generalized zero-shot: seen and unseen classes compete). Per configuration it reports
the official seen / unseen mIoU and hIoU (``train.metrics``), the label maps' agreement with the
**faithful** map (the first backend's fp32 ``cropmask``; pixel agreement and the mean IoU between
the two maps) and, for reduced precisions, with the same mode in fp32 (what the precision alone
changes), the fraction of queries ``pruned`` sends to CLIP (``result.info``) and the time per image.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .metrics import TAKEOVER_SHARE, all_metrics, confusion_matrix, takeovers

MODES = ("cropmask", "pruned", "maskpool", "proposal")
BACKENDS = ("torch", "onnxruntime")
FAITHFUL_MODE = "cropmask"


def map_agreement(a: np.ndarray, b: np.ndarray) -> Dict[str, float]:
    """Pixel agreement and mean IoU between two label maps (over classes present in either)."""
    ious = [
        np.logical_and(a == c, b == c).sum() / np.logical_or(a == c, b == c).sum()
        for c in np.union1d(np.unique(a), np.unique(b))
    ]
    return {"pixel_agreement": float(np.mean(a == b)), "miou": float(np.mean(ious))}


def configurations(backends: Sequence[str], precisions: Sequence[str]) -> List[Tuple[str, str]]:
    """(backend, precision) pairs the SDK supports on the CPU (a precision is a tier or one ``graph=tier``);
    the first backend's fp32 comes first
    (it is the faithful reference every agreement is measured against)."""
    from sdk.backends import supported_pairs

    pairs = supported_pairs(backends, precisions)
    if not pairs or pairs[0][1] != "fp32":
        raise ValueError(f"the first backend must run fp32 (the faithful reference); got {pairs[:1]}")
    return pairs


class _Tally:
    """Confusion matrix, agreements, CLIP query counts and time of one configuration."""

    def __init__(self, k: int):
        self.conf = np.zeros((k + 1, k + 1), np.int64)
        self.faithful: List[Dict[str, float]] = []
        self.same_mode_fp32: List[Dict[str, float]] = []
        self.clip_q = [0, 0]
        self.seconds = 0.0


def _mean(items: List[Dict[str, float]], key: str) -> float:
    return float(np.mean([a[key] for a in items]))


def evaluate_bundle(
    bundle: Path,
    dataset,
    modes: Sequence[str] = MODES,
    backends: Sequence[str] = BACKENDS,
    max_images: int = 0,
    threads: Optional[int] = None,
    progress: bool = False,
    precisions: Sequence[str] = ("fp32",),
) -> List[Dict[str, object]]:
    """One record per (backend, precision, mode); see the module docstring."""
    from sdk import Segmenter

    n = len(dataset) if not max_images else min(max_images, len(dataset))
    names = list(dataset.class_names)
    k = len(names)
    reference: Dict[str, List[np.ndarray]] = {}  # mode → the first configuration's maps (fp32)
    records = []
    for ci, (backend, precision) in enumerate(configurations(backends, precisions)):
        seg = Segmenter(
            str(bundle),
            backend=backend,
            device="cpu",
            mode="cropmask",
            min_size=None,
            threads=threads,
            cache_dir=False,
            vocabulary=names,
            precision=precision,
        )
        tally = {m: _Tally(k) for m in modes}
        items = range(n)
        if progress:
            from tqdm import tqdm

            items = tqdm(items, desc=f"SDK {backend} {precision}", unit="img", leave=False)
        for i in items:
            image, label = dataset.load(i)
            for mode in modes:
                t = tally[mode]
                t0 = time.perf_counter()
                result = seg(image, mode=mode)
                t.seconds += time.perf_counter() - t0
                labels = np.asarray(result.label_map)
                t.conf += confusion_matrix(labels, label, k)
                if ci == 0:
                    reference.setdefault(mode, []).append(labels)
                if FAITHFUL_MODE in reference:
                    t.faithful.append(map_agreement(labels, reference[FAITHFUL_MODE][i]))
                if precision != "fp32" and mode in reference:
                    t.same_mode_fp32.append(map_agreement(labels, reference[mode][i]))
                if "clip_queries" in result.info:
                    t.clip_q[0] += int(result.info["clip_queries"])
                    t.clip_q[1] += int(result.info["queries"])
        records += [_record(backend, precision, mode, tally[mode], dataset.seen, names, n) for mode in modes]
    return records


def _record(backend: str, precision: str, mode: str, t: _Tally, seen, names, n: int) -> Dict[str, object]:
    m = all_metrics(t.conf, seen, names)
    rec: Dict[str, object] = {
        "name": f"{backend}/{precision}/{mode}",
        "backend": backend,
        "precision": precision,
        "mode": mode,
        "images": n,
        **{key: m["official"][key] for key in ("seen_mIoU", "unseen_mIoU", "hIoU", "mIoU")},
        "nan_safe": m["nan_safe"],
        "ms_per_image": 1e3 * t.seconds / max(n, 1),
    }
    if t.faithful:
        rec["agreement"] = _mean(t.faithful, "pixel_agreement")
        rec["agreement_miou"] = _mean(t.faithful, "miou")
    if t.same_mode_fp32:
        rec["agreement_fp32"] = _mean(t.same_mode_fp32, "pixel_agreement")
        rec["agreement_fp32_miou"] = _mean(t.same_mode_fp32, "miou")
    if t.clip_q[1]:
        rec["clip_query_fraction"] = t.clip_q[0] / t.clip_q[1]
    rec["per_class_iou"] = {c["name"]: c["iou"] for c in m["per_class"]}
    rec["takeovers"] = takeovers(t.conf, names)
    return rec


def takeover_groups(record: Dict[str, object]) -> Optional[List[str]]:
    """A configuration's :func:`train.metrics.takeovers` as one ``"taker ← truth 84 %, …"`` string per
    class that took pixels, catch-alls first; ``None`` for a record written before they were kept."""
    if "takeovers" not in record:
        return None
    taken: Dict[str, List[Tuple[str, float]]] = {}
    for t in record["takeovers"]:
        taken.setdefault(str(t["predicted"]), []).append((str(t["truth"]), float(t["share"])))
    ranked = sorted(taken.items(), key=lambda kv: (-len(kv[1]), -max(s for _, s in kv[1])))
    return [f"{pred} ← " + ", ".join(f"{truth} {100 * s:.0f} %" for truth, s in victims) for pred, victims in ranked]


def takeover_heading(where: str) -> str:
    """The title over a list of :func:`takeover_groups` (``where``: the configuration or the seeds)."""
    return f"Classes that took {100 * TAKEOVER_SHARE:.0f} % or more of another class's pixels ({where}):"


def takeover_lines(record: Dict[str, object]) -> List[str]:
    """:func:`takeover_groups` as report lines: the first thing to read when a run lands outside its band."""
    groups = takeover_groups(record)
    if groups is None:
        return []
    where = f"{record['mode']}, {record['backend']} {record['precision']}"
    if not groups:
        return [f"No class lost {100 * TAKEOVER_SHARE:.0f} % or more of its pixels to one other class ({where})."]
    return [takeover_heading(where)] + [f"  {g}" for g in groups]


def _pct(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _is_reference(r: Dict[str, object], first: Dict[str, object]) -> bool:
    return (r["backend"], r.get("precision", "fp32"), r["mode"]) == (
        first["backend"],
        first.get("precision", "fp32"),
        FAITHFUL_MODE,
    )


def markdown_table(records: Sequence[Dict[str, object]]) -> str:
    """The GZSS table: backend, precision, mode, seen/unseen mIoU, hIoU, agreement with the faithful map
    (and, for reduced precisions, with the same mode in fp32), CLIP queries, time."""
    lines = [
        "| backend | precision | mode | seen mIoU | unseen mIoU | hIoU | agreement with faithful "
        "(pixels / map mIoU) | vs same mode fp32 | queries sent to CLIP | ms / image |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        agree = (
            "(reference)"
            if _is_reference(r, records[0])
            else f"{_pct(r.get('agreement'))} % / {_pct(r.get('agreement_miou'))} %"
            if "agreement" in r
            else ""
        )
        fp32 = f"{_pct(r['agreement_fp32'])} % / {_pct(r['agreement_fp32_miou'])} %" if "agreement_fp32" in r else ""
        queries = (
            f"{_pct(r['clip_query_fraction'])} %"
            if "clip_query_fraction" in r
            else ("100 %" if r["mode"] == "cropmask" else "")
        )
        lines.append(
            f"| {r['backend']} | {r.get('precision', 'fp32')} | {r['mode']} | {_pct(r['seen_mIoU'])} | "
            f"{_pct(r['unseen_mIoU'])} | {_pct(r['hIoU'])} | {agree} | {fp32} | {queries} | "
            f"{r['ms_per_image']:.0f} |"
        )
    return "\n".join(lines) + "\n"
