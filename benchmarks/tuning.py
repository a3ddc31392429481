"""Crop batch size and threads of the CLIP image encoder, per backend and precision, interleaved.

The CLIP image encoder on ~100 crops is ~94 % of a faithful call on the CPU, so its batch size
(``Segmenter(clip_batch=)``) and intra-op threads (``threads=``) are what there is to tune. Every
configuration runs the same crops through the SDK's backend (``backend.clip_image``, batched as the
pipeline batches) once per round, in turn; each row reports the median time per crop and the median
of its per-round ratio to batches of 32 on all cores (the SDK's CPU default before this measurement).

    python benchmarks/tuning.py                                  # r101-vit16 synthetic bundle (cached)
    python benchmarks/tuning.py --batches 8,16,32,100 --threads 1,2 --backends onnxruntime,openvino
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, write_results  # noqa: E402

log = logging.getLogger("benchmarks.tuning")
DEFAULT = (32, 0)  # the reference row: batches of 32 (the SDK's CPU default until this measurement), all cores


def encoder(bundle: Path, backend: str, precision: str, threads: int) -> Callable[[np.ndarray], Any]:
    from sdk.backends import create_backend
    from sdk.bundle import Bundle

    b = create_backend(
        Bundle(bundle), backend, "cpu", {"precision": precision, "threads": threads or None, "cache_dir": False}
    )
    return b.clip_image


def batched(fn: Callable[[np.ndarray], Any], crops: np.ndarray, batch: int) -> None:
    for i in range(0, len(crops), batch):
        fn(crops[i : i + batch])


def run(bundle: Path, configs: Sequence[Tuple[str, str, int, int]], crops: np.ndarray, rounds: int) -> List[Dict]:
    """Each config (backend, precision, batch, threads) once per round, in turn; ratios vs DEFAULT."""
    fns = {}
    for backend, precision, batch, threads in configs:
        key = (backend, precision, threads)
        if key not in fns:
            fns[key] = encoder(bundle, backend, precision, threads)
            batched(fns[key], crops[:batch], batch)  # load + warm up
    times: Dict[Tuple, List[float]] = {c: [] for c in configs}
    for r in range(rounds):
        for c in configs:
            t0 = time.perf_counter()
            batched(fns[(c[0], c[1], c[3])], crops, c[2])
            times[c].append(time.perf_counter() - t0)
        log.info("round %d done", r)
    rows = []
    for c in configs:
        ref = times[(c[0], c[1]) + DEFAULT]
        rows.append(
            {
                "backend": c[0],
                "precision": c[1],
                "batch": c[2],
                "threads": c[3] or "all",
                "ms_per_crop": 1e3 * statistics.median(times[c]) / len(crops),
                "vs_default": statistics.median(t / d for t, d in zip(times[c], ref)),
            }
        )
    return rows


def markdown(rows: List[Dict], crops: int, note: str) -> str:
    lines = [
        f"# CLIP image encoder: batch size × threads ({crops} crops)",
        "",
        note,
        "",
        "| backend | precision | batch | threads | ms / crop | time vs default (32, all) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['backend']} | {r['precision']} | {r['batch']} | {r['threads']} | {r['ms_per_crop']:.1f} | "
        f"{r['vs_default']:.2f} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, help="bundle (default: the cached r101-vit16 synthetic bundle)")
    p.add_argument("--model", default="r101-vit16", help="preset of the synthetic bundle (default r101-vit16)")
    p.add_argument("--backends", default="onnxruntime,openvino", help="comma list (default onnxruntime,openvino)")
    p.add_argument("--precisions", default="fp32", help="comma list of tiers (default fp32)")
    p.add_argument("--batches", default="8,16,32,64,100", help="crop batch sizes (default 8,16,32,64,100)")
    p.add_argument("--threads", default="1,0", help="intra-op threads; 0 = all cores (default 1,0)")
    p.add_argument("--crops", type=int, default=100, help="crops per call (default 100, the query count)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    p.add_argument("--out-dir", type=Path, help="where to write tuning.{json,md} (default benchmarks/results)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from benchmarks.precision_bench import ensure_variants
    from benchmarks.setup_models import prepare_bundle
    from sdk.backends import supported_pairs
    from sdk.bundle import Bundle

    args.quick, args.checkpoint = False, None
    with tempfile.TemporaryDirectory() as tmp:
        bundle = prepare_bundle(args, Path(tmp))[0]
        precisions = args.precisions.split(",")
        ensure_variants(bundle, precisions)
        pairs = supported_pairs(args.backends.split(","), precisions)
        threads = sorted({int(t) for t in args.threads.split(",")} | {DEFAULT[1]})
        batches = sorted({int(b) for b in args.batches.split(",")} | {DEFAULT[0]})
        configs = [(b, pr, n, t) for b, pr in pairs for t in threads for n in batches]
        size = int(Bundle(bundle).model["crop_size"])
        crops = np.random.default_rng(0).standard_normal((args.crops, 3, size, size)).astype(np.float32)
        rows = run(bundle, configs, crops, args.rounds)
    host = machine()
    note = (
        f"{args.rounds} interleaved rounds on {host.get('cpu', '?')} ({host['cpu_count']} cores); "
        "medians. `python benchmarks/tuning.py` reproduces it."
    )
    text = markdown(rows, args.crops, note)
    print(text)
    write_results("tuning", rows, text, args.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
