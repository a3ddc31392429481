"""What the GPU machine lacks, carried along (``benchmarks/gpu_check.py --prepare`` / ``--from``).

The GPU machine has Python 3.12, torch (CUDA 13), CuPy, cuda-bindings, CPU onnxruntime, onnx, pybind11
and nvcc, but no internet: the wheels below and the reference fixture travel in one folder of at
most 64 MiB, and are installed there only where the module is missing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = Path(os.environ.get("ZEGFORMER_REFERENCE", ROOT.parent / "shared" / "reference"))
CARRY_LIMIT = 64 * 2**20  # what the device tool carries along with the checkout
BUDGET_LIMIT = 360.0  # seconds, all steps together (a device command may run 10 minutes)
PYTHON = "3.12"  # the GPU machine's Python
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
# what export/sdk/tests need beyond torch, numpy, onnx, onnxruntime, CuPy and cuda-bindings (found by
# blocking imports: open_clip imports torchvision, PIL, tqdm, regex, ftfy, wcwidth; huggingface_hub,
# timm, safetensors and yaml are optional to it); requirement → the module that shows it is installed
WHEELS = {
    "open_clip_torch": "open_clip",
    "ftfy": "ftfy",
    "wcwidth": "wcwidth",
    "regex": "regex",
    "tqdm": "tqdm",
    "pillow": "PIL",
    "torchvision==0.26.*": "torchvision",  # the release paired with torch 2.11 (its CUDA 13 wheel)
    "pytest": "pytest",
    "iniconfig": "iniconfig",
    "pluggy": "pluggy",
    "pygments": "pygments",
    "packaging": "packaging",
    "setuptools": "setuptools",
}  # setuptools: setup.py build_ext
REFERENCE_FILES = (
    "reference_r101_vit16_cocostuff.npz",
    "official_state_dict_shapes.json",
    "cocostuff_all_classnames.json",
)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pip_platform_args() -> List[str]:
    return [
        "--python-version",
        PYTHON,
        "--implementation",
        "cp",
        "--abi",
        "cp" + PYTHON.replace(".", ""),
        *[a for p in PLATFORMS for a in ("--platform", p)],
        "--only-binary=:all:",
    ]


def wheel_import_name(wheel: str) -> str:
    """The import name recorded for a downloaded wheel file (matched on its distribution name)."""
    dist = wheel.split("-")[0].lower().replace("_", "-")
    for req, module in WHEELS.items():
        if req.split("=")[0].lower().replace("_", "-") == dist:
            return module
    raise KeyError(wheel)


def prepare(folder: Path, reference: Path = REFERENCE) -> Dict[str, Any]:
    """Download the wheels and copy the fixture into ``folder`` (replacing what is there); returns the
    manifest written to ``folder/carry.json``. Raises ``RuntimeError`` saying what failed."""
    missing = [n for n in REFERENCE_FILES if not (reference / n).is_file()]
    if missing:
        raise RuntimeError(f"reference fixture files {missing} not found in {reference} (set ZEGFORMER_REFERENCE)")
    folder = Path(folder)
    for sub in ("wheels", "reference"):
        shutil.rmtree(folder / sub, ignore_errors=True)
        (folder / sub).mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "-q",
        *pip_platform_args(),
        "-d",
        str(folder / "wheels"),
        *WHEELS,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        tail = " ".join((proc.stderr or proc.stdout).split())[-300:]
        raise RuntimeError(f"cannot download the wheels (pip download exit {proc.returncode}): {tail}")
    for name in REFERENCE_FILES:
        shutil.copy2(reference / name, folder / "reference" / name)
    wheels = {
        p.name: {"import": wheel_import_name(p.name), "sha256": sha256(p), "bytes": p.stat().st_size}
        for p in sorted((folder / "wheels").glob("*.whl"))
    }
    manifest = {
        "python": PYTHON,
        "platforms": list(PLATFORMS),
        "wheels": wheels,
        "reference": {n: sha256(folder / "reference" / n) for n in REFERENCE_FILES},
    }
    (folder / "carry.json").write_text(json.dumps(manifest, indent=1))
    manifest["bytes"] = folder_bytes(folder)
    return manifest


def check_folder(folder: Path) -> List[str]:
    """What is wrong with a prepared folder (missing or changed files, over the carry limit); ``[]`` if none."""
    folder = Path(folder)
    if not (folder / "carry.json").is_file():
        return [f"{folder}/carry.json missing: run --prepare {folder}"]
    manifest = json.loads((folder / "carry.json").read_text())
    problems = []
    for kind, files in (
        ("wheels", {n: w["sha256"] for n, w in manifest["wheels"].items()}),
        ("reference", manifest["reference"]),
    ):
        for name, digest in files.items():
            path = folder / kind / name
            if not path.is_file() or sha256(path) != digest:
                problems.append(f"{kind}/{name} missing or changed")
    got = {w["import"] for w in manifest["wheels"].values()}
    problems += [f"no wheel for {m}" for m in WHEELS.values() if m not in got]
    size = folder_bytes(folder)
    if size > CARRY_LIMIT:
        problems.append(f"{size / 2**20:.1f} MiB is over the {CARRY_LIMIT / 2**20:.0f} MiB that can be carried")
    return problems


def pip_install_target(wheels: List[str], target: Path, *extra: str, timeout: float = 300):
    """``pip install --no-index --no-deps --target`` of carried wheels (``extra``: e.g. platform tags)."""
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "-q", "--disable-pip-version-check"]
    return subprocess.run(
        [*cmd, *extra, "--target", str(target), *wheels], capture_output=True, text=True, timeout=timeout
    )


def install(folder: Path, site: Path) -> Dict[str, Any]:
    """Install the carried wheels whose module is missing into ``site`` (pip, else unzip: a wheel is a zip)."""
    manifest = json.loads((Path(folder) / "carry.json").read_text())
    need = [n for n, w in manifest["wheels"].items() if importlib.util.find_spec(w["import"]) is None]
    site.mkdir(parents=True, exist_ok=True)
    how = "nothing missing"
    if need:
        paths = [str(Path(folder) / "wheels" / n) for n in need]
        proc = pip_install_target(paths, site)
        how = "pip install --target"
        if proc.returncode != 0:  # no pip in this Python: unpack (purelib/platlib are the wheel's root)
            for p in paths:
                with zipfile.ZipFile(p) as z:
                    z.extractall(site)
            how = f"unzipped (pip failed: {' '.join(proc.stderr.split())[-160:]})"
    return {"status": "ok", "installed": need, "how": how, "site": str(site)}
