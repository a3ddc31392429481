"""``benchmarks/gpu_check.py``: its no-GPU path (what CI runs) and its step bookkeeping."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(tmp_path):
    import gpu_check

    if gpu_check.no_gpu_reason() is None:
        pytest.skip("a GPU is present: run benchmarks/gpu_check.py itself (minutes)")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no CUDA GPU here ("), proc.stdout


def test_a_failing_or_hanging_step_is_recorded_and_the_rest_goes_on(tmp_path):
    import gpu_check

    r = gpu_check.Runner(tmp_path, budget=120)
    assert not r.run("fails", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], 30)
    assert not r.run("hangs", [sys.executable, "-c", "import time; time.sleep(60)"], 1)
    assert r.run("works", [sys.executable, "-c", "print('fine')"], 30)
    assert r.steps["fails"]["status"] == "failed" and r.steps["fails"]["returncode"] == 3
    assert "boom" in r.steps["fails"]["tail"]
    assert r.steps["hangs"]["error"].startswith("timed out after 1 s")
    assert r.steps["works"]["status"] == "ok"
    r.deadline = 0  # the budget is spent: later steps are skipped, not started
    assert not r.run("late", [sys.executable, "-c", "pass"], 30) and r.steps["late"]["status"] == "skipped"
    report = {"machine": {"gpu": "G", "cpu": "C", "cpu_count": 2}, "steps": r.steps, "seconds": 3.0,
              "pipelines": {"torch": {"images": {"img640": {"size": [640, 640], "stages_ms": {"total": 9.5, "clip": 2.0},
                                                            "transfers": {"h2d_bytes": 4915200, "d2h_bytes": 1638400}}}}},
              "agreement": {"torch": {"img640": {"vs_cpu": 0.9995}}}, "absent": {"tensorrt": "tensorrt not installed"}}
    md = gpu_check.markdown(report)
    assert "| fails | failed |" in md and "| late | skipped |" in md and "timed out after 1 s" in md
    assert "| torch | img640 640×640 | 9.5 | clip 2.0 | 4,915,200 / 1,638,400 | 0.9995 |" in md
    assert "tensorrt (tensorrt not installed)" in md
