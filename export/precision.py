"""Reduced-precision graphs at export (``--fp16``, ``--int8``) and their measured agreement with fp32.

For each tiered graph (proposal, CLIP image, dense CLIP) this writes ``<graph>.fp16.onnx``
(``export/fp16.py``) and/or ``<graph>.int8.onnx`` (``export/quantize.py``) next to the fp32 graph, records
each file's precision (int8: its calibration) in ``manifest["graphs"][name]["variants"]``, then runs
the SDK on held-out real images — fp32 against every tier on every CPU backend present (ONNX Runtime;
OpenVINO also for bf16 and int8) — and stores the label-map agreement in
``manifest["precision"]["agreement"]``, which ``precision="auto"`` reads (see ``sdk/precision.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from sdk.precision import AUTO_BAR, TIERED_GRAPHS, variant_file

from .calibration import CalibrationSet, calibration_set, graph_inputs, read_rgb
from .fp16 import KEEP_FP32, write_fp16_graph
from .manifest import write_manifest
from .quantize import quantize_graph

log = logging.getLogger(__name__)


@dataclass
class PrecisionOptions:
    fp16: bool = False
    int8: bool = False
    calibration: Optional[Path] = None  # a folder of images; None: scikit-image's photographs
    calibration_images: Optional[int] = None  # at most this many (default: all)
    calibration_method: str = "minmax"
    calibration_size: int = 320  # shortest side of the calibration/verification images
    seed: int = 0
    measure: bool = True  # measure label-map agreement on the held-out images
    measure_images: int = 2


def add_precisions(bundle_dir: Path, manifest: Dict[str, Any], opts: PrecisionOptions) -> Dict[str, Any]:
    """Write the requested reduced-precision graphs into ``bundle_dir``; returns the updated manifest."""
    bundle_dir = Path(bundle_dir)
    graphs = manifest["graphs"]
    names = [g for g in TIERED_GRAPHS if g in graphs]
    cal: Optional[CalibrationSet] = None
    for name in names:
        graphs[name].setdefault("precision", "fp32")
    if opts.fp16:
        for name in names:
            src = bundle_dir / graphs[name]["file"]
            rel = variant_file(graphs[name]["file"], "fp16")
            counts = write_fp16_graph(src, bundle_dir / rel)
            graphs[name].setdefault("variants", {})["fp16"] = {
                "file": rel,
                "precision": "fp16",
                "io": "fp32",
                "kept_fp32": sorted(KEEP_FP32) + ["L2 normalisation"],
                **counts,
            }
    if opts.int8:
        cal = calibration_set(opts.calibration, opts.calibration_images, opts.seed, opts.calibration_size)
        inputs = graph_inputs(bundle_dir, manifest, cal)
        for name in names:
            rel = variant_file(graphs[name]["file"], "int8")
            record = quantize_graph(
                bundle_dir / graphs[name]["file"], bundle_dir / rel, inputs[name], opts.calibration_method
            )
            graphs[name].setdefault("variants", {})["int8"] = {
                "file": rel,
                "precision": "int8",
                "calibration": {**cal.describe(), **record},
            }
    manifest = write_manifest(bundle_dir, manifest)
    if opts.measure and (opts.fp16 or opts.int8):
        cal = cal or calibration_set(opts.calibration, opts.calibration_images, opts.seed, opts.calibration_size)
        manifest["precision"] = measure_agreement(bundle_dir, cal, opts)
        manifest = write_manifest(bundle_dir, manifest)
    return manifest


def tiers_to_measure(opts: PrecisionOptions) -> List[tuple]:
    """(backend, precision) pairs to compare with ONNX Runtime fp32 (OpenVINO only when installed); a
    precision is a tier or the per-graph ``clip_image=int8`` that ``auto`` may pick."""
    int8 = ["int8", "clip_image=int8"] if opts.int8 else []  # the second: auto's int8-CLIP-only candidate
    pairs = [("onnxruntime", t) for t in int8 + (["fp16"] if opts.fp16 else [])]
    try:
        import openvino  # noqa: F401
    except ImportError:
        log.info("agreement: OpenVINO not installed; its tiers are not measured")
        return pairs
    return pairs + [("openvino", "bf16")] + [("openvino", t) for t in int8]


def measure_agreement(bundle_dir: Path, cal: CalibrationSet, opts: PrecisionOptions) -> Dict[str, Any]:
    """Label-map agreement with ONNX Runtime fp32 of each (backend, tier), pooled over the held-out images
    (faithful ``cropmask`` mode, the bundle's default vocabulary)."""
    from sdk import Segmenter
    from sdk.errors import SegmenterError

    images = [read_rgb(p) for p in cal.verification[: opts.measure_images]]
    kwargs = dict(min_size=cal.min_size, cache_dir=False)
    ref_seg = Segmenter(bundle_dir, backend="onnxruntime", **kwargs)
    refs = [ref_seg(im).label_map for im in images]
    table: Dict[str, Dict[str, float]] = {}
    for backend, tier in tiers_to_measure(opts):
        try:
            seg = Segmenter(bundle_dir, backend=backend, precision=tier, **kwargs)
        except SegmenterError as e:
            log.info("agreement: %s %s not measured: %s", backend, tier, e)
            continue
        same = sum(int((seg(im).label_map == ref).sum()) for im, ref in zip(images, refs))
        value = same / sum(ref.size for ref in refs)
        table.setdefault(tier, {})[backend] = round(value, 6)
        log.info("agreement with fp32: %s %s %.4f", backend, tier, value)
    return {
        "agreement": table,
        "bar": AUTO_BAR,
        "reference": "onnxruntime fp32",
        "measured_on": {
            "images": [p.name for p in cal.verification[: opts.measure_images]],
            "source": cal.source,
            "mode": "cropmask",
            "min_size": cal.min_size,
            "vocabulary": ref_seg.vocabulary.source,
            "classes": len(ref_seg.class_names),
        },
    }
