"""End-to-end latency, memory and agreement: backends × modes × sizes against the official-style baseline.

    python benchmarks/latency.py --quick                       # tiny model, < 1 minute
    python benchmarks/latency.py --sizes 320,640               # R101 + ViT-B/16, synthetic weights
    python benchmarks/latency.py --bundle B --checkpoint C     # your own bundle
    python benchmarks/latency.py --fixture --precisions fp32,int8,bf16,fp16 --backends onnxruntime,openvino
                                   # precision axis on the conformance fixture, configurations interleaved

The baseline is the faithful PyTorch inference written the way the official code runs it
(full-resolution masked images per query, torchvision ``roi_align``, the two unused crop variants,
eager float32; float16 CLIP on a GPU). Every figure is also given as a ratio against it, measured
in the same run. Agreement is the label map of each configuration against the baseline's on the
same image. Full-size runs use synthetic weights (the reference fixture's recipe): latency does
not depend on weight values, but the pruned mode's savings and the agreement do. So every row also
shows the accuracy of the same backend / precision / mode on the trained zero-shot testbed model
(``benchmarks/accuracy.py``, from ``benchmarks/zeroshot.py --seeds 0,1,2 --precisions ...``).
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import accuracy  # noqa: E402
from benchmarks.common import PeakRSS, label_agreement, summarize, synthetic_image, time_calls, write_results  # noqa: E402
from benchmarks.setup_models import prepare_bundle  # noqa: E402

log = logging.getLogger("benchmarks.latency")
BASELINE = "official-style"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, help="bundle to time (default: build one with synthetic weights)")
    p.add_argument("--checkpoint", type=Path, help="checkpoint of the bundle (for the baseline/torch backend)")
    p.add_argument("--model", default="r101-vit16", help="preset for the synthetic model (default r101-vit16)")
    p.add_argument(
        "--backends",
        default="onnxruntime",
        help="comma list of SDK backends (onnxruntime, openvino, tensorrt, torch; default onnxruntime)",
    )
    p.add_argument(
        "--precisions",
        help="precision axis: comma list of tiers (fp32,bf16,int8,fp16); every "
        "supported backend x tier runs interleaved with the baseline and faithful fp32 "
        "(int8/fp16 graphs are added to the bundle when missing)",
    )
    p.add_argument(
        "--fixture",
        action="store_true",
        help="with --precisions: the conformance fixture's image, "
        "171-class text features and weights (model r101-vit16) instead of a synthetic image",
    )
    p.add_argument("--no-baseline", action="store_true", help="with --precisions: skip the PyTorch baseline")
    p.add_argument("--calibration-images", type=int, help="int8 calibration images when graphs are added")
    p.add_argument("--modes", default="cropmask,pruned,maskpool,proposal", help="comma list of modes")
    p.add_argument("--sizes", default="320,640", help="square input sizes (comma list)")
    p.add_argument("--batch", default="1", help="throughput with N concurrent images (comma list)")
    p.add_argument("--classes", type=int, default=171, help="vocabulary size (default 171)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls first (the first gives agreement)")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: library choice)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--quick", action="store_true", help="tiny model, one small size, 2 iterations")
    p.add_argument("--out-dir", type=Path, help="results directory (default benchmarks/results)")
    p.add_argument("--json", type=Path, help="JSON path (default <out-dir>/latency[_quick].json)")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument(
        "--accuracy",
        type=Path,
        default=accuracy.DEFAULT,
        help="zero-shot results whose accuracy is shown beside each speed (default "
        "benchmarks/results/zeroshot_tiers.json, from benchmarks/zeroshot.py --seeds 0,1,2 --precisions ...)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.model, args.sizes, args.iters, args.warmup = "tiny", "64", 2, 1
    return args


def vocabulary(
    num_classes: int, dim: int, train_names: Sequence[str]
) -> Tuple[List[str], np.ndarray, np.ndarray, List[bool]]:
    """COCO-Stuff names (cycled to ``num_classes``) with fixed random unit embeddings."""
    from train.classes import dataset_classes

    names = list(dataset_classes("coco-stuff").names)
    names = [names[i % len(names)] + ("" if i < len(names) else f" {i}") for i in range(num_classes)]
    rng = np.random.default_rng(0)
    feats = [rng.standard_normal((num_classes, dim)).astype(np.float32) for _ in range(2)]
    feats = [f / np.linalg.norm(f, axis=1, keepdims=True) for f in feats]
    seen = [n in set(train_names) for n in names]
    return names, feats[0], feats[1], seen


class Baseline:
    """The official-style PyTorch inference (``train.inference.segment`` with the official extras)."""

    def __init__(self, checkpoint: Path, device: str, threads: Optional[int], vocab):
        import torch

        from train.checkpoint import load_model

        if threads:
            torch.set_num_threads(threads)
        self.model, _ = load_model(checkpoint, device)
        if device == "cuda":
            self.model.clip.half()  # the official clip.load runs CLIP in float16 on the GPU
        _, tf, tfc, self.seen = vocab
        self.tf, self.tfc = torch.from_numpy(tf), torch.from_numpy(tfc)
        self.device = device

    def __call__(self, image: np.ndarray) -> Tuple[Dict[str, float], np.ndarray]:
        import torch

        from train.inference import segment

        timings: Dict[str, float] = {}
        out = segment(self.model, image, self.tf, self.tfc, self.seen, timings=timings, official_extras=True)
        if self.device == "cuda":
            torch.cuda.synchronize()
        return timings, out["sem_seg"].argmax(0).cpu().numpy().astype(np.int32)


def sdk_runner(bundle: Path, backend: str, mode: str, args, vocab, checkpoint: Optional[Path], precision: str = "fp32"):
    from sdk import Segmenter

    seg = Segmenter(
        bundle,
        backend=backend,
        device=args.device,
        mode=mode,
        min_size=None,
        threads=args.threads,
        checkpoint=checkpoint,
        cache_dir=False,
        precision=precision,
    )
    names, tf, tfc, _ = vocab
    seg.set_vocabulary(names, text_features=tf, text_features_clip=tfc)
    return seg, mode_runner(seg, mode)


def mode_runner(seg, mode: str):
    """``image → (timings, label map, info)`` of ``seg`` in ``mode``."""

    def run(image: np.ndarray) -> Tuple[Dict[str, float], np.ndarray, Dict[str, Any]]:
        result = seg(image, mode=mode)
        return dict(result.timings), result.label_map, dict(result.info)

    return run


def measure(
    name: Tuple[str, str],
    run,
    image: np.ndarray,
    args,
    reference: Optional[np.ndarray],
    size: int,
    baseline_total: Optional[float],
) -> Tuple[List[Dict[str, Any]], np.ndarray]:
    """Times one configuration: one record per stage (the ``total`` record carries the extras),
    and the label map of the first (warm-up) call."""
    with PeakRSS() as mem:
        first = run(image)  # the first warm-up call; its output is what agreement compares
        samples = time_calls(lambda: run(image)[0], max(0, args.warmup - 1), args.iters)
    backend, mode = name
    records = []
    for stage, values in samples.items():
        rec = {
            "name": f"{backend}/{mode}/{stage}/{size}",
            "backend": backend,
            "mode": mode,
            "stage": stage,
            "size": size,
            **summarize(values),
        }
        if stage == "total":
            rec["peak_rss_mb"] = round(mem.peak_mb, 1)
            if baseline_total:
                rec["speedup_vs_baseline"] = baseline_total / rec["median_ms"]
            if reference is not None:
                rec.update(label_agreement(first[1], reference))
            if len(first) > 2 and "clip_queries" in first[2]:
                rec["clip_queries"] = first[2]["clip_queries"]
        records.append(rec)
    return records, first[1]


def throughput(run, image: np.ndarray, batch: int, iters: int) -> float:
    """Images per second with ``batch`` threads each segmenting an image (one Segmenter)."""

    def work():
        for _ in range(iters):
            run(image)

    threads = [threading.Thread(target=work) for _ in range(batch)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return batch * iters / (time.perf_counter() - t0)


def total_of(records: List[Dict[str, Any]]) -> Optional[float]:
    return next((r["median_ms"] for r in records if r["stage"] == "total"), None)


def run_size(size: int, args, bundle: Path, checkpoint: Path, vocab) -> List[Dict[str, Any]]:
    image = synthetic_image(size, size, seed=size)
    log.info("size %d: official-style baseline", size)
    baseline = Baseline(checkpoint, args.device, args.threads, vocab)
    records, reference = measure((BASELINE, "cropmask"), baseline, image, args, None, size, None)
    base_total = total_of(records)
    del baseline
    for backend in args.backends.split(","):
        for mode in args.modes.split(","):
            log.info("size %d: %s / %s", size, backend, mode)
            try:
                seg, run = sdk_runner(bundle, backend, mode, args, vocab, checkpoint)
            except Exception as e:  # e.g. tensorrt absent: say so in the results, keep going
                log.warning("skipping %s/%s: %s", backend, mode, e)
                records.append(
                    {
                        "name": f"{backend}/{mode}/total/{size}",
                        "backend": backend,
                        "mode": mode,
                        "stage": "total",
                        "size": size,
                        "skipped": str(e),
                    }
                )
                continue
            records += measure((backend, mode), run, image, args, reference, size, base_total)[0]
            for b in (int(x) for x in args.batch.split(",")):
                if b > 1:
                    ips = throughput(run, image, b, max(1, args.iters))
                    records.append(
                        {
                            "name": f"{backend}/{mode}/throughput_b{b}/{size}",
                            "backend": backend,
                            "mode": mode,
                            "stage": f"throughput_b{b}",
                            "size": size,
                            "images_per_s": ips,
                            "median_ms": 1e3 / ips,
                        }
                    )
            del seg
    return records


def markdown(records: List[Dict[str, Any]], title: str, acc: Optional[Dict] = None) -> str:
    acc = {} if acc is None else acc
    stages = ["preprocess", "proposal", "classify", "prune", "crops", "clip", "pool", "ensemble", "semantic"]
    head = (
        "| size | backend | mode | total ms | × baseline | "
        + " | ".join(stages)
        + f" | peak RSS MB | labels vs baseline (synthetic weights) | {accuracy.HEADER} | CLIP queries |"
    )
    lines = [f"# {title}", "", head, "|" + "---|" * (head.count("|") - 1)]
    by_cfg: Dict[Tuple, Dict[str, Any]] = {}
    for r in records:
        by_cfg.setdefault((r["size"], r["backend"], r["mode"]), {})[r["stage"]] = r
    for (size, backend, mode), st in by_cfg.items():
        t = st.get("total", {})
        if "skipped" in t:
            lines.append(f"| {size} | {backend} | {mode} | skipped: {t['skipped'][:60]} |")
            continue
        cells = [f"{st[s]['median_ms']:.0f}" if s in st else "" for s in stages]
        speed = f"{t['speedup_vs_baseline']:.2f}" if "speedup_vs_baseline" in t else "1.00"
        agree = f"{100 * t['pixel_agreement']:.2f} %" if "pixel_agreement" in t else "(reference)"
        lines.append(
            f"| {size} | {backend} | {mode} | {t.get('median_ms', 0):.0f} | {speed} | "
            + " | ".join(cells)
            + f" | {t.get('peak_rss_mb', '')} | {agree} | "
            f"{accuracy.cells(acc, backend, 'fp32', mode)} | {t.get('clip_queries', '')} |"
        )
    lines += [
        "",
        "Medians over the timed iterations, milliseconds; × baseline = baseline total / total.",
        accuracy.note(acc),
    ]
    return "\n".join(lines) + "\n"


def plot(records: List[Dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r["size"] for r in records})
    stages = ["preprocess", "proposal", "classify", "prune", "crops", "clip", "pool", "ensemble", "semantic"]
    fig, axes = plt.subplots(len(sizes), 1, figsize=(10, 3 + 2.5 * len(sizes)), squeeze=False)
    for ax, size in zip(axes[:, 0], sizes):
        cfgs = [
            (r["backend"], r["mode"])
            for r in records
            if r["size"] == size and r["stage"] == "total" and "median_ms" in r
        ]
        for i, cfg in enumerate(cfgs):
            left = 0.0
            for j, stage in enumerate(stages):
                rec = next(
                    (
                        r
                        for r in records
                        if r["size"] == size and (r["backend"], r["mode"]) == cfg and r["stage"] == stage
                    ),
                    None,
                )
                if rec:
                    ax.barh(i, rec["median_ms"], left=left, color=plt.cm.tab10(j), label=stage if i == 0 else None)
                    left += rec["median_ms"]
        ax.set_yticks(range(len(cfgs)), [f"{b}/{m}" for b, m in cfgs])
        ax.set_xlabel("ms (median)")
        ax.set_title(f"{size}×{size}")
        ax.legend(fontsize=7, ncol=5)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def precision_axis(args, bundle: Path, checkpoint: Path, train_names, dim: int) -> int:
    """``--precisions``: backends × tiers × modes, interleaved rounds, ratios and agreement with fp32."""
    from benchmarks import precision_bench as pb

    tiers = args.precisions.split(",")
    pb.ensure_variants(bundle, tiers, args.calibration_images)
    if args.fixture:
        from tests.conftest import REFERENCE_DIR

        images = {"fixture": pb.fixture_inputs(REFERENCE_DIR)}
    else:
        images = {
            str(s): (synthetic_image(int(s), int(s), seed=int(s)), vocabulary(args.classes, dim, train_names))
            for s in args.sizes.split(",")
        }
    records, text = [], []
    acc = accuracy.load(args.accuracy)
    stem = "precision_fixture" if args.fixture else "precision"
    for size, (image, vocab) in images.items():
        # one Segmenter per configuration for every mode: a set per mode ran out of 24 GB with 8 configurations
        segs = {}
        for backend, tier in pb.configurations(args.backends.split(","), tiers):
            try:
                segs[(backend, tier)] = sdk_runner(bundle, backend, "cropmask", args, vocab, checkpoint, tier)[0]
            except Exception as e:  # e.g. openvino absent: say so, keep going
                log.warning("skipping %s/%s: %s", backend, tier, e)
        for mode in args.modes.split(","):
            runners = {}
            if not args.no_baseline and mode == "cropmask":
                base = Baseline(checkpoint, args.device, args.threads, vocab)
                runners[BASELINE] = lambda im, b=base: (*b(im), {"precision": "fp32 (torch)"})
            runners.update({f"{b}/{mode}/{t}": mode_runner(seg, mode) for (b, t), seg in segs.items()})
            rows = pb.run_interleaved(
                runners, image, args.iters, BASELINE if BASELINE in runners else None, f"onnxruntime/{mode}/fp32"
            )
            runners = base = None
            gc.collect()
            for name, row in rows.items():
                records.append({"name": f"{name}/total/{size}", "size": size, "mode": mode, "stage": "total", **row})
            text.append(
                pb.markdown(
                    rows,
                    acc,
                    mode,
                    f"{size} ({image.shape[0]}x{image.shape[1]}), mode {mode}, "
                    f"{len(vocab[0])} classes, threads={args.threads or 'default'}",
                    f"{args.iters} interleaved rounds; × = median of per-round ratios; agreement = "
                    "label map of the first call vs faithful ONNX Runtime fp32 (synthetic weights). "
                    + accuracy.note(acc),
                )
            )
            path = write_results(stem, records, "\n".join(text), args.out_dir, args.json)  # each mode as it ends
    print(path.with_suffix(".md").read_text())
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.precisions:
        if args.fixture:
            args.model = "r101-vit16"
        with tempfile.TemporaryDirectory() as tmp:
            bundle, checkpoint, train_names, dim = prepare_bundle(args, Path(tmp))
            return precision_axis(args, bundle, checkpoint, train_names, dim)
    with tempfile.TemporaryDirectory() as tmp:
        bundle, checkpoint, train_names, dim = prepare_bundle(args, Path(tmp))
        vocab = vocabulary(args.classes, dim, train_names)
        records: List[Dict[str, Any]] = []
        for size in (int(s) for s in args.sizes.split(",")):
            records += run_size(size, args, bundle, checkpoint, vocab)
    stem = "latency_quick" if args.quick else "latency"
    title = f"Latency — {args.model}, {args.classes} classes, {args.device}, threads={args.threads or 'default'}"
    path = write_results(stem, records, markdown(records, title, accuracy.load(args.accuracy)), args.out_dir, args.json)
    if not args.no_plot:
        plot(records, path.with_suffix(".png"))
    print(path.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
