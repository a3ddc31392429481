"""Shared fixtures: the official reference directory (``../shared/reference``) and tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REFERENCE_DIR = Path(
    os.environ.get("ZEGFORMER_REFERENCE", Path(__file__).resolve().parents[2] / "shared" / "reference")
)


def require_reference() -> Path:
    """The reference directory; a skip where it is absent, a failure under CI."""
    if not (REFERENCE_DIR / "reference_r101_vit16_cocostuff.npz").is_file():
        msg = f"reference fixture not found in {REFERENCE_DIR}"
        if os.environ.get("CI") == "true":
            pytest.fail(msg + " (CI must have ../shared/reference)")
        pytest.skip(msg)
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return require_reference()


@pytest.fixture(scope="session")
def fixture_checkpoint(tmp_path_factory, reference_dir) -> Path:
    """The reference fixture's weights, regenerated, saved in the official format and imported.

    Exercises the whole import path: recipe → official ``{"model": state_dict}`` file →
    ``train.convert_official.convert`` → our checkpoint.
    """
    import torch

    from tests.recipe import official_state_dict
    from train.convert_official import convert

    root = tmp_path_factory.mktemp("fixture_weights")
    official = root / "official_r101_vit16.pth"
    torch.save({"model": official_state_dict(reference_dir)}, official)
    ours = root / "zegformer_r101_vit16.pth"
    convert(official, ours, dataset="coco-stuff")
    official.unlink()  # 840 MB; only the imported checkpoint is needed from here on
    return ours


@pytest.fixture(scope="session")
def fixture_arrays(reference_dir):
    import numpy as np

    return dict(np.load(reference_dir / "reference_r101_vit16_cocostuff.npz"))


FIXTURE_TRACE = (320, 320)  # export trace size; the fixture runs at 256×320, proving dynamic sizes


@pytest.fixture(scope="session")
def fixture_bundle(fixture_checkpoint, tmp_path_factory) -> Path:
    """The imported fixture weights exported once as a bundle (graphs + a one-class vocabulary)."""
    from export.bundle import ExportOptions, export_bundle

    root = tmp_path_factory.mktemp("fixture_bundle")
    classes = root / "one_class.txt"  # the conformance tests bring their own text embeddings
    classes.write_text("sports ball\n")
    export_bundle(
        fixture_checkpoint,
        root / "bundle",
        ExportOptions(vocabs=[str(classes)], image_size=FIXTURE_TRACE, progress=False),
    )
    return root / "bundle"


@pytest.fixture(autouse=True)
def _restore_sigchld():
    """Put back this process's SIGCHLD handler after each test.

    torch's DataLoader with worker processes installs one that inspects its workers; a later test's
    subprocess must not run it. (The crashes once blamed on it came from OpenVINO leaving the thread's
    alternate signal stack on freed memory, which any handled signal hit: ``sdk/backends/ovguard.py``.)
    """
    import signal

    before = signal.getsignal(signal.SIGCHLD)
    yield
    signal.signal(signal.SIGCHLD, before)
