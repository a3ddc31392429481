"""Time to embed new class names (cache off), 77 tokens vs cut to length, per backend/precision.

Every class name goes through 33 prompts (1 segment-classifier template + 32 CLIP templates). Each
configuration (``backend:precision``; ``clip_text=<tier>`` for the text graph) embeds the same
names twice — ``before``: every prompt at 77 tokens (the old path), ``after``: batches sorted by
length and cut at their longest end of text (``sdk.text_batches``) — interleaved in one run,
``--repeats`` rounds. Also reported: the cosine of every pooled class embedding with ONNX Runtime
fp32 at 77 tokens (min over classes), and the largest difference of the cut fp32 embeddings from
the reference fixture's official 171-class text features (the synthetic weights are the fixture's).

On a loaded machine the 77-token path of 171 classes takes many minutes: ``--before-classes N``
times it on N evenly spaced classes and scales to 171 by the prompt count (its cost is linear in
prompts: fixed length, full batches), and ``--after-classes`` likewise for the cut path (the
default, 171, times them all). The tables say which rows are scaled.

    nice -n 10 python benchmarks/text_embedding.py --repeats 2 --before-classes 16
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine, write_results  # noqa: E402

log = logging.getLogger("text_embedding")
REFERENCE = Path(os.environ.get("ZEGFORMER_REFERENCE", Path(__file__).resolve().parents[2] / "shared" / "reference"))
DEFAULT_CONFIGS = ("onnxruntime:fp32", "openvino:fp32", "openvino:clip_text=bf16")
SMALL = ["zebra crossing", "red umbrella", "wooden fence", "traffic cone"]


def spaced(names: Sequence[str], n: int) -> List[str]:
    """``n`` names evenly spaced over ``names`` (all when n ≥ len)."""
    if n >= len(names):
        return list(names)
    return [names[int(i)] for i in np.linspace(0, len(names) - 1, n).round()]


def make_store(bundle: Path, config: str, threads: int, batch: int):
    """The Segmenter's vocabulary store for ``backend:precision`` (cache off, no built-in reuse)."""
    from sdk import Segmenter

    backend, precision = config.split(":", 1)
    seg = Segmenter(
        bundle,
        backend=backend,
        precision=precision,
        threads=threads,
        cache_dir=False,
        reuse_builtin=False,
        text_batch=batch,
    )
    store = seg._store
    store.progress = False
    return seg, store


def timed(store, names: Sequence[str], cut: bool) -> Tuple[float, float, List[np.ndarray]]:
    """(wall s, process CPU s, [text_features, text_features_clip]) of one embedding of ``names``."""
    store.cut_text = cut
    templates = store.templates()
    wall, cpu = time.perf_counter(), time.process_time()
    out = store.encode_sets(list(names), templates)
    return time.perf_counter() - wall, time.process_time() - cpu, out


