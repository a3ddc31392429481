"""Every shell command in README.md, run exactly as written (parsed from the README at test time).

The commands run in order in one scratch folder where the user's files are small stand-ins: a
tiny checkpoint as ``r101.pth``, ``my_classes.txt``, ``photos/``; ``configs/`` and ``train/`` are
links to this repository's. Commands that need what this machine cannot have (a GPU, official
weights, real datasets, network) are listed in ``SKIP`` with the reason, and are reported as
skipped. Commands that run for minutes (``LONG``: the quick start, the 1000-step CPU training) run
only with ``ZEGFORMER_README_LONG=1`` (``python tests/test_readme_commands.py`` sets it and runs
them all). A command added to the README later runs by default: it must work, or be listed here.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SKIP = [  # (regex on the command, reason)
    (r"^pip install", "installs packages (CI runs the set-up commands itself: .ci/run)"),
    (r"^python -m pytest", "the test suite itself"),
    (r"convert_official", "needs an official ZegFormer checkpoint and the OpenAI CLIP weights (downloads)"),
    (r"coco-stuff-r101\.yaml|/data/coco-stuff", "needs the COCO-Stuff dataset"),
    (r"^torchrun", "needs several GPUs"),
    (r"--tensorrt", "needs an NVIDIA GPU with TensorRT"),
    (r"-m sdk demo", "starts a web server until stopped (tests/test_demo.py drives it in Chromium)"),
    (r"-m sdk serve|\.venv-serve", "makes a venv / starts a server until stopped (tests/test_serve.py does both)"),
    (r"--ray auto", "needs an existing Ray cluster (tests/test_label.py runs label on a local Ray)"),
    (r"--precision bf16", "OpenVINO bf16 on the exported bundle: tests/test_precision.py runs every tier"),
]
LONG = [r"train\.quickstart", r"train/train\.py --config configs/synthetic-tiny\.yaml"]
RUN_LONG = os.environ.get("ZEGFORMER_README_LONG") == "1"


def readme_commands(text: str) -> List[str]:
    """Commands of the ```bash blocks: continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(shlex.join(words))
    return commands


def classify(command: str) -> Tuple[str, str]:
    for pattern, reason in SKIP:
        if re.search(pattern, command):
            return "skip", reason
    if any(re.search(p, command) for p in LONG) and not RUN_LONG:
        return "skip", "runs for minutes: ZEGFORMER_README_LONG=1 (or python tests/test_readme_commands.py)"
    return "run", ""


COMMANDS = readme_commands(README.read_text(encoding="utf-8"))


def _params():
    out = []
    for i, cmd in enumerate(COMMANDS):
        kind, reason = classify(cmd)
        marks = [pytest.mark.skip(reason=reason)] if kind == "skip" else []
        out.append(pytest.param(cmd, id=f"{i:02d}-{cmd[:60]}", marks=marks))
    return out


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """The scratch folder with the user's files as small stand-ins."""
    pytest.importorskip("torch")
    from PIL import Image

    from tests.sdk_helpers import block_image, tiny_checkpoint

    root = tmp_path_factory.mktemp("readme")
    tiny_checkpoint(root / "r101.pth")
    (root / "my_classes.txt").write_text("cat\nsofa, couch\n# a comment\nwindow\n", encoding="utf-8")
    (root / "photos").mkdir()
    for i in range(2):
        Image.fromarray(block_image(72, 96, seed=i)).save(root / "photos" / f"p{i}.jpg")
    Image.fromarray(block_image(60, 80, seed=7)).save(root / "street.jpg")
    for name in ("configs", "train", "benchmarks"):
        os.symlink(REPO / name, root / name)
    return root


def test_readme_has_commands():
    assert any(c.startswith("python -m sdk segment") for c in COMMANDS), COMMANDS
    assert all(classify(c)[0] != "skip" or classify(c)[1] for c in COMMANDS)


@pytest.mark.parametrize("command", _params())
def test_readme_command(command, sandbox):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", ZEGFORMER_CACHE=str(sandbox / "cache"))
    argv = shlex.split(command)
    if argv[0] == "python":
        argv[0] = sys.executable
    inputs = {p: p.read_bytes() for p in (sandbox / "photos").iterdir()}
    proc = subprocess.run(argv, cwd=sandbox, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, f"`{command}` failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    assert all(p.read_bytes() == data for p, data in inputs.items()), "an input image was modified"
    if argv[1:4] == ["-m", "sdk", "segment"]:
        out = sandbox / argv[argv.index("--out") + 1]
        assert sorted(p.name for p in out.iterdir()) == sorted(
            f"p{i}{s}" for i in range(2) for s in (".png", "_overlay.png", ".json"))
        from PIL import Image

        labels = np.asarray(Image.open(out / "p0.png"))
        assert labels.shape == (72, 96) and labels.max() < 3
    if argv[1:3] == ["-m", "export"] and "--force" not in argv:
        out = sandbox / argv[argv.index("--out") + 1]
        assert {"coco-stuff", "voc", "my_classes"} <= {p.stem for p in (out / "vocab").iterdir()}


PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


@pytest.mark.parametrize("code", [
    pytest.param(code, id=f"python-{i}", marks=[] if "bundles/r101" in code else [pytest.mark.skip(
        reason="names a bundle the README's commands do not make here")]) for i, code in enumerate(PYTHON_BLOCKS)])
def test_readme_python(code, sandbox):
    """Python snippets on the bundle the commands above exported (run after them)."""
    if not (sandbox / "bundles/r101/manifest.json").is_file():
        pytest.skip("the README's export command did not run in this session")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", ZEGFORMER_CACHE=str(sandbox / "cache"))
    proc = subprocess.run([sys.executable, "-c", code], cwd=sandbox, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


if __name__ == "__main__":  # every README command, the long ones included
    os.environ["ZEGFORMER_README_LONG"] = "1"
    sys.exit(pytest.main([__file__, "-v", "-rs"]))
