"""The precision axis of ``benchmarks/latency.py``: backends × precision tiers, interleaved.

Every configuration (the official-style baseline, faithful ONNX Runtime fp32, and each
backend/precision pair) is built first; then each timed round calls every configuration once, in
turn, so that load from other processes on the machine falls on all of them alike. Each row reports
the median of its per-round ratio to the baseline and to faithful fp32 (robust on a shared machine),
and the label-map agreement / mIoU of its first call with faithful fp32's.

``--fixture`` runs the conformance fixture: the reference weights (the benchmark's ``r101-vit16``
synthetic checkpoint is exactly the fixture's recipe), its image and its 171-class text features.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from benchmarks.common import label_agreement

log = logging.getLogger("benchmarks.precision")
FAITHFUL = ("onnxruntime", "fp32")


def ensure_variants(
    bundle: Path,
    tiers: Sequence[str],
    calibration_images: Optional[int] = None,
    calibration: Optional[Path] = None,
    calibration_size: int = 320,
) -> None:
    """Add the int8/fp16 graphs a cached benchmark bundle lacks (in place; agreement measured here instead).
    int8 is calibrated on ``calibration`` (a folder of images; default scikit-image's photographs)."""
    from export.manifest import read_manifest
    from export.precision import PrecisionOptions, add_precisions

    manifest = read_manifest(bundle)
    have = set(manifest["graphs"]["clip_image"].get("variants") or {})
    need = {t.split("=")[-1] for t in tiers} & {"int8", "fp16"} - have  # "clip_image=int8" needs int8 too
    if need:
        log.info("adding %s graphs to %s", sorted(need), bundle)
        add_precisions(
            bundle,
            manifest,
            PrecisionOptions(
                int8="int8" in need,
                fp16="fp16" in need,
                measure=False,
                calibration=calibration,
                calibration_size=calibration_size,
                calibration_images=calibration_images,
            ),
        )


def fixture_inputs(reference_dir: Path) -> Tuple[np.ndarray, Tuple[List[str], np.ndarray, np.ndarray, List[bool]]]:
    """The fixture image and its vocabulary (names, text features, CLIP text features, seen flags)."""
    arrays = np.load(reference_dir / "reference_r101_vit16_cocostuff.npz")
    names = json.loads((reference_dir / "cocostuff_all_classnames.json").read_text())
    seen = set(json.loads((reference_dir / "cocostuff_seen_classnames.json").read_text()))
    return arrays["image"], (
        names,
        arrays["text_features_test"],
        arrays["text_features_test_clip"],
        [n in seen for n in names],
    )


def configurations(backends: Sequence[str], precisions: Sequence[str]) -> List[Tuple[str, str]]:
    """Faithful fp32 first, then every supported backend × precision pair."""
    from sdk.backends import supported_pairs

    return [FAITHFUL] + [pair for pair in supported_pairs(backends, precisions) if pair != FAITHFUL]


def run_interleaved(
    runners: Dict[str, Callable], image: np.ndarray, iters: int, baseline: Optional[str], faithful: str
) -> Dict[str, Dict[str, Any]]:
    """Warm-up call each (its label map is kept), then ``iters`` rounds of one call each, in turn."""
    first = {}
    for name, run in runners.items():
        log.info("warm-up %s", name)
        first[name] = run(image)
    times: Dict[str, List[float]] = {n: [] for n in runners}
    stages: Dict[str, Dict[str, List[float]]] = {n: {} for n in runners}
    for r in range(iters):
        for name, run in runners.items():
            t0 = time.perf_counter()
            timings, _, _ = run(image)
            times[name].append((time.perf_counter() - t0) * 1e3)
            for k, v in timings.items():
                stages[name].setdefault(k, []).append(v)
            log.info("round %d %s %.0f ms", r, name, times[name][-1])
    ref = first[faithful][1]
    out = {}
    for name in runners:
        row: Dict[str, Any] = {
            "median_ms": statistics.median(times[name]),
            "samples_ms": times[name],
            "stages_ms": {k: statistics.median(v) for k, v in stages[name].items()},
            "info": first[name][2],
        }
        for other, key in ((baseline, "speedup_vs_baseline"), (faithful, "speedup_vs_fp32")):
            if other is not None:
                row[key] = statistics.median(b / t for b, t in zip(times[other], times[name]))
        row.update({f"{k}_vs_fp32": v for k, v in label_agreement(first[name][1], ref).items()})
        out[name] = row
    return out


def _backend_and_spec(name: str) -> Tuple[str, str]:
    """``"openvino/cropmask/clip_image=int8"`` → ``("openvino", "clip_image=int8")``; the baseline: fp32."""
    parts = name.split("/")
    return parts[0], parts[2] if len(parts) > 2 else "fp32"


def markdown(rows: Dict[str, Dict[str, Any]], acc: Dict, mode: str, title: str, note: str) -> str:
    """One table: speed, agreement with fp32 on this image, and the zero-shot model's accuracy
    (``benchmarks/accuracy.py``) of the same backend / precision / mode."""
    from benchmarks import accuracy

    head = (
        "| configuration | precision | total ms | × baseline | × fp32 | CLIP ms | proposal ms | "
        f"agreement with fp32 | mIoU vs fp32 | {accuracy.HEADER} |"
    )
    lines = [f"# {title}", "", head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in rows.items():
        st = r["stages_ms"]
        agree = r.get("pixel_agreement_vs_fp32")
        base = f"{r['speedup_vs_baseline']:.2f}" if "speedup_vs_baseline" in r else "—"
        lines.append(
            f"| {name} | {r['info'].get('precision', 'fp32')} | {r['median_ms']:.0f} | {base} | "
            f"{r.get('speedup_vs_fp32', float('nan')):.2f} | {st.get('clip', 0):.0f} | "
            f"{st.get('proposal', 0):.0f} | {'' if agree is None else f'{100 * agree:.2f} %'} | "
            f"{r.get('miou_vs_fp32', float('nan')):.4f} | "
            f"{accuracy.cells(acc, *_backend_and_spec(name), mode)} |"
        )
    lines += ["", note]
    return "\n".join(lines) + "\n"
