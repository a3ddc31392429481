"""Shared fixtures: the official reference directory (``../shared/reference``) and tiny models."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REFERENCE_DIR = Path(os.environ.get("ZEGFORMER_REFERENCE",
                                    Path(__file__).resolve().parents[2] / "shared" / "reference"))


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
