"""Prompt ensembles of class names, as the official ``zeroshot_classifier`` (numpy, torch-free).

For each class every template is formatted with the name (a name ``"a, b"`` is split into
synonyms, giving a template-major list); the prompt embeddings are L2-normalised, averaged per
class, and the mean is L2-normalised again. The exporter (through ``train.model.text``) and the
SDK's run-time vocabularies both expand prompts here.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

from .constants import SYNONYM_SEPARATOR
from .errors import VocabularyError


def synonyms(name: str) -> List[str]:
    """``"a, b"`` → ``["a", "b"]``; a name without the separator is its own only synonym."""
    return name.split(SYNONYM_SEPARATOR) if SYNONYM_SEPARATOR in name else [name]


def expand_prompts(names: Sequence[str], templates: Sequence[str]) -> Tuple[List[str], List[int]]:
    """The template-major prompt list and, per prompt, the index of its class."""
    if len(names) == 0:
        raise VocabularyError("the vocabulary is empty: give at least one class name")
    prompts: List[str] = []
    owner: List[int] = []
    for k, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise VocabularyError(f"class name #{k} is empty or not a string: {name!r}")
        texts = [t.format(s) for t in templates for s in synonyms(name)]
        prompts += texts
        owner += [k] * len(texts)
    return prompts, owner


def pool_class_embeddings(raw: np.ndarray, owner: Sequence[int], num_classes: int) -> np.ndarray:
    """Normalise each prompt embedding, average per class, normalise the mean → ``[K,D]`` float32."""
    raw = raw.astype(np.float32, copy=False)
    raw = raw / np.linalg.norm(raw, axis=-1, keepdims=True)
    owner_arr = np.asarray(owner)
    out = np.empty((num_classes, raw.shape[1]), np.float32)
    for k in range(num_classes):
        mean = raw[owner_arr == k].mean(axis=0)
        out[k] = mean / np.linalg.norm(mean)
    return out
