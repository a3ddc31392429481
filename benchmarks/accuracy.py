"""Accuracy beside speed: the zero-shot testbed's numbers for each (backend, precision, mode).

Latency is measured on R101 + ViT-B/16 with synthetic weights (speed does not depend on weight
values), but their label maps are near noise, so agreement measured there says little about the
fast modes and reduced precisions. ``benchmarks/zeroshot.py --seeds 0,1,2 --precisions ...`` measures
them on the trained zero-shot models of three seeds instead, averaged (``benchmarks/results/
zeroshot_tiers.json``); this module looks those records up so that every latency row shows the
accuracy of the same configuration.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from benchmarks.common import RESULTS

DEFAULT = RESULTS / "zeroshot_tiers.json"
Key = Tuple[str, str, str]  # backend, precision, mode
HEADER = "zero-shot model: agreement with faithful | unseen mIoU / hIoU"


def load(path: Optional[Path] = DEFAULT) -> Dict[Key, Dict[str, Any]]:
    """Zero-shot records by (backend, precision, mode); empty when the file is absent."""
    if path is None or not Path(path).is_file():
        return {}
    records: List[Dict[str, Any]] = json.loads(Path(path).read_text(encoding="utf-8"))["records"]
    return {(r["backend"], r.get("precision", "fp32"), r["mode"]): r for r in records}


def cells(acc: Dict[Key, Dict[str, Any]], backend: str, precision: str, mode: str) -> str:
    """Two markdown cells: agreement with the faithful map (pixels), unseen mIoU / hIoU (%).
    The official-style baseline computes the faithful map itself; other backends without a record
    fall back to ONNX Runtime's (the fp32 backends agree 100 % with each other there)."""
    if backend == "official-style":
        backend, precision, mode = "torch", "fp32", "cropmask"
    r = acc.get((backend, precision, mode)) or acc.get(("onnxruntime", precision, mode))
    if r is None:
        return " | "
    agree = r.get("agreement")
    head = "—" if agree is None else f"{100 * agree:.1f} %"
    return f"{head} | {100 * r['unseen_mIoU']:.1f} / {100 * r['hIoU']:.1f}"


def note(acc: Dict[Key, Dict[str, Any]], path: Path = DEFAULT) -> str:
    if not acc:
        return (
            f"Zero-shot accuracy columns are empty: run `python benchmarks/zeroshot.py --seeds 0,1,2 --precisions ...` "
            f"first ({path} is absent)."
        )
    return (
        "Zero-shot columns: the same backend / precision / mode on the trained zero-shot testbed "
        "(`benchmarks/results/zeroshot_tiers.md`: mean over 3 seeds' models, 200 held-out images, 40 classes of "
        "which 8 unseen): label-map agreement with the faithful fp32 cropmask map, and the official unseen "
        "mIoU / hIoU (%)."
    )
