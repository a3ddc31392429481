"""Every shell command in README.md, sdk/README.md and docs/*.md, run exactly as written (parsed at test time).

The commands run in order (the READMEs first, then the docs pages by name) in one scratch folder where
the user's files are small stand-ins: a tiny checkpoint as ``r101.pth``, ``my_classes.txt``,
``photos/``, and — unless the quick start itself runs (``LONG``) — a stand-in of what
``python -m train.quickstart`` leaves in ``quickstart/`` (a tiny exported bundle, two images of the
quick-start world and its ``classes.txt``); ``configs/`` and ``train/`` are links to this
repository's. Commands that need what this machine cannot have (a GPU, official weights, real
datasets, network) are listed in ``SKIP`` with the reason, and are reported as skipped. Commands of
an optional extra (``REQUIRES``) skip with the install hint when the extra is absent — except under
``CI=true``, which installs every extra, where its absence fails. Commands that run for minutes
(``LONG``: the quick start, the 1000-step CPU training) run only with ``ZEGFORMER_README_LONG=1``
(``python tests/test_readme_commands.py`` sets it and runs them all). A command added to a page
later runs by default: it must work, or be listed here.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", REPO / "sdk" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SKIP = [  # (regex on the command, reason)
    (r"^pip install|^python -m venv|^\. \S+/activate|^source ", "sets up an environment (CI runs these: .ci/run)"),
    (r"^python -m pytest|^ruff |^mypy |^duplicates ", "the checks themselves (CI runs them: .ci/run)"),
    (r"convert_official", "needs an official ZegFormer checkpoint and the OpenAI CLIP weights (downloads)"),
    (r"coco-stuff-r101\.yaml|/data/coco-stuff", "needs the COCO-Stuff dataset"),
    (r"^torchrun", "needs several GPUs"),
    (r"--tensorrt|--backend tensorrt|--device cuda", "needs an NVIDIA GPU with TensorRT"),
    (r"-m sdk demo", "starts a web server until stopped (tests/test_demo.py drives it in Chromium)"),
    (r"-m sdk serve|\.venv-serve", "makes a venv / starts a server until stopped (tests/test_serve.py does both)"),
    (r"--ray auto", "needs an existing Ray cluster (tests/test_label.py runs label on a local Ray)"),
    (r"--precision bf16", "OpenVINO bf16 on the exported bundle: tests/test_precision.py runs every tier"),
    (r"gpu_check\.py --(prepare|rehearse)", "downloads wheels (internet); tests/test_gpu_check.py runs the rehearsal"),
    (r"gpu_check\.py --from|\$OUT", "runs on the lent GPU machine (docs/gpu.md)"),
    (
        r"^python benchmarks/(latency|kernels|zeroshot|scale)\.py",
        "a measurement of minutes to hours (benchmarks/results/ records its output)",
    ),
]
# (regex on the command, importable modules, install hint): an optional extra the command needs
REQUIRES = [
    (r"-m sdk label", ("ray", "pyarrow"), "pip install 'ray[data]>=2.40' 'pyarrow>=12' (the [ray] extra)"),
    (
        r"-m sdk relabel feats/",
        ("ray", "pyarrow"),  # reads what the README's `sdk label --save-features` wrote
        "pip install 'ray[data]>=2.40' 'pyarrow>=12' (the [ray] extra: `sdk label` saves the features it reads)",
    ),
    (r"--backend openvino", ("openvino",), "pip install 'openvino>=2024.0' (the [openvino] extra)"),
    (r"--label-png coco|supervision", ("pycocotools",), "pip install 'pycocotools>=2.0.7' (the [coco] extra)"),
]
LONG = [r"train\.quickstart", r"train/train\.py --config configs/synthetic-tiny\.yaml"]
RUN_LONG = os.environ.get("ZEGFORMER_README_LONG") == "1"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def page_commands(text: str) -> List[str]:
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


def missing_extra(command: str) -> Optional[str]:
    """The install hint of an optional extra the command needs and this environment lacks."""
    for pattern, modules, hint in REQUIRES:
        if re.search(pattern, command) and not all(importlib.util.find_spec(m) for m in modules):
            return f"{' / '.join(modules)} not installed: {hint}"
    return None


COMMANDS = [(page, cmd) for page in PAGES for cmd in page_commands(page.read_text(encoding="utf-8"))]


def _params():
    out = []
    for i, (page, cmd) in enumerate(COMMANDS):
        kind, reason = classify(cmd)
        marks = [pytest.mark.skip(reason=reason)] if kind == "skip" else []
        out.append(pytest.param(cmd, id=f"{i:02d}-{page.relative_to(REPO).as_posix()}-{cmd[:60]}", marks=marks))
    return out


def _quickstart_standin(root: Path) -> None:
    """What ``python -m train.quickstart`` leaves behind, small: a bundle, world images, classes.txt."""
    from tests.sdk_helpers import export_bundle, tiny_checkpoint
    from train.data.compositional import World, generate_folder

    qs = root / "quickstart"
    generate_folder(qs / "data", World(), num_train=0, num_val=2, size=96, seed=0)
    export_bundle(tiny_checkpoint(qs / "tiny.pth"), qs / "bundle")


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
    if not RUN_LONG:
        _quickstart_standin(root)
    return root


def test_pages_have_commands():
    assert any(c.startswith("python -m sdk segment") for _, c in COMMANDS), COMMANDS
    assert all(classify(c)[0] != "skip" or classify(c)[1] for _, c in COMMANDS)
    assert {p.name for p, _ in COMMANDS} >= {"README.md"}


def test_missing_extra_names_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "ray" else object())
    hint = missing_extra("python -m sdk label photos/ --bundle b --out labels/")
    assert hint and "ray" in hint and "pip install" in hint
    assert missing_extra("python -m sdk segment photos/ --bundle b --out r/") is None


def _images(sandbox: Path, argv: List[str]) -> List[Path]:
    """The images a ``segment`` command reads: its positional arguments, folders expanded."""
    images = []
    for arg in argv[4:]:
        if arg.startswith("-"):
            break
        path = sandbox / arg
        images += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else [path]
    return images


def _vocab_size(argv: List[str], sandbox: Path) -> int:
    vocab = argv[argv.index("--vocab") + 1] if "--vocab" in argv else None
    if vocab is None:
        return 256
    if (sandbox / vocab).is_file():
        return sum(1 for line in (sandbox / vocab).read_text().splitlines() if line.strip() and line[0] != "#")
    if ";" in vocab:
        return len([n for n in vocab.split(";") if n.strip()])
    return 256  # a built-in vocabulary's name (or one class name): not counted here


@pytest.mark.parametrize("command", _params())
def test_page_command(command, sandbox):
    hint = missing_extra(command)
    if hint:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{hint} (CI installs every extra: .ci/run)")
        pytest.skip(hint)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", ZEGFORMER_CACHE=str(sandbox / "cache"))
    argv = shlex.split(command)
    if argv[0] == "python":
        argv[0] = sys.executable
    inputs = {
        p: p.read_bytes()
        for p in sandbox.glob("**/*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.is_symlink() and "cache" not in p.parts
    }
    proc = subprocess.run(argv, cwd=sandbox, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, f"`{command}` failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    assert all(p.read_bytes() == data for p, data in inputs.items() if p.exists()), "an input image was modified"
    if argv[1:4] == ["-m", "sdk", "segment"] and "--out" in argv:
        from PIL import Image

        out = sandbox / argv[argv.index("--out") + 1]
        written = {p.name for p in out.iterdir()}
        for image in _images(sandbox, argv):
            assert {f"{image.stem}{s}" for s in (".png", "_overlay.png", ".json")} <= written, (image, written)
            labels = np.asarray(Image.open(out / f"{image.stem}.png"))
            assert labels.shape == np.asarray(Image.open(image)).shape[:2]
            assert labels.max() < _vocab_size(argv, sandbox)
    if argv[1:3] == ["-m", "export"] and "--force" not in argv:
        out = sandbox / argv[argv.index("--out") + 1]
        assert {"coco-stuff", "voc", "my_classes"} <= {p.stem for p in (out / "vocab").iterdir()}


PYTHON_BLOCKS = [code for page in PAGES for code in re.findall(r"```python\n(.*?)```", page.read_text("utf-8"), re.S)]
RUNNABLE = ("bundles/r101", "quickstart/bundle")


@pytest.mark.parametrize(
    "code",
    [
        pytest.param(
            code,
            id=f"python-{i}",
            marks=[]
            if any(b in code for b in RUNNABLE)
            else [pytest.mark.skip(reason="names a bundle the pages' commands do not make here")],
        )
        for i, code in enumerate(PYTHON_BLOCKS)
    ],
)
def test_page_python(code, sandbox):
    """Python snippets on the bundles the commands above made (run after them)."""
    for bundle in RUNNABLE:
        if bundle in code and not (sandbox / bundle / "manifest.json").is_file():
            pytest.skip(f"{bundle} was not made in this session (the command that makes it did not run)")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", ZEGFORMER_CACHE=str(sandbox / "cache"))
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=sandbox, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


if __name__ == "__main__":  # every command, the long ones included
    os.environ["ZEGFORMER_README_LONG"] = "1"
    sys.exit(pytest.main([__file__, "-v", "-rs"]))
