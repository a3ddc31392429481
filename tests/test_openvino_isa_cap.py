"""OpenVINO inside the quick start: its process pins oneDNN to AVX2 (``ONEDNN_MAX_CPU_ISA``) for
torch's training kernels, and OpenVINO's CPU plugin (2026.4) then compiled the quick start's proposal
network into code that segfaulted on an AVX-512 CPU. The backend now loads and compiles without the cap."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_train_quickstart import SMALL  # the tiny CLIP of the quick-start test

pytest.importorskip("openvino", reason="OpenVINO is optional: pip install 'zegformer-sdk[openvino]'")

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not torch.cpu._is_avx2_supported(), reason="the pin is for x86 CPUs with AVX2")
def test_quickstart_evaluates_on_openvino_under_its_kernel_pin(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}  # the quick start sets it itself
    args = ["--out", str(tmp_path / "qs"), "--train", "6", "--val", "3", "--clip-steps", "3", "--iters", "5"]
    cmd = [sys.executable, "-m", "train.quickstart", *args, "--backends", "onnxruntime,openvino", *SMALL]
    run = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]  # -11 (SIGSEGV) in OpenVINO's evaluation before the fix
    records = json.loads((tmp_path / "qs" / "gzss.json").read_text())["records"]
    ov = [r for r in records if r["backend"] == "openvino"]
    assert len(ov) == 4 and all(r["agreement"] > 0.99 for r in ov if r["mode"] == "cropmask")
