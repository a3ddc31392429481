"""Zero-shot accuracy of every SDK mode and backend on a model that means something.

    python benchmarks/zeroshot.py [--work DIR] [--clip-steps N] [--iters N] [--docs]
    python benchmarks/zeroshot.py --precisions fp32,bf16,int8,fp16 --backends onnxruntime,openvino,torch
    python benchmarks/zeroshot.py --seeds 0,1,2          # the seed spread and the quick start's expected band

Runs the quick start's steps (``train.quickstart``: compositional world → small CLIP trained from
scratch → ZegFormer on the seen classes, CLIP frozen → bundle; resumable, cached in ``--work``),
then evaluates the bundle through the SDK on the held-out images with the official GZSS protocol
in each mode (``cropmask``, ``pruned``, ``maskpool``, ``proposal``) and backend (torch, ONNX
Runtime): seen / unseen mIoU, hIoU, agreement of each mode's label maps with ``cropmask``, and the
fraction of queries ``pruned`` sends to CLIP. ``--precisions`` adds the precision tiers (int8/fp16
graphs are added to the bundle, int8 calibrated on the world's training images): every agreement is
with the faithful map (the first backend's fp32 ``cropmask``), so this is where the precision tiers'
and fast modes' accuracy is measured on a model whose decisions are not noise. Writes
``benchmarks/results/zeroshot.{json,md}`` (``--docs`` also copies the example picture to
``docs/zeroshot_example.png``); ``benchmarks/latency.py`` shows these accuracies beside its speeds.

``--seeds 0,1,2`` runs the whole quick start once per seed (``WORK/seed-N``: the world's images,
CLIP's and ZegFormer's initialisation and data order all seeded with N; resumable) and writes the
seed-spread table — per mode, seen / unseen mIoU and hIoU as mean, min, max over seeds — to
``benchmarks/results/zeroshot_seeds.{json,md}`` and into ``zeroshot.md``, and the expected band the
quick start prints its result against (``train/resources/zeroshot_band.json``, ``--no-band`` keeps it).
One run is one draw: only a difference larger than the spread is a measured difference.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, machine, write_results  # noqa: E402
from train.quickstart import DEFAULTS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--work",
        type=Path,
        default=Path("runs/zeroshot-benchmark"),
        help="working folder, reused when re-run (default runs/zeroshot-benchmark)",
    )
    p.add_argument("--train", type=int, default=DEFAULTS["train"], help="training images (the quick start's default)")
    p.add_argument("--val", type=int, default=DEFAULTS["val"], help="held-out images (the quick start's default)")
    p.add_argument("--clip-steps", type=int, default=DEFAULTS["clip_steps"], help="CLIP steps (the quick start's)")
    p.add_argument("--iters", type=int, default=DEFAULTS["iters"], help="ZegFormer steps (the quick start's)")
    p.add_argument(
        "--backends",
        default="torch,onnxruntime",
        help="comma list; the first one's fp32 cropmask is the faithful reference (default torch,onnxruntime)",
    )
    p.add_argument(
        "--precisions",
        default="fp32",
        help="comma list of tiers: fp32,bf16,int8,fp16 (each backend "
        "runs the ones it supports on the CPU; default fp32)",
    )
    p.add_argument(
        "--calibration-images",
        type=int,
        default=40,
        help="int8: training images of the world to calibrate on (default 40)",
    )
    p.add_argument("--out-dir", type=Path, default=RESULTS, help="where zeroshot.{json,md} go")
    p.add_argument("--docs", action="store_true", help="copy the example picture to docs/zeroshot_example.png")
    p.add_argument(
        "--seeds",
        default="",
        help="comma list: one quick start per seed in WORK/seed-N, then the "
        "seed-spread table and the expected band (fp32 only)",
    )
    p.add_argument(
        "--band",
        type=Path,
        default=None,
        help="with --seeds: where the quick start's expected band goes (default train/resources/zeroshot_band.json)",
    )
    p.add_argument(
        "--native-kernels",
        action="store_true",
        help="this CPU's fastest kernels (as the quick start's "
        "--native-kernels); default: the AVX2 ones every x86 CPU shares",
    )
    p.add_argument("--no-band", action="store_true", help="with --seeds: leave the quick start's band as it is")
    return p.parse_args(argv)


def train_seconds(run: Path) -> Optional[float]:
    log = run / "train_log.jsonl"
    if not log.is_file():
        return None
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return float(lines[-1]["time_s"]) if lines else None


def markdown(clip: Dict[str, Any], records: List[Dict[str, Any]], meta: Dict[str, Any]) -> str:
    from train.quickstart import summary

    m = machine()
    tiers = (
        f" --precisions {','.join(meta['precisions'])} --backends {','.join(meta['backends'])}"
        if meta.get("precisions", ["fp32"]) != ["fp32"]
        else ""
    )
    lines = [
        "# Zero-shot world: GZSS per SDK mode and backend",
        "",
        f"`python benchmarks/zeroshot.py --clip-steps {meta['clip_steps']} --iters {meta['iters']}"
        f"{tiers}` — "
        f"{meta['classes']} classes ({meta['unseen']} unseen), {meta['val']} held-out images at their own size "
        f"(~144 px). CLIP: {clip['clip_config']['vision_layers']}-layer ViT width "
        f"{clip['clip_config']['vision_width']}, patch {clip['clip_config']['patch_size']} on "
        f"{clip['clip_config']['image_size']}-px crops, {clip['clip_config']['text_layers']}-layer text "
        f"transformer width {clip['clip_config']['text_width']}, 77 tokens. Wall times: CLIP "
        f"{clip['seconds']:.0f} s, ZegFormer {meta['zegformer_seconds'] or float('nan'):.0f} s "
        f"({meta['iters']} steps). Machine: {m.get('cpu', m['processor'])}, {m['cpu_count']} cores, "
        "shared with other jobs during the run (times are pessimistic).",
        "",
        summary(clip, records),
    ]
    return "\n".join(lines)


def evaluate_tiers(
    bundle: Path, data: Path, backends: List[str], precisions: List[str], calibration_images: int
) -> List[Dict[str, Any]]:
    """GZSS of every backend × precision × mode; int8/fp16 graphs added first (int8 calibrated on
    the world's training images, at their own size)."""
    from benchmarks.precision_bench import ensure_variants
    from train.data import build_dataset
    from train.zeroshot_eval import evaluate_bundle

    ensure_variants(bundle, precisions, calibration_images, calibration=data / "train" / "images", calibration_size=144)
    dataset = build_dataset("folder", str(data), "val")
    return evaluate_bundle(bundle, dataset, backends=backends, precisions=precisions, progress=True)


SECTION = ("<!-- seed-spread -->", "<!-- /seed-spread -->")


def with_section(markdown_text: str, section: str) -> str:
    """``markdown_text`` with the seed-spread section replaced (or appended)."""
    begin, end = SECTION
    if begin in markdown_text and end in markdown_text:
        head, rest = markdown_text.split(begin, 1)
        return head + section + rest.split(end, 1)[1]
    return markdown_text.rstrip("\n") + "\n\n" + section + "\n"


def old_section(path: Path) -> str:
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    begin, end = SECTION
    return begin + text.split(begin, 1)[1].split(end, 1)[0] + end if begin in text and end in text else ""


def run_seed(work: Path, seed: int, a: argparse.Namespace, backends: List[str]) -> Dict[str, Any]:
    """The quick start with every step seeded by ``seed`` in ``work/seed-N`` (resumable); its GZSS records."""
    from train import quickstart as qs

    out = work / f"seed-{seed}"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = qs.step_world(out, a.train, a.val, seed)
    clip = qs.step_clip(out, data, a.clip_steps, [], seed)
    checkpoint = qs.step_zegformer(out, data, a.iters, [], seed)
    bundle = qs.step_export(out, checkpoint)
    records = qs.step_evaluate(out, bundle, data, backends, 0)
    return {
        "seed": seed,
        "clip_zero_shot": clip["zero_shot"],
        "clip_catch_alls": clip["text_balance"]["flagged"],
        "clip_seconds": clip["seconds"],
        "zegformer_seconds": train_seconds(out / "run"),
        "records": records,
        "seconds_this_run": round(time.perf_counter() - t0, 1),
    }


def cached_tiers(out: Path, a: argparse.Namespace, backends: List[str], precisions: List[str]) -> List[dict]:
    """Every backend × precision × mode on ``out/bundle``, kept in ``out/tiers.json`` (reused while the
    backends, precisions and calibration match)."""
    from sdk.atomicio import write_json_atomic

    key = {"backends": backends, "precisions": precisions, "calibration": a.calibration_images}
    path = out / "tiers.json"
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("key") == key:
            return saved["records"]
    records = evaluate_tiers(out / "bundle", out / "data", backends, precisions, a.calibration_images)
    write_json_atomic(path, {"key": key, "records": records})
    return records


def tiers_markdown(rows: List[Dict[str, Any]], seeds: List[int], a: argparse.Namespace) -> str:
    from train.zeroshot_band import tier_markdown

    m = machine()
    return "\n".join(
        [
            "# Zero-shot world: precision tiers and modes, mean over seeds",
            "",
            f"`python benchmarks/zeroshot.py --seeds {','.join(map(str, seeds))} --precisions {a.precisions} "
            f"--backends {a.backends}` — each seed's quick-start bundle ({a.val} held-out images), int8 calibrated "
            f"on {a.calibration_images} of its training images; means over the {len(seeds)} seeds. Labels as "
            f"faithful: pixels labelled as that seed's {a.backends.split(',')[0]} fp32 cropmask. "
            f"Machine: {m.get('cpu', m['processor'])}, {m['cpu_count']} cores, torch {m.get('torch', '?')}, "
            f"CPU kernels {a.kernels}.",
            "",
            tier_markdown(rows),
        ]
    )


def takeover_markdown(runs: List[Dict[str, Any]], backend: str) -> List[str]:
    """Per seed, the classes that took a large share of another class's pixels in the faithful map
    (whichever model drew the catch-all); nothing for evaluations written before ``gzss.json`` kept them."""
    from train.zeroshot_eval import FAITHFUL_MODE, takeover_groups, takeover_heading

    lines = []
    for r in runs:
        rec = next((x for x in r["records"] if x["backend"] == backend and x["mode"] == FAITHFUL_MODE), None)
        groups = takeover_groups(rec) if rec else None
        if groups is not None:
            lines.append(f"- seed {r['seed']}: " + ("; ".join(groups) or "none"))
    if not lines:
        return []
    return [takeover_heading(f"{FAITHFUL_MODE}, per seed"), "", *lines, ""]


def seeds_markdown(runs: List[Dict[str, Any]], spread: Dict[str, Any], a: argparse.Namespace, backend: str) -> str:
    from train.zeroshot_band import spread_markdown

    m = machine()
    seeds = [r["seed"] for r in runs]
    clip = " / ".join(f"{100 * r['clip_zero_shot']['unseen_acc_all']:.1f}" for r in runs)
    times = " / ".join(f"{r['clip_seconds'] or 0:.0f} + {r['zegformer_seconds'] or 0:.0f}" for r in runs)
    catch = "; ".join(f"seed {r['seed']}: {', '.join(r['clip_catch_alls']) or 'none'}" for r in runs)
    return "\n".join(
        [
            SECTION[0],
            "## Seed spread",
            "",
            f"`python benchmarks/zeroshot.py --seeds {','.join(map(str, seeds))}` — the quick start's defaults "
            f"({a.train} training images, {a.clip_steps} CLIP steps, {a.iters} ZegFormer steps), evaluated on "
            f"{a.val} held-out images per seed ({backend}, fp32); each seed seeds the world, CLIP and ZegFormer. "
            f"Machine: {m.get('cpu', m['processor'])}, {m['cpu_count']} cores, torch {m.get('torch', '?')}, "
            f"CPU kernels {a.kernels}.",
            "",
            spread_markdown(spread, seeds),
            f"CLIP held-out crops of unseen classes named correctly among all classes, per seed: {clip} %. "
            f"Training wall time per seed (CLIP + ZegFormer, s): {times}.",
            "",
            f"Unseen classes each seed's CLIP text tower embedded almost without one of their words, the "
            f"catch-alls that pull a seed's result down (`train/text_geometry.py`): {catch}.",
            "",
            *takeover_markdown(runs, backend),
            "One run is one draw: a difference between two runs smaller than the spread is not a measured "
            "difference (why: `zeroshot_reproducibility.md`). `python -m train.quickstart` prints its result next "
            "to this band (`train/resources/zeroshot_band.json`).",
            SECTION[1],
        ]
    )


def main_seeds(a: argparse.Namespace) -> int:
    from train.zeroshot_band import BAND_PATH, make_band, seed_spread, write_band

    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    backends = [b for b in a.backends.split(",") if b]
    runs = [run_seed(a.work, s, a, backends) for s in seeds]
    spread = seed_spread({r["seed"]: r["records"] for r in runs}, backends[0])
    section = seeds_markdown(runs, spread, a, backends[0])
    write_results("zeroshot_seeds", runs, section + "\n", out_dir=a.out_dir)
    precisions = [p for p in a.precisions.split(",") if p]
    if precisions != ["fp32"]:
        from train.zeroshot_band import tier_means

        rows = tier_means({s: cached_tiers(a.work / f"seed-{s}", a, backends, precisions) for s in seeds})
        tiers = write_results("zeroshot_tiers", rows, tiers_markdown(rows, seeds, a), out_dir=a.out_dir)
        print(tiers.with_suffix(".md").read_text())
    main_md = a.out_dir / "zeroshot.md"
    if main_md.is_file():
        main_md.write_text(with_section(main_md.read_text(encoding="utf-8"), section), encoding="utf-8")
    if not a.no_band:
        write_band(
            make_band(
                spread,
                seeds,
                vars(a),
                {**machine(), "kernels": a.kernels},
                f"python benchmarks/zeroshot.py --seeds {','.join(map(str, seeds))}",
            ),
            a.band or BAND_PATH,
        )
    print(section)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = parse_args(argv)
    from train.quickstart import pin_cpu_kernels

    a.kernels = pin_cpu_kernels(a.native_kernels)  # as the quick start: the AVX2 kernels every x86 CPU shares
    if a.seeds:
        import logging

        logging.basicConfig(level=logging.WARNING)
        return main_seeds(a)
    import logging

    from train import quickstart as qs

    logging.basicConfig(level=logging.WARNING)
    a.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = qs.step_world(a.work, a.train, a.val, 0)
    clip = qs.step_clip(a.work, data, a.clip_steps, [])
    checkpoint = qs.step_zegformer(a.work, data, a.iters, [])
    bundle = qs.step_export(a.work, checkpoint)
    backends = [b for b in a.backends.split(",") if b]
    precisions = [p for p in a.precisions.split(",") if p]
    records = qs.step_evaluate(a.work, bundle, data, backends, 0)
    if precisions != ["fp32"]:
        records = cached_tiers(a.work, a, backends, precisions)
    picture = qs.step_picture(a.work, bundle, data, records)
    from train.data.compositional import read_world

    world = read_world(data)
    meta = {
        "clip_steps": clip["steps"],
        "iters": a.iters,
        "classes": len(world.class_names),
        "unseen": len(world.unseen_pairs),
        "val": a.val,
        "zegformer_seconds": train_seconds(a.work / "run"),
        "clip_seconds": clip["seconds"],
        "clip_zero_shot": clip["zero_shot"],
        "bundle": str(bundle),
        "precisions": precisions,
        "backends": backends,
        "seconds_this_run": round(time.perf_counter() - t0, 1),
    }
    section = old_section(a.out_dir / "zeroshot.md")
    out = write_results(
        "zeroshot",
        [{**r, "meta": meta} for r in records],
        markdown(clip, records, meta) + ("\n\n" + section + "\n" if section else ""),
        out_dir=a.out_dir,
    )
    if a.docs:
        shutil.copyfile(picture, ROOT / "docs" / "zeroshot_example.png")
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
