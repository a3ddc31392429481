"""Compiled kernels (sdk.kernels) against the official torch composition (train/model/postprocess.py).

    python benchmarks/kernels.py                 # B=1, 100 queries, 640x640, CPU (+ GPU when present)
    python benchmarks/kernels.py --quick         # 320x320, a few iterations
    python benchmarks/kernels.py --json out.json

Each variant runs in its own subprocess, so that its peak memory (the process's peak resident
set, VmHWM) can be measured: the increase over what the process held after imports and input
creation (outputs included). ``semantic_inference`` asks for labels only (the bounded product);
``semantic_scores`` is the same call with ``return_scores=True`` (the dense product, plus the
K x H x W scores); the official composition computes both either way. Inputs: a synthetic image
normalised with the CLIP mean/std, 100 mask logits at stride 4 shaped as elliptic blobs (as the
fixture's designed masks; "noise" masks, the worst case for the box search, are timed too), and
Dirichlet-random class scores for 171 classes.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, summarize, synthetic_image, write_results  # noqa: E402

log = logging.getLogger("benchmarks.kernels")
CLIP_MEAN = np.array((122.7709383, 116.7460125, 104.09373615), np.float32)
CLIP_STD = np.array((68.5005327, 66.6321579, 70.3231630), np.float32)
CLASSES = 171


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=640, help="square padded image size (default 640)")
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--iters", type=int, default=7)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="320x320, 3 iterations")
    p.add_argument("--json", type=Path, help="JSON path (default benchmarks/results/kernels[_quick].json)")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one variant, print its record
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.iters = 320, 3
    return args


# ---------- inputs ----------


def blob_logits(rng: np.random.Generator, q: int, h: int, w: int) -> np.ndarray:
    """Elliptic blobs, logit +10 at the centre, crossing 0 at the rim."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((1, q, h, w), np.float32)
    for i in range(q):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(2, h / 2), rng.uniform(2, w / 2)
        out[0, i] = (1 - ((yy - cy) / ry) ** 2 - ((xx - cx) / rx) ** 2) * 10
    return np.maximum(out, -20)


def inputs(size: int, queries: int, masks: str) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    img = (synthetic_image(size, size).astype(np.float32) - CLIP_MEAN) / CLIP_STD
    h = w = size // 4
    logits = (
        blob_logits(rng, queries, h, w)
        if masks == "blobs"
        else (rng.standard_normal((1, queries, h, w)) * 4).astype(np.float32)
    )
    probs = rng.dirichlet(np.ones(CLASSES), size=(1, queries)).astype(np.float32)
    return {
        "image": np.ascontiguousarray(img.transpose(2, 0, 1)[None]),
        "logits": logits,
        "probs": probs,
        "seen": np.arange(CLASSES) < 156,
    }


# ---------- variants ----------


def ours(op: str, x: Dict[str, np.ndarray], size: int, device: str) -> Callable[[], Any]:
    from sdk import kernels

    if device == "cuda":
        import torch

        x = {k: torch.from_numpy(v).cuda() if k != "seen" else v for k, v in x.items()}
    if op == "masked_crops":
        return lambda: kernels.masked_crops(x["image"], x["logits"], 224)
    return lambda: kernels.semantic_inference(
        x["logits"], x["probs"], (size, size), (size, size), x["seen"], 0.1, return_scores=op == "semantic_scores"
    )


def official(op: str, x: Dict[str, np.ndarray], size: int, device: str) -> Callable[[], Any]:
    import torch

    from train.model import postprocess as ref

    t = {k: torch.from_numpy(v).to(device) for k, v in x.items()}

    def crops():
        with torch.no_grad():
            up = ref.upsample_masks(t["logits"], (size, size))
            return ref.masked_crops(t["image"], up, 224)

    def semantic():
        with torch.no_grad():
            up = ref.upsample_masks(t["logits"], (size, size))
            scores = ref.semantic_scores(t["probs"][0], up[0], (size, size), (size, size), t["seen"], 0.1)
            return scores.argmax(0), scores

    return crops if op == "masked_crops" else semantic


def _status_mb(key: str) -> Optional[float]:
    try:
        with open("/proc/self/status") as f:
            line = next(line for line in f if line.startswith(key + ":"))
        return float(line.split()[1]) / 1024  # kB
    except (OSError, StopIteration):
        return None


