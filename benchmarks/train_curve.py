"""Training curve of the tiny model on synthetic data: mIoU against iterations and wall time.

    python benchmarks/train_curve.py [--config configs/synthetic-tiny.yaml] [--eval-every 100] [KEY=VALUE ...]

Makes a fresh synthetic dataset, runs ``train/train.py`` with periodic evaluation (seen-only and
generalized zero-shot protocols), and writes ``benchmarks/results/train_curve.json`` and ``.md``
with the machine, the load average during the run (other processes slow a 2-core CPU down), and
per evaluation: step, wall time (training only and in all), and the metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def sample_load(stop: threading.Event, samples: list, every: float = 5.0) -> None:
    while not stop.wait(every):
        samples.append(os.getloadavg()[0])


def machine() -> dict:
    import torch

    from benchmarks.common import machine as describe

    return {**describe(), "torch_threads": torch.get_num_threads()}


def markdown(result: dict) -> str:
    overrides = f"with `{' '.join(result['overrides'])}`" if result["overrides"] else "as shipped"
    lines = [
        "# Training curve: tiny ZegFormer on synthetic data (CPU)",
        "",
        f"Config `{result['config']}` {overrides}; "
        f"{result['machine']['cpu_count']} CPU cores, torch {result['machine']['torch']}; "
        f"load average during the run: mean {result['load_avg_mean']:.2f}, max {result['load_avg_max']:.2f} "
        "(values above the core count mean other processes competed for the CPU).",
        "",
        f"Total wall time {result['wall_s']:.0f} s. Seen-class mIoU = the *seen* protocol "
        "(vocabulary = seen classes, unseen pixels ignored; the official training-time test). GZSS = all "
        "classes, official evaluator (unseen classes cannot work: the tiny CLIP is random).",
        "",
        "| step | train time (s) | wall time (s) | seen-class mIoU | GZSS seen mIoU | GZSS unseen mIoU | GZSS hIoU |",
        "|---|---|---|---|---|---|---|",
    ]

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}"

    for p in result["curve"]:
        lines.append(
            f"| {p['step']} | {p['train_time_s']:.0f} | {p['time_s']:.0f} | {pct(p['seen_protocol_mIoU'])} "
            f"| {pct(p['gzss_seen_mIoU'])} | {pct(p['gzss_unseen_mIoU'])} | {pct(p['gzss_hIoU'])} |"
        )
    first = result.get("first_reaching_0.7")
    lines += [
        "",
        "First evaluation with seen-class mIoU ≥ 70 %: "
        + (
            f"step {first['step']}, {first['train_time_s']:.0f} s of training ({first['time_s']:.0f} s wall)."
            if first
            else "not reached."
        ),
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/synthetic-tiny.yaml")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "train_curve")
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    from train.data.synthetic import generate

    work = a.work or Path(tempfile.mkdtemp(prefix="train_curve_"))
    data = generate(work / "data", seed=0)
    run = work / "run"
    overrides = [
        f"data.root={data}",
        f"train.output_dir={run}",
        f"train.eval_period={a.eval_every}",
        "train.progress=false",
        *a.overrides,
    ]
    stop, loads = threading.Event(), []
    threading.Thread(target=sample_load, args=(stop, loads), daemon=True).start()
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, str(REPO / "train" / "train.py"), "--config", a.config, *overrides], cwd=REPO, check=True
    )
    wall = time.perf_counter() - t0
    stop.set()
    curve = []
    for line in open(run / "eval_log.jsonl"):
        r = json.loads(line)
        curve.append(
            {
                "step": r["step"],
                "time_s": r["time_s"],
                "train_time_s": r["train_time_s"],
                "seen_protocol_mIoU": r["seen"]["official"]["mIoU"],
                "gzss_seen_mIoU": r["gzss"]["official"]["seen_mIoU"],
                "gzss_unseen_mIoU": r["gzss"]["official"]["unseen_mIoU"],
                "gzss_hIoU": r["gzss"]["official"]["hIoU"],
                "gzss_nan_safe": r["gzss"]["nan_safe"],
            }
        )
    reached = [p for p in curve if (p["seen_protocol_mIoU"] or 0) >= 0.7]
    result = {
        "name": "train_curve/synthetic-tiny/cpu",
        "config": a.config,
        "overrides": a.overrides,
        "machine": machine(),
        "wall_s": wall,
        "load_avg_mean": sum(loads) / max(len(loads), 1),
        "load_avg_max": max(loads, default=0.0),
        "curve": curve,
        "first_reaching_0.7": reached[0] if reached else None,
        "final": curve[-1] if curve else None,
        "train_log": [json.loads(line) for line in open(run / "train_log.jsonl")],
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    a.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
