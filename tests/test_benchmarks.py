"""The benchmark scripts run (quick mode) and write what they promise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_latency_quick(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "latency.py"),
            "--quick",
            "--out-dir",
            str(tmp_path),
            "--backends",
            "onnxruntime",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads((tmp_path / "latency_quick.json").read_text())
    assert "cpu_count" in payload["machine"]
    totals = {r["name"]: r for r in payload["records"] if r["stage"] == "total"}
    for mode in ("cropmask", "pruned", "maskpool", "proposal"):
        rec = totals[f"onnxruntime/{mode}/total/64"]
        assert rec["median_ms"] > 0 and rec["speedup_vs_baseline"] > 0
        assert 0.0 <= rec["pixel_agreement"] <= 1.0
    # the faithful mode agrees with the official-style baseline on the same image
    assert totals["onnxruntime/cropmask/total/64"]["pixel_agreement"] >= 0.999
    assert (tmp_path / "latency_quick.md").read_text().startswith("# Latency")
    assert (tmp_path / "latency_quick.png").stat().st_size > 0


def test_tuning_measures_every_batch_and_thread_setting(tmp_path, tmp_path_factory):
    from tests.sdk_helpers import shared_bundle

    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "tuning.py"),
            "--bundle",
            str(shared_bundle(tmp_path_factory)),
            "--backends",
            "onnxruntime",
            "--batches",
            "3,8",
            "--threads",
            "1",
            "--crops",
            "8",
            "--rounds",
            "2",
            "--out-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "tuning.json").read_text())["records"]
    assert {(r["batch"], r["threads"]) for r in rows} == {(b, t) for b in (3, 8, 32) for t in (1, "all")}
    default = [r for r in rows if (r["batch"], r["threads"]) == (32, "all")]
    assert len(default) == 1 and default[0]["vs_default"] == 1.0
    assert all(r["ms_per_crop"] > 0 for r in rows)


def test_calibration_sweep_equals_bundles_exported_with_each_value(tmp_path, tmp_path_factory):
    """benchmarks/zeroshot_calibration.py re-takes the argmax per calibration; each of its confusion
    matrices must equal the SDK's own maps from a copy of the bundle whose manifest holds that value
    (but for exact ties of this random model's scores, which the SDK's labels-only path breaks its own way)."""
    import numpy as np

    from benchmarks.zeroshot_calibration import confusions
    from sdk import Segmenter
    from tests.sdk_helpers import copy_bundle, tiny_bundle
    from train.data import build_dataset
    from train.data.compositional import World, generate_folder
    from train.metrics import confusion_matrix

    seed_dir = tmp_path / "seed-0"
    generate_folder(seed_dir / "data", World(), 2, 3, size=64)
    bundle = copy_bundle(tiny_bundle(tmp_path_factory), seed_dir / "bundle")
    # the SDK calibrates the bundle's training classes: give five of the world's classes their names
    trained = [n for n, s in zip(*json.loads((bundle / "manifest.json").read_text())["classes"].values()) if s]
    classes = seed_dir / "data" / "classes.txt"
    names = classes.read_text().splitlines()
    classes.write_text("\n".join(trained + names[len(trained) :]) + "\n")
    calibrations = [-0.2, -0.1, 0.0, 0.1]
    swept = confusions(seed_dir, "val", 0, calibrations)
    dataset = build_dataset("folder", str(seed_dir / "data"), "val")
    names = list(dataset.class_names)
    total = swept[0.0].sum()
    for c in calibrations:
        bundle = copy_bundle(seed_dir / "bundle", tmp_path / f"cal{c}")
        manifest = json.loads((bundle / "manifest.json").read_text())
        manifest["inference"]["gzero_calibrate"] = c
        (bundle / "manifest.json").write_text(json.dumps(manifest))
        seg = Segmenter(str(bundle), mode="cropmask", min_size=None, cache_dir=False, vocabulary=names)
        want = sum(
            confusion_matrix(np.asarray(seg(img).label_map), lab, len(names))
            for img, lab in map(dataset.load, range(3))
        )
        assert np.abs(swept[c] - want).sum() / 2 <= 0.003 * total, f"calibration {c}"
    moved = np.abs(swept[calibrations[0]] - swept[calibrations[-1]]).sum() / 2
    assert moved >= 0.05 * total  # the values chosen move many more pixels than the ties
