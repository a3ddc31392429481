"""Process state OpenVINO's CPU plugin (2026.4) read or broke, in fresh processes (``sdk/backends/ovguard.py``).

* The quick start pins oneDNN to AVX2 (``ONEDNN_MAX_CPU_ISA``) for torch's training kernels, and the plugin
  then compiled the quick start's proposal network into code that segfaulted on an AVX-512 CPU.
* Two backends released in creation order left the thread's alternate signal stack on freed memory: the
  next signal with a handler (``SIGCHLD`` from a DataLoader worker, in CI) killed the process or wrote
  into live data.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.sdk_helpers import tiny_bundle
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


RELEASE_THEN_SIGNAL = """
import faulthandler, gc, os, signal, sys
import numpy as np
from sdk import Segmenter

faulthandler.enable()  # as pytest does: the thread has an alternate signal stack of its own
image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
first = Segmenter(sys.argv[1], backend="openvino", cache_dir=False)
first.segment(image, ["cat", "dog"])  # compiles every graph
second = Segmenter(sys.argv[1], backend="openvino", cache_dir=False)
second.segment(image, ["cat", "dog"])
del first  # released in creation order: the plugin puts back the stack it found, the first one's
gc.collect()
del second
gc.collect()
signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler runs on the alternate stack
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
print("survived")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the guard reads Linux's stack_t (a no-op elsewhere)")
def test_released_backends_leave_a_usable_signal_stack(tmp_path_factory):
    bundle = tiny_bundle(tmp_path_factory)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    run = subprocess.run(
        [sys.executable, "-c", RELEASE_THEN_SIGNAL, str(bundle)], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]  # -11 (SIGSEGV) at the first SIGCHLD before the guard
    assert run.stdout.strip() == "survived"