def reset_peak_rss() -> float:
    """Restarts the peak-RSS count at the current RSS (Linux); returns the baseline in MB.

    ru_maxrss alone would do in a fresh process, but it survives exec: a worker spawned by a
    big parent would inherit the parent's peak.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_mb("VmRSS")
    except OSError:
        return max_rss_mb()


def max_rss_mb() -> float:
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(spec: str, args: argparse.Namespace) -> Dict[str, Any]:
    """One variant in this process: median time and peak memory over the pre-op baseline."""
    op, impl, device, masks = spec.split("/")
    x = inputs(args.size, args.queries, masks)
    fn = (ours if impl == "ours" else official)(op, x, args.size, device)
    sync = lambda: None  # noqa: E731
    if device == "cuda":
        import torch

        sync = torch.cuda.synchronize
    baseline = reset_peak_rss()
    samples = []
    for i in range(args.warmup + args.iters):
        t0 = time.perf_counter()
        out = fn()
        sync()
        if i >= args.warmup:
            samples.append((time.perf_counter() - t0) * 1e3)
        del out
    record = {
        "name": f"{op}/{impl}/{device}/{masks}/{args.size}",
        "op": op,
        "impl": impl,
        "device": device,
        "masks": masks,
        "size": args.size,
        "queries": args.queries,
        **summarize(samples),
    }
    if device == "cpu":
        record["peak_mb"] = max_rss_mb() - baseline
    record["threads"] = threads_used(impl)
    return record


def threads_used(impl: str) -> int:
    if impl == "ours":
        from sdk import kernels

        return kernels.build_info()["threads"]
    import torch

    return torch.get_num_threads()


def variants(with_gpu: bool, quick: bool) -> List[str]:
    out = []
    for device in ["cpu"] + (["cuda"] if with_gpu else []):
        for op, masks in [
            ("masked_crops", "blobs"),
            ("masked_crops", "noise"),
            ("semantic_inference", "blobs"),
            ("semantic_scores", "blobs"),
        ]:
            if quick and masks == "noise":
                continue
            out += [f"{op}/official/{device}/{masks}", f"{op}/ours/{device}/{masks}"]
    return out


def gpu_present() -> bool:
    try:
        import torch

        from sdk import kernels

        return torch.cuda.is_available() and kernels.cuda_available()
    except Exception:  # noqa: BLE001 - no torch/CUDA: CPU only
        return False


def spawn(spec: str, args: argparse.Namespace) -> Dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        spec,
        "--size",
        str(args.size),
        "--queries",
        str(args.queries),
        "--iters",
        str(args.iters),
        "--warmup",
        str(args.warmup),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def add_ratios(records: List[Dict[str, Any]]) -> None:
    """Speed-up and memory ratio of each variant against the official one of the same op/device/masks."""
    base = {(r["op"], r["device"], r["masks"]): r for r in records if r["impl"] == "official"}
    for r in records:
        b = base.get((r["op"], r["device"], r["masks"]))
        if b is None or r is b:
            continue
        r["speedup_vs_official"] = b["median_ms"] / r["median_ms"]
        if "peak_mb" in r and "peak_mb" in b:
            r["memory_ratio_vs_official"] = b["peak_mb"] / max(r["peak_mb"], 0.1)


def markdown(records: List[Dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"# Compiled kernels vs the official torch composition ({args.size}x{args.size}, B=1, "
        f"{args.queries} queries, {CLASSES} classes)",
        "",
        "| op | masks | device | implementation | median ms | peak MB | x faster | x less memory |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in records:
        peak = f"{r['peak_mb']:.1f}" if "peak_mb" in r else "-"
        fast = f"{r['speedup_vs_official']:.1f}" if "speedup_vs_official" in r else "-"
        mem = f"{r['memory_ratio_vs_official']:.1f}" if "memory_ratio_vs_official" in r else "-"
        lines.append(
            f"| {r['op']} | {r['masks']} | {r['device']} | {r['impl']} | {r['median_ms']:.1f} | {peak} "
            f"| {fast} | {mem} |"
        )
    lines += [
        "",
        "Peak MB: increase of the process's maximum resident set over its level after imports and "
        "input creation (outputs included; CPU only). Each variant ran in its own process.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args.worker, args)))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    records = []
    for spec in variants(gpu_present(), args.quick):
        records.append(spawn(spec, args))
        log.info("%-45s %8.1f ms  peak %s MB", spec, records[-1]["median_ms"], records[-1].get("peak_mb", "-"))
    add_ratios(records)
    json_path = args.json or RESULTS / ("kernels_quick.json" if args.quick else "kernels.json")
    path = write_results("kernels", records, markdown(records, args), json_path=json_path)
    log.info("wrote %s and %s", path, path.with_suffix(".md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
