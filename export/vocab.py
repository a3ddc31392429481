"""Vocabularies of the bundle: which class lists, read from where, embedded with which prompts.

A ``--vocab`` value is an existing class file (``sdk.classnames``: one class per line, ``a, b`` =
synonyms, blank lines and ``#`` comments ignored, or JSON; named after the file's stem) or a
built-in name: ``coco-stuff`` (171), ``voc`` (20), ``ade-847`` (847), ``train`` (the checkpoint's
seen classes) or the name of the checkpoint's own class list (its dataset, else ``all``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from sdk import classnames
from sdk.errors import VocabularyError
from train.classes import dataset_classes, prompt_templates
from train.config import ModelConfig
from train.model import ZegFormer

from .errors import ExportError

log = logging.getLogger(__name__)
BUILTIN = ("coco-stuff", "voc", "ade-847")
TRAIN = "train"


@dataclass(frozen=True)
class VocabRequest:
    """A vocabulary to embed into the bundle: its file name, class names and where they came from."""

    name: str
    names: Tuple[str, ...]
    source: str


def vocab_name(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "vocab"


def checkpoint_vocab_name(checkpoint: Dict) -> str:
    """The checkpoint's class list is named after its dataset when known, else ``all``."""
    source = checkpoint.get("source") or {}
    return vocab_name(str(source["dataset"])) if source.get("dataset") else "all"


def resolve(requests: Optional[Sequence[str]], checkpoint: Dict) -> List[VocabRequest]:
    """Turn ``--vocab`` values (``None`` = default: ``train`` + the checkpoint's list) into vocabularies."""
    classes = checkpoint["classes"]
    own = checkpoint_vocab_name(checkpoint)
    seen = tuple(n for n, s in zip(classes["names"], classes["seen"]) if s)
    default = requests is None or len(requests) == 0
    out: List[VocabRequest] = []
    for req in [TRAIN, own] if default else list(requests):
        path = Path(req)
        if path.is_file():
            try:
                names = classnames.read_class_file(path)  # the SDK's parser: one set of rules
            except VocabularyError as e:
                raise ExportError(str(e)) from e
            vocab = VocabRequest(vocab_name(path.stem), tuple(names), str(path.resolve()))
        elif req == own:
            vocab = VocabRequest(own, tuple(classes["names"]), "checkpoint classes")
        elif req == TRAIN:
            if not seen:
                if default:
                    log.warning("the checkpoint has no seen classes: no 'train' vocabulary")
                    continue
                raise ExportError("vocabulary 'train' asked for, but the checkpoint has no seen classes")
            vocab = VocabRequest(TRAIN, seen, "checkpoint seen classes")
        elif req in BUILTIN:
            vocab = VocabRequest(req, tuple(dataset_classes(req).names), f"built-in {req}")
        else:
            known = ", ".join(sorted(set(BUILTIN) | {TRAIN, own}))
            raise ExportError(f"unknown vocabulary {req!r}: not an existing file and not one of {known}")
        if any(v.name == vocab.name for v in out):
            raise ExportError(f"vocabulary name {vocab.name!r} given twice (rename the class file)")
        out.append(vocab)
    return out


def _embed(model: ZegFormer, names: Sequence[str], templates: Sequence[str], what: str, progress: bool) -> torch.Tensor:
    log.info(
        "%s: %d classes x %d templates = %d prompts", what, len(names), len(templates), len(names) * len(templates)
    )
    return model.text_embeddings(list(names), list(templates), progress=progress).float().cpu()


def embed_vocabularies(
    model: ZegFormer, vocabs: Sequence[VocabRequest], progress: bool = True
) -> Dict[str, Dict[str, np.ndarray]]:
    """Both embedding sets of every vocabulary, each class embedded once (union over vocabularies)."""
    cfg: ModelConfig = model.cfg
    templates = prompt_templates(cfg.test_prompt)
    templates_clip = prompt_templates(cfg.clip_prompt)
    unique = list(dict.fromkeys(n for v in vocabs for n in v.names))
    index = {n: i for i, n in enumerate(unique)}
    feats = _embed(model, unique, templates, f"segment-classifier prompts ({cfg.test_prompt})", progress)
    feats_clip = _embed(model, unique, templates_clip, f"CLIP-branch prompts ({cfg.clip_prompt})", progress)
    out = {}
    for v in vocabs:
        idx = torch.tensor([index[n] for n in v.names])
        out[v.name] = {
            "names": np.array(v.names, dtype=str),
            "text_features": feats[idx].numpy().astype(np.float32),
            "text_features_clip": feats_clip[idx].numpy().astype(np.float32),
            "templates": np.array(templates, dtype=str),
            "templates_clip": np.array(templates_clip, dtype=str),
        }
    return out


def write_vocabularies(embedded: Dict[str, Dict[str, np.ndarray]], bundle_dir: Path) -> Dict[str, str]:
    """``vocab/<name>.npz`` files; returns the manifest's ``vocabularies`` entry."""
    from sdk.bundle_format import VOCAB_DIR

    (bundle_dir / VOCAB_DIR).mkdir(exist_ok=True)
    entries = {}
    for name, arrays in embedded.items():
        rel = f"{VOCAB_DIR}/{name}.npz"
        np.savez(bundle_dir / rel, **arrays)
        entries[name] = rel
    return entries
