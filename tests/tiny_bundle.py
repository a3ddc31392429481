"""The checked-in tiny bundle (``tests/data/tiny_bundle``): SDK tests without torch.

The bundle is the tiny test model of ``tests/sdk_helpers.py`` exported by ``python -m export``
(``tests/data/make_tiny_bundle.py`` rebuilds it, with torch). To stay small in the repository, its
large weight tensors are ONNX external data (``<graph>.weights.bin``) filled with deterministic
pseudo-random values (:func:`pseudo_random`, from a recipe: shape, mean, std, seed) that
:func:`materialise` writes again without torch, and the tokenizer vocabulary is copied from
``sdk/resources``. Every file is listed with its sha256 in the manifest, so the SDK verifies
the result as usual.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, List

import numpy as np

DATA = Path(__file__).resolve().parent / "data" / "tiny_bundle"
RECIPE = Path(__file__).resolve().parent / "data" / "tiny_bundle_weights.json"
TOKEN_STD = 0.02  # open_clip's token-embedding initialisation


def pseudo_random(n: int, seed: int) -> np.ndarray:
    """``n`` float64 values, uniform with mean 0 and std 1 (splitmix64 of the index: exact everywhere)."""
    with np.errstate(over="ignore"):
        x = np.arange(n, dtype=np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    u = (x >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return (u - 0.5) * 12**0.5


def tensor(entry: Dict) -> np.ndarray:
    """The float32 tensor a recipe entry describes."""
    n = int(np.prod(entry["shape"]))
    values = entry["mean"] + entry["std"] * pseudo_random(n, entry["seed"])
    return values.astype(np.float32).reshape(entry["shape"])


def token_table(vocab_size: int = 49408, width: int = 32) -> np.ndarray:
    """The tiny text tower's token-embedding table (also set in the model before export)."""
    return tensor({"shape": [vocab_size, width], "mean": 0.0, "std": TOKEN_STD, "seed": 1})


def write_weights(bundle: Path, recipe: Dict[str, List[Dict]]) -> None:
    """Write each ``<graph>.weights.bin`` of ``recipe`` into ``bundle``."""
    for file, entries in recipe.items():
        with open(bundle / file, "wb") as f:
            for entry in entries:
                f.seek(entry["offset"])
                f.write(tensor(entry).tobytes())


def materialise(dest: Path) -> Path:
    """A complete copy of the tiny bundle at ``dest`` (which must not exist)."""
    from sdk.bundle_format import TOKENIZER_VOCAB

    shutil.copytree(DATA, dest)
    write_weights(dest, json.loads(RECIPE.read_text(encoding="utf-8")))
    shutil.copyfile(Path(__file__).resolve().parents[1] / "sdk" / "resources" / TOKENIZER_VOCAB, dest / TOKENIZER_VOCAB)
    return dest
