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
