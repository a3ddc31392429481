"""``benchmarks/gpu_check.py``: its no-GPU path and rehearsal (what CI runs), carrying and installing
wheels, and its step bookkeeping."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(tmp_path):
    import gpu_check

    if gpu_check.no_gpu_reason() is None:
        pytest.skip("a GPU is present: run benchmarks/gpu_check.py itself (minutes)")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no CUDA GPU here ("), proc.stdout


def test_a_failing_or_hanging_step_is_recorded_and_the_rest_goes_on(tmp_path):
    import gpu_check

    written = []
    r = gpu_check.Runner(tmp_path, budget=120, after_step=lambda: written.append(len(r.steps)))
    assert not r.run("hangs", [sys.executable, "-c", "import time; time.sleep(60)"], 1)
    assert not r.run("fails", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], 30)
    assert r.slack > 20  # the time "fails" left unused goes to the next steps
    assert r.run("works", [sys.executable, "-c", "print('fine')"], 30)
    assert r.steps["fails"]["status"] == "failed" and r.steps["fails"]["returncode"] == 3
    assert "boom" in r.steps["fails"]["tail"]
    assert r.steps["hangs"]["error"].startswith("timed out after 1 s")
    assert r.steps["works"]["status"] == "ok"
    r.deadline = 0  # the budget is spent: later steps are skipped, not started
    assert not r.run("late", [sys.executable, "-c", "pass"], 30) and r.steps["late"]["status"] == "skipped"
    assert written == [1, 2, 3, 4]  # the report is rewritten after every step
    report = {
        "machine": {"gpu": "G", "cpu": "C", "cpu_count": 2},
        "steps": r.steps,
        "seconds": 3.0,
        "pipelines": {
            "torch": {
                "images": {
                    "img640": {
                        "size": [640, 640],
                        "stages_ms": {"total": 9.5, "clip": 2.0},
                        "transfers": {"h2d_bytes": 4915200, "d2h_bytes": 1638400},
                    }
                }
            }
        },
        "agreement": {"torch": {"img640": {"vs_cpu": 0.9995}}},
        "absent": {"tensorrt": "tensorrt not installed"},
    }
    md = gpu_check.markdown(report)
    assert "| fails | failed |" in md and "| late | skipped |" in md and "timed out after 1 s" in md
    assert "| torch | img640 640×640 | 9.5 | clip 2.0 | 4,915,200 / 1,638,400 | 0.9995 |" in md
    assert "tensorrt (tensorrt not installed)" in md


def test_step_budgets_fit_the_device_time_and_are_in_order_of_value():
    import gpu_check

    names = [n for n, _, _ in gpu_check.STEPS]
    assert sum(b for _, b, _ in gpu_check.STEPS) <= 360 and gpu_check.budget_problems() == []
    assert (
        names.index("kernel_tests")
        < names.index("cuda_layer")
        < names.index("gpu:torch")
        < names.index("gpu:onnxruntime")
        < names.index("gpu:tensorrt")
    )


def test_steps_keep_the_callers_pythonpath_behind_the_checkout_and_the_carried_wheels(tmp_path, monkeypatch):
    import gpu_check

    monkeypatch.setenv("PYTHONPATH", "/callers/own:/second")
    env = gpu_check.step_env(tmp_path / "carry", tmp_path / "site")
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ROOT), str(tmp_path / "site"), "/callers/own", "/second"]
    assert env["ZEGFORMER_REFERENCE"] == str((tmp_path / "carry").resolve() / "reference")


def _wheel(folder: Path, dist: str, module: str) -> Path:
    """A minimal valid py3-none-any wheel that provides ``module``."""
    path = folder / f"{dist}-1.0-py3-none-any.whl"
    info = f"{dist}-1.0.dist-info"
    files = {
        f"{module}/__init__.py": "VALUE = 42\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
        z.writestr(f"{info}/RECORD", "".join(f"{n},,\n" for n in files) + f"{info}/RECORD,,\n")
    return path


def test_install_puts_only_the_missing_modules_where_the_steps_import_them(tmp_path):
    import gpu_check

    carry = tmp_path / "carry"
    (carry / "wheels").mkdir(parents=True)
    missing = _wheel(carry / "wheels", "zg_carried_demo", "zg_carried_demo")
    present = _wheel(carry / "wheels", "json_shadow", "json")  # "json" exists here: must not be installed
    (carry / "carry.json").write_text(
        json.dumps({"wheels": {missing.name: {"import": "zg_carried_demo"}, present.name: {"import": "json"}}})
    )
    site = tmp_path / "site"
    rec = gpu_check.install(carry, site)
    assert rec["installed"] == [missing.name] and (site / "zg_carried_demo" / "__init__.py").is_file()
    assert not (site / "json").exists()
    env = gpu_check.step_env(carry, site)
    out = subprocess.run(
        [sys.executable, "-c", "import zg_carried_demo; print(zg_carried_demo.VALUE)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.strip() == "42", out.stderr[-1000:]


def test_rehearsal_prepares_a_folder_under_64_mib_and_says_what_it_would_run(tmp_path):
    """CI's stand-in for the GPU run: downloads the wheels (PyPI), copies the fixture, dry-installs them
    for Python 3.12 manylinux, checks size and budgets, lists the steps, exits 0."""
    import gpu_check

    if gpu_check.no_gpu_reason() is None:
        pytest.skip("a GPU is present: run benchmarks/gpu_check.py --from DIR --out OUT itself")
    if not (gpu_check.REFERENCE / gpu_check.REFERENCE_FILES[0]).is_file():
        pytest.skip(f"reference fixture not in {gpu_check.REFERENCE} (set ZEGFORMER_REFERENCE)")
    carry = tmp_path / "gpu_carry"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--rehearse", str(carry)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    if proc.returncode == 2 and "cannot download the wheels" in proc.stdout:
        pytest.skip("PyPI not reachable: " + proc.stdout.strip()[-300:])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert gpu_check.folder_bytes(carry) < 64 * 2**20 and gpu_check.check_folder(carry) == []
    for name, _, _ in gpu_check.STEPS:
        assert f"  {name} " in proc.stdout
    manifest = json.loads((carry / "carry.json").read_text())
    assert {w["import"] for w in manifest["wheels"].values()} == set(gpu_check.WHEELS.values())
    assert all(
        n.endswith(("py3-none-any.whl", "manylinux_2_28_x86_64.whl", "manylinux_2_17_x86_64.whl"))
        or "cp312" in n
        or "abi3" in n
        for n in manifest["wheels"]
    ), list(manifest["wheels"])
    (carry / "reference" / gpu_check.REFERENCE_FILES[1]).write_text("{}")  # a changed file is caught
    assert any("changed" in p for p in gpu_check.check_folder(carry))
