"""The model bundle format: the contract between ``export`` (writer) and ``sdk`` (reader).

A bundle is a directory::

    manifest.json               everything below, plus the sha256 of every other file
    proposal.onnx               image [B,3,H,W] float32 RGB 0..255, H and W multiples of 32,
                                padded bottom/right with the *backbone pixel mean* (so that the
                                in-graph normalisation pads with 0, as the official code does)
                                → mask_logits [B,Q,H/4,W/4], segment_embeddings [B,Q,D] (L2-normalised)
    clip_image.onnx             crops [N,3,S,S] float32, CLIP-normalised → embeddings [N,D] (L2-normalised)
    clip_text.onnx              tokens [T,L] int32, L ≤ 77 (the manifest says "[T,L]"; older bundles
                                "[T,77]": fixed) → embeddings [T,D] (raw, *not* normalised: the
                                caller normalises per prompt, averages per class, normalises again);
                                pooled at each row's end of text, so rows may be cut after it
    clip_dense.onnx             image [1,3,Hd,Wd] CLIP-normalised → features [1,D,Hd/p,Wd/p]
                                (L2-normalised per location; for the ``maskpool`` mode)
    background.npy              [1,D] float32, the learned background embedding (NOT normalised)
    vocab/<name>.npz            names [K] (str), text_features [K,D] (segment classifier, with
                                ``templates``), text_features_clip [K,D] (CLIP branch, with
                                ``templates_clip``), templates [T1] (str), templates_clip [T2] (str)
    bpe_simple_vocab_16e6.txt.gz  the CLIP BPE vocabulary for the torch-free tokenizer
    *.engine                    optional TensorRT plans (see ``manifest["engines"]``)

``manifest.json`` keys (format version 1)::

    format            "zegformer-sdk/bundle"
    format_version    1
    created           ISO-8601 UTC time
    model             {num_queries, embed_dim, mask_stride, size_divisibility, crop_size,
                       segment_logit_scale (exp of the frozen log(1/T), float),
                       clip_logit_scale (exp of CLIP's logit_scale), config (full model config)}
    preprocess        {pixel_mean, pixel_std, clip_pixel_mean, clip_pixel_std}  (RGB, 0..255 scale)
    inference         {min_size: 640, max_size: 2560, size_divisibility: 32, mask_threshold: 0.5,
                       crop_size, ensemble_lambda: 2/3, gzero_calibrate: 0.1, dense_size: [Hd, Wd]}
    classes           {names: [...], seen: [bool...]}  the checkpoint's classes; the seen ones are
                      the *training* classes: a vocabulary entry equal to one of them is "seen"
    default_vocabulary  name of a vocab/*.npz entry
    vocabularies      {name: "vocab/<name>.npz"}
    tokenizer         {file: "bpe_simple_vocab_16e6.txt.gz", context_length: 77}
    graphs            {proposal|clip_image|clip_text|clip_dense: {file, inputs: {name: shape string},
                       outputs: {name: shape string}, precision: "fp32" (of ``file``),
                       variants: {fp16|int8: {file: "<graph>.<tier>.onnx" (required), precision (= the
                       tier), calibration: {...} or null, ...}}}}
                      ``variants`` (``python -m export --fp16/--int8``): FP16 = strongly typed, norms in
                      FP32 (with node counts); int8 = QDQ, with ``calibration`` {source, images, seed,
                      method, format, ...}
    precision         {agreement: {tier: {backend: label-map agreement with fp32}}, measured_on}
                      (what ``precision="auto"`` reads; absent without reduced tiers)
    background        "background.npy"
    checkpoint        {path, sha256}  the source checkpoint (used by the ``torch`` backend)
    files             {relative path: sha256 hex}  every file of the bundle except manifest.json
    versions          {zegformer_sdk, torch, onnx, opset, open_clip}
    engines           {graph name: {file, tensorrt, cuda, gpu, compute_capability, precision,
                       num_profiles (contexts that may run at once), profiles {input: {min, opt, max}},
                       onnx_file (the graph it was built from), onnx_sha256}}
                      (absent or empty when no engine was built)

Every key the SDK reads is type-checked when the manifest is read (``sdk.validate.check_manifest_schema``
for the sections above ``graphs``, ``sdk.manifest.check_runtime_sections`` for graphs' ``precision``
and ``variants``, ``engines``, ``precision``, ``checkpoint``, ``created`` and ``versions``): a wrong
type, a variant without ``file`` or of an unknown tier is a ``BundleError`` naming the key and
``manifest.json``. Unknown keys are ignored (forward compatibility).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Union

FORMAT = "zegformer-sdk/bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
GRAPHS = ("proposal", "clip_image", "clip_text", "clip_dense")
BACKGROUND = "background.npy"
TOKENIZER_VOCAB = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_DIR = "vocab"


def sha256_file(path: Union[str, os.PathLike], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(Path(path), "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
