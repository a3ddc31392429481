"""Image features asked many times: ``classify`` alone vs the full call, relabel throughput, saved bytes.

Per bundle — the full-size synthetic-weight R101 + ViT-B/16 (``benchmarks/setup_models.py``) and
the zero-shot testbed model when ``quickstart/bundle`` exists (``--testbed``) — at 640² with
a 171-class vocabulary whose embeddings are already set, interleaved in one run:

* per mode: ``seg(image, v)`` (the full call) against ``seg.classify(features, v)`` (features
  encoded once; ``pruned`` features hold every query, see ``docs/features.md``);
* per mask storage (fp32, fp16, uint8): bytes per image of the saved features and the label
  agreement of their classification with the in-memory features' (the testbed: its held-out
  images and its own vocabulary);
* relabel throughput: ``sdk.relabel.run_relabel`` (load + classify + the label writers) over
  saved features, images per second.

    nice -n 10 python benchmarks/vocabulary.py --bundle benchmarks/.cache/r101-vit16/bundle
    python benchmarks/vocabulary.py --quick      # the tiny model, 64², a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import summarize, synthetic_image, write_results  # noqa: E402

log = logging.getLogger("vocabulary")
TESTBED = Path("quickstart/bundle")  # python -m train.quickstart writes it
TESTBED_DATA = Path("quickstart/data/val/images")
STORAGES = ("fp32", "fp16", "uint8")
TARGET_CLASSIFY_MS, TARGET_RELABEL_IPS, TARGET_BYTES, TARGET_AGREEMENT = 300.0, 10.0, 1.5e6, 0.995


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, help="full-size bundle (default: the synthetic r101-vit16, built once)")
    p.add_argument(
        "--testbed",
        type=Path,
        default=TESTBED if TESTBED.is_dir() else None,
        help=f"zero-shot testbed bundle (default {TESTBED} when it exists)",
    )
    p.add_argument("--skip-full", action="store_true", help="only the testbed (the full-size run is long)")
    p.add_argument("--testbed-images", type=Path, default=TESTBED_DATA, help="its held-out images")
    p.add_argument("--modes", default="cropmask,pruned,maskpool,proposal")
    p.add_argument("--size", type=int, default=640, help="square image side (default 640)")
    p.add_argument("--classes", type=int, default=171)
    p.add_argument("--iters", type=int, default=2, help="interleaved rounds (each: one full call per mode)")
    p.add_argument("--classify-reps", type=int, default=5, help="classify calls per mode per round")
    p.add_argument("--images", type=int, default=8, help="images for storage agreement and relabel")
    p.add_argument("--relabel-mode", default="maskpool", help="mode of the relabelled features (default maskpool)")
    p.add_argument("--threads", type=int)
    p.add_argument("--workers", type=int, default=2, help="relabel threads (default 2, as the CLI)")
    p.add_argument("--quick", action="store_true", help="tiny model at 64², one round")
    p.add_argument("--out-dir", type=Path)
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    if a.quick:
        a.size, a.iters, a.classify_reps, a.images, a.testbed = 64, 1, 2, 2, None
    return a


# ---------------------------------------------------------------------------------------- set-up
def full_bundle(a) -> Path:
    if a.bundle:
        return a.bundle
    from benchmarks.setup_models import prepare_bundle

    ns = argparse.Namespace(bundle=None, checkpoint=None, model="tiny" if a.quick else "r101-vit16", quick=a.quick)
    return prepare_bundle(ns, Path(tempfile.mkdtemp(prefix="vocab-bench-")))[0]


def random_vocabulary(seg, k: int):
    """``k`` names (the bundle's classes, cycled) with fixed random unit embeddings: already embedded."""
    names = list(seg.bundle.manifest["classes"]["names"])
    names = [names[i % len(names)] + ("" if i < len(names) else f" {i}") for i in range(k)]
    rng = np.random.default_rng(0)
    dim = int(seg.bundle.settings.model.embed_dim)
    tf, tfc = (
        f / np.linalg.norm(f, axis=1, keepdims=True) for f in rng.standard_normal((2, k, dim)).astype(np.float32)
    )
    return seg.set_vocabulary(names, text_features=tf, text_features_clip=tfc)


def images_for(model: str, a, n: int) -> List[np.ndarray]:
    """``n`` square images: synthetic, or the testbed's held-out images resized to the size."""
    if model == "testbed" and a.testbed_images.is_dir():
        from PIL import Image

        files = sorted(p for p in a.testbed_images.rglob("*") if p.suffix.lower() in (".png", ".jpg"))[:n]
        if files:
            return [np.asarray(Image.open(f).convert("RGB").resize((a.size, a.size), Image.BILINEAR)) for f in files]
    return [synthetic_image(a.size, a.size, seed=10 + i) for i in range(n)]


def segmenter(bundle: Path, a):
    from sdk import Segmenter

    return Segmenter(bundle, backend="onnxruntime", min_size=None, threads=a.threads, cache_dir=False)


# ---------------------------------------------------------------------------------------- measurements
def timed(fn) -> Tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1e3, out


def calls(models: Dict[str, Dict[str, Any]], modes: List[str], a) -> List[Dict[str, Any]]:
    """Full call and classify alone per model and mode, the rounds interleaved."""
    samples: Dict[Tuple[str, str, str], List[float]] = {}
    features: Dict[Tuple[str, str], Any] = {}
    for m, ctx in models.items():  # warm-up: sessions loaded, the features each mode classifies
        for mode in modes:
            if mode == "pruned" and (m, "cropmask") in features:  # the same arrays: every query's crop
                features[m, mode] = dataclasses.replace(features[m, "cropmask"], mode="pruned", selection=None)
            else:
                features[m, mode] = ctx["seg"].encode(ctx["image"], mode=mode)
    for r in range(a.iters):
        for m, ctx in models.items():
            seg, vocab = ctx["seg"], ctx["vocab"]
            for mode in modes:
                ms, full = timed(functools.partial(seg, ctx["image"], vocab, mode=mode))
                samples.setdefault((m, mode, "full"), []).append(ms)
                for _ in range(a.classify_reps):
                    ms, fast = timed(functools.partial(seg.classify, features[m, mode], vocab))
                    samples.setdefault((m, mode, "classify"), []).append(ms)
                if mode != "pruned" or full.info.get("clip_queries") == full.info.get("queries"):
                    assert np.array_equal(fast.label_map, full.label_map), (m, mode)
                log.info(
                    "round %d %s %s: full %.0f ms, classify %.0f ms",
                    r,
                    m,
                    mode,
                    samples[m, mode, "full"][-1],
                    samples[m, mode, "classify"][-1],
                )
    return [
        {"name": f"{m}/{mode}/{kind}", "model": m, "mode": mode, "kind": kind, **summarize(v)}
        for (m, mode, kind), v in samples.items()
    ]


def storage_and_relabel(m: str, ctx: Dict[str, Any], a, work: Path) -> List[Dict[str, Any]]:
    """Bytes and agreement per storage, then relabel throughput, for ``a.images`` images."""
    from sdk.relabel import find_features, read_items, run_relabel

    seg, vocab = ctx["seg"], ctx["eval_vocab"]
    encoded = [seg.encode(im, mode=a.relabel_mode) for im in ctx["images"]]
    exact = [seg.classify(f, vocab).label_map for f in encoded]
    records = []
    for storage in STORAGES:
        folder = work / m / storage
        folder.mkdir(parents=True)
        sizes, agree = [], []
        for i, f in enumerate(encoded):
            path = f.save(folder / f"im{i:03d}.features.npz", storage)
            sizes.append(path.stat().st_size)
            agree.append(float((seg.classify(seg.load_features(path), vocab).label_map == exact[i]).mean()))
        records.append(
            {
                "name": f"{m}/storage/{storage}",
                "model": m,
                "storage": storage,
                "mode": a.relabel_mode,
                "bytes_per_image": float(np.mean(sizes)),
                "agreement": float(np.mean(agree)),
                "agreement_min": float(np.min(agree)),
                "n": len(sizes),
            }
        )
    rates: Dict[str, List[float]] = {}
    for r in range(max(1, a.iters)):
        for storage in ("fp32", "uint8"):  # alternating: the exact and the compact file
            folder = work / m / storage
            items = read_items(find_features(folder), seg._pipeline.bundle_id, None)
            out = work / m / f"out-{storage}-{r}"
            out.mkdir()
            summary = run_relabel(items, out, seg, settings={"bench": storage}, workers=a.workers, progress=False)
            assert summary.labelled == len(items), summary.errors
            rates.setdefault(storage, []).append(summary.images_per_second)
    for storage, v in rates.items():
        records.append(
            {
                "name": f"{m}/relabel/{storage}",
                "model": m,
                "storage": storage,
                "mode": a.relabel_mode,
                "images_per_second": float(np.median(v)),
                "runs": v,
                "images": len(encoded),
                "workers": a.workers,
                "classes": len(ctx["vocab"]),
            }
        )
    return records


# ---------------------------------------------------------------------------------------- report
def markdown(records: List[Dict[str, Any]], a, load: Tuple[Sequence[float], Sequence[float]]) -> str:
    by = {r["name"]: r for r in records}
    models = list(dict.fromkeys(r["model"] for r in records))
    lines = [
        f"# Image features: one encoding, many vocabularies ({a.size}², {a.classes} classes, ONNX Runtime CPU)",
        "",
        f"Machine: {os.cpu_count()} CPU cores shared with other work, run under `nice -n 10` "
        f"(load average {load[0][0]:.1f} at the start, {load[1][0]:.1f} at the end); medians of "
        f"{a.iters} interleaved rounds (full call) and {a.iters * a.classify_reps} classify calls.",
        "",
        "## Re-asking an encoded image",
        "",
        "| model | mode | full call ms | classify ms | × faster | classify ≤ 300 ms |",
        "|---|---|---:|---:|---:|---|",
    ]
    for m in models:
        for mode in a.modes.split(","):
            full, fast = by.get(f"{m}/{mode}/full"), by.get(f"{m}/{mode}/classify")
            if full and fast:
                met = "met" if fast["median_ms"] <= TARGET_CLASSIFY_MS else "**not met**"
                lines.append(
                    f"| {m} | {mode} | {full['median_ms']:.0f} | {fast['median_ms']:.0f} | "
                    f"{full['median_ms'] / fast['median_ms']:.0f} | {met} |"
                )
    lines += [
        "",
        f"## Saved features per {a.size}² image ({a.relabel_mode} features)",
        "",
        "| model | masks stored as | MB per image | label agreement with the in-memory features (min) | "
        "compact target (≤ 1.5 MB, ≥ 99.5 %) |",
        "|---|---|---:|---:|---|",
    ]
    for m in models:
        for s in STORAGES:
            r = by.get(f"{m}/storage/{s}")
            if r:
                met = (
                    "-"
                    if s == "fp32"
                    else (
                        "met"
                        if r["bytes_per_image"] <= TARGET_BYTES and r["agreement"] >= TARGET_AGREEMENT
                        else "**not met**"
                    )
                )
                lines.append(
                    f"| {m} | {s} | {r['bytes_per_image'] / 1e6:.2f} | {100 * r['agreement']:.2f} % "
                    f"({100 * r['agreement_min']:.2f} %) | {met} |"
                )
    lines += [
        "",
        "## Relabel throughput (`python -m sdk relabel`: load, classify, write PNG + overlay + JSON/RLE)",
        "",
        "| model | features | images/s | relabel ≥ 10 images/s |",
        "|---|---|---:|---|",
    ]
    for m in models:
        for s in ("fp32", "uint8"):
            r = by.get(f"{m}/relabel/{s}")
            if r:
                met = "met" if r["images_per_second"] >= TARGET_RELABEL_IPS else "**not met**"
                lines.append(f"| {m} | {s} | {r['images_per_second']:.1f} | {met} |")
    lines += ["", f"Command: `nice -n 10 python benchmarks/vocabulary.py {' '.join(sys.argv[1:])}`".rstrip(), ""]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    a = parse_args(argv)
    modes = a.modes.split(",")
    load_start = os.getloadavg()
    bundles = {} if a.skip_full else {"r101-vit16 synthetic" if not a.quick else "tiny synthetic": full_bundle(a)}
    if a.testbed is not None:
        bundles["testbed"] = a.testbed
    models: Dict[str, Dict[str, Any]] = {}
    for m, path in bundles.items():
        seg = segmenter(path, a)
        vocab = random_vocabulary(seg, a.classes)
        images = images_for(m, a, a.images)
        eval_vocab = seg.resolve_vocabulary(seg.bundle.default_vocabulary) if m == "testbed" else vocab
        models[m] = {"seg": seg, "vocab": vocab, "eval_vocab": eval_vocab, "image": images[0], "images": images}
    records = calls(models, modes, a)
    with tempfile.TemporaryDirectory(prefix="vocab-bench-") as work:
        for m, ctx in models.items():
            records += storage_and_relabel(m, ctx, a, Path(work))
    load = (load_start, os.getloadavg())
    for r in records:
        r["loadavg"] = [list(load[0]), list(load[1])]
    stem = "vocabulary_quick" if a.quick else "vocabulary"
    text = markdown(records, a, load)
    path = write_results(stem, records, text, a.out_dir, a.json)
    print(text)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