def min_cosine(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    return float(min((x * y).sum(1).min() for x, y in zip(a, b)))


def run(args: argparse.Namespace) -> List[Dict[str, Any]]:
    from train.classes import dataset_classes

    names = list(dataset_classes("coco-stuff").names)
    sets = {"171": (spaced(names, args.after_classes), spaced(names, args.before_classes)), "4": (SMALL, SMALL)}
    stores = {}
    for config in args.configs:
        try:
            stores[config] = make_store(args.bundle, config, args.threads, args.batch)
        except Exception as e:  # a backend or tier this machine or bundle lacks
            log.warning("skipping %s: %s", config, e)
    for _seg, store in stores.values():  # compile and warm every graph before timing
        timed(store, SMALL[:1], True)
        timed(store, SMALL[:1], False)
    records: List[Dict[str, Any]] = []
    reference: Dict[Tuple[str, str], List[np.ndarray]] = {}
    for rep in range(args.repeats):
        for size, (after_names, before_names) in sets.items():
            for config, (seg, store) in stores.items():
                for path, subset in (("before", before_names), ("after", after_names)):
                    load = os.getloadavg()[0]
                    wall, cpu, out = timed(store, subset, path == "after")
                    key = (size, path)
                    scale = int(size) / len(subset)
                    rec = {
                        "name": f"{config}/{path}/{size}",
                        "config": config,
                        "path": path,
                        "classes": int(size),
                        "timed_classes": len(subset),
                        "scaled": scale != 1,
                        "repeat": rep,
                        "wall_s": wall * scale,
                        "cpu_s": cpu * scale,
                        "load1": load,
                        "prompts": 33 * len(subset),
                        "info_precision": seg.precision,
                    }
                    if config == args.configs[0] and path == "before" and rep == 0:
                        reference[key] = out
                    rec.update(compare(config, path, size, subset, out, reference, names, args))
                    records.append(rec)
                    log.info(
                        "%s: %.1f s wall (%s), load %.1f%s",
                        rec["name"],
                        rec["wall_s"],
                        f"scaled from {len(subset)} classes" if scale != 1 else "measured",
                        load,
                        "".join(f", {k} {v:.6f}" for k, v in rec.items() if k.startswith(("min_cos", "max_abs"))),
                    )
    return records


def compare(
    config: str,
    path: str,
    size: str,
    subset: Sequence[str],
    out: List[np.ndarray],
    reference: Dict[Tuple[str, str], List[np.ndarray]],
    names: Sequence[str],
    args: argparse.Namespace,
) -> Dict[str, float]:
    """Cosine with fp32 at 77 tokens (classes both paths embedded) and, for fp32 cut, vs the fixture."""
    rec: Dict[str, float] = {}
    before = reference.get((size, "before"))
    before_names = spaced(names, args.before_classes) if size == "171" else SMALL
    if before is not None:
        rows = [list(subset).index(n) for n in before_names if n in subset]
        cols = [before_names.index(n) for n in before_names if n in subset]
        if rows:
            rec["min_cosine_vs_fp32_77"] = min_cosine([o[rows] for o in out], [b[cols] for b in before])
            if config == args.configs[0]:
                rec["max_abs_vs_fp32_77"] = float(max(np.abs(o[rows] - b[cols]).max() for o, b in zip(out, before)))
    fixture = REFERENCE / "reference_r101_vit16_cocostuff.npz"
    if size == "171" and config == args.configs[0] and path == "after" and fixture.is_file() and args.fixture:
        official = json.loads((REFERENCE / "cocostuff_all_classnames.json").read_text())
        with np.load(fixture) as f:
            idx = [official.index(n) for n in subset]
            rec["max_abs_vs_fixture"] = float(
                max(
                    np.abs(out[0] - f["text_features_test"][idx]).max(),
                    np.abs(out[1] - f["text_features_test_clip"][idx]).max(),
                )
            )
    return rec


def markdown(records: List[Dict[str, Any]], args: argparse.Namespace) -> str:
    m = machine()
    rows = {}
    for r in records:
        rows.setdefault((r["classes"], r["config"], r["path"]), []).append(r)
    lines = [
        "# Text embedding: new class names, 33 prompts each, cache off\n",
        f"Machine: {m.get('cpu', m['processor'])}, {m['cpu_count']} cores, {args.threads} threads per backend, "
        f"**shared with other work** (1-minute load average during the runs: "
        f"{min(r['load1'] for r in records):.1f}–{max(r['load1'] for r in records):.1f} "
        f"on {m['cpu_count']} cores). "
        f"Synthetic-weight R101 + ViT-B/16 bundle (the reference fixture's weights). Batches of {args.batch} "
        f"prompts. {args.repeats} interleaved rounds: seconds per round, separated by `/`.\n",
        f"Command: `nice -n 10 python benchmarks/text_embedding.py {' '.join(args.argv)}`\n",
        "| classes | backend:precision | 77 tokens (before) s | cut (after) s | speed-up | cut, process CPU s "
        "| min class cosine vs fp32 77 tokens |",
        "|---|---|---|---|---|---|---|",
    ]
    for (classes, config, path), recs in sorted(rows.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        if path != "after":
            continue
        before = rows.get((classes, config, "before"), [])
        fmt = lambda rs: " / ".join(f"{r['wall_s']:.1f}" for r in rs) + ("\\*" if rs and rs[0]["scaled"] else "")  # noqa: E731
        speed = (
            np.median([b["wall_s"] for b in before]) / np.median([a["wall_s"] for a in recs])
            if before
            else float("nan")
        )
        cos = min((r.get("min_cosine_vs_fp32_77", 1.0) for r in recs + before), default=1.0)
        cpu = " / ".join(f"{r['cpu_s']:.1f}" for r in recs)
        lines.append(f"| {classes} | {config} | {fmt(before)} | {fmt(recs)} | {speed:.1f}× | {cpu} | {cos:.6f} |")
    lines.append(
        "\n\\* scaled to the class count from the evenly spaced classes timed "
        f"({args.before_classes} for 77 tokens, {args.after_classes} cut): cost is linear in prompts.\n"
    )
    fixture = [r["max_abs_vs_fixture"] for r in records if "max_abs_vs_fixture" in r]
    exact = [r["max_abs_vs_fp32_77"] for r in records if "max_abs_vs_fp32_77" in r and r["path"] == "after"]
    if exact:
        lines.append(f"Cut vs 77 tokens, {args.configs[0]}: max |Δ| {max(exact):.2e} over the classes both embedded.")
    if fixture:
        lines.append(f"Cut {args.configs[0]} vs the fixture's official text features: max |Δ| {max(fixture):.2e}.")
    return "\n".join(lines) + "\n"


def add_int8_text(bundle: Path) -> None:
    """Write the int8 text graph into ``bundle`` (once) and record it in the manifest."""
    from export.manifest import read_manifest, write_manifest
    from export.text_int8 import add_text_int8

    manifest = read_manifest(bundle)
    if "int8" not in (manifest["graphs"]["clip_text"].get("variants") or {}):
        write_manifest(bundle, add_text_int8(bundle, manifest))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--bundle", type=Path, help="bundle (default: the cached synthetic r101-vit16 bundle, built once)")
    p.add_argument(
        "--configs",
        nargs="+",
        default=list(DEFAULT_CONFIGS),
        help="backend:precision, e.g. onnxruntime:fp32 openvino:clip_text=bf16 (first = the reference)",
    )
    p.add_argument("--repeats", type=int, default=2, help="interleaved rounds (default 2)")
    p.add_argument("--after-classes", type=int, default=171, help="classes timed on the cut path (scaled to 171)")
    p.add_argument("--before-classes", type=int, default=16, help="classes timed at 77 tokens (scaled to 171)")
    p.add_argument("--batch", type=int, default=64, help="prompts per text-graph call (the Segmenter default: 64)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-fixture", dest="fixture", action="store_false", help="skip the comparison with the fixture")
    p.add_argument(
        "--int8-text",
        action="store_true",
        help="add clip_text.int8.onnx (export/text_int8.py) to the bundle when it has none",
    )
    p.add_argument("--json", type=Path, help="write here instead of benchmarks/results/text_embedding.json")
    args = p.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    if args.bundle is None:
        from benchmarks.setup_models import prepare_bundle

        ns = argparse.Namespace(bundle=None, checkpoint=None, quick=False, model="r101-vit16")
        args.bundle = prepare_bundle(ns, Path("/tmp"))[0]
    if args.int8_text:
        add_int8_text(args.bundle)
    records = run(args)
    path = write_results("text_embedding", records, markdown(records, args), json_path=args.json)
    print(path.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
