"""The int8 text graph (``clip_text.int8.onnx``), calibrated on prompts of class names it will not be asked.

Calibration inputs are the bundle's own prompt templates (both sets, from its default vocabulary)
filled with every ``STEP``-th ADE20K-847 class name, tokenized by the SDK's tokenizer and batched
exactly as the SDK runs them (sorted by length, cut at the longest end of text): the ranges the
quantiser records are those of real prompts at the lengths that run. Quantised by
``export.quantize.quantize_graph`` (the rules of every int8 graph).

Not written by ``python -m export --int8``: measured on the synthetic-weight R101 + ViT-B/16 bundle
(``benchmarks/results/text_embedding.md``) it is ~1.6× faster than OpenVINO bf16, but the pooled
class embeddings keep a minimum cosine of only 0.9983–0.9985 with fp32 (bf16: 0.99992), below the
0.999 bar a text tier must meet. ``benchmarks/text_embedding.py --int8-text`` adds it to a bundle
to measure it again (e.g. with real CLIP weights or another calibration).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from sdk.precision import variant_file
from sdk.prompts import expand_prompts
from sdk.text_batches import dynamic_length, plan_batches, token_counts
from sdk.tokenizer import ClipTokenizer

from .quantize import quantize_graph

log = logging.getLogger(__name__)
STEP = 20  # every 20th ADE-847 name: 43 names
BATCH = 64
KEEP_EVERY = 3  # every 3rd cut batch (of ~23): enough ranges, a third of the calibration time


def calibration_tokens(bundle_dir: Path, manifest: Dict[str, Any]) -> List[np.ndarray]:
    """Cut int32 token batches of the bundle's templates × held-out class names."""
    from train.classes import dataset_classes

    default = manifest.get("default_vocabulary")
    with np.load(Path(bundle_dir) / manifest["vocabularies"][default]) as vocab:
        templates = [str(t) for t in vocab["templates"]] + [str(t) for t in vocab["templates_clip"]]
    names = list(dataset_classes("ade-847").names[::STEP])
    prompts = list(dict.fromkeys(expand_prompts(names, templates)[0]))
    tok = manifest["tokenizer"]
    tokens = ClipTokenizer(Path(bundle_dir) / tok["file"], tok["context_length"])(prompts, dtype=np.int32)
    plan = plan_batches(token_counts(tokens), BATCH, tokens.shape[1])
    cut = dynamic_length(manifest["graphs"]["clip_text"])  # an older fixed [T,77] graph takes full rows
    return [np.ascontiguousarray(tokens[rows, : length if cut else None]) for rows, length in plan][::KEEP_EVERY]


def add_text_int8(bundle_dir: Path, manifest: Dict[str, Any], method: str = "minmax") -> Dict[str, Any]:
    """Write ``clip_text.int8.onnx`` and record it in ``manifest["graphs"]["clip_text"]["variants"]``."""
    entry = manifest["graphs"]["clip_text"]
    rel = variant_file(entry["file"], "int8")
    batches = calibration_tokens(bundle_dir, manifest)
    record = quantize_graph(Path(bundle_dir) / entry["file"], Path(bundle_dir) / rel, batches, method)
    entry.setdefault("precision", "fp32")
    entry.setdefault("variants", {})["int8"] = {
        "file": rel,
        "precision": "int8",
        "calibration": {"source": f"templates x ade-847 names[::{STEP}]", "prompts_batches": len(batches), **record},
    }
    log.info("int8 clip_text: calibrated on %d prompt batches", len(batches))
    return manifest
