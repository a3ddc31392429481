"""Checkpoint → bundle directory: graphs, background, tokenizer, vocabularies, manifest, checks."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from sdk import bundle_format as bf
from sdk.manifest import InferenceSettings, ModelInfo, PreprocessInfo, TokenizerInfo, new_manifest
from sdk.version import __version__
from train.checkpoint import CheckpointError, load_model
from train.model import ZegFormer

from . import graphs, vocab
from .errors import ExportError
from .manifest import check_destination, read_manifest, staging_dir, write_manifest

log = logging.getLogger(__name__)
SDK_RESOURCES = Path(bf.__file__).resolve().parent / "resources"


@dataclass
class ExportOptions:
    vocabs: Optional[Sequence[str]] = None  # None: "train" + the checkpoint's class list
    image_size: Tuple[int, int] = (640, 640)  # proposal trace size (the graph stays dynamic)
    dense_size: Tuple[int, int] = (448, 448)
    opset: int = graphs.DEFAULT_OPSET
    verify: bool = False
    verify_sizes: Optional[Sequence[Tuple[int, int, int]]] = None  # (batch, H, W) cases
    force: bool = False
    tensorrt: bool = False
    fp16: bool = False
    workspace_gb: Optional[float] = None
    profiles: Optional[Dict[str, Any]] = None
    trt_precision: Optional[str] = None  # engines' precision; default fp16 with fp16, else int8 with --int8, else fp32
    trt_contexts: int = 1  # optimisation profiles per engine = contexts that may run at once
    progress: bool = True
    precision: Optional[Any] = None  # export.precision.PrecisionOptions: --int8 / --fp16 graphs


def check_options(model_cfg, opts: ExportOptions) -> None:
    div, patch = model_cfg.size_divisibility, model_cfg.clip.patch_size
    if opts.opset not in graphs.SUPPORTED_OPSETS:
        raise ExportError(
            f"--opset {opts.opset} is not supported; use "
            f"{graphs.SUPPORTED_OPSETS.start}..{graphs.SUPPORTED_OPSETS.stop - 1}"
        )
    h, w = opts.image_size
    if h <= 0 or w <= 0 or h % div or w % div:
        raise ExportError(f"--image-size {h}x{w}: both sides must be positive multiples of {div}")
    hd, wd = opts.dense_size
    if hd <= 0 or wd <= 0 or hd % patch or wd % patch:
        raise ExportError(
            f"--dense-size {hd}x{wd}: both sides must be positive multiples of the CLIP patch size {patch}"
        )


def load(checkpoint: Path) -> Tuple[ZegFormer, Dict[str, Any]]:
    try:
        model, payload = load_model(checkpoint)
    except CheckpointError as e:
        raise ExportError(str(e)) from e
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ExportError(f"checkpoint {checkpoint} is inconsistent: {type(e).__name__}: {e}") from e
    classes = payload.get("classes")
    if (
        not isinstance(classes, dict)
        or not isinstance(classes.get("names"), list)
        or not classes["names"]
        or not isinstance(classes.get("seen"), list)
        or len(classes["seen"]) != len(classes["names"])
    ):
        raise ExportError(f"checkpoint {checkpoint} has no valid class list (classes.names / classes.seen)")
    return model.float().eval(), payload


def manifest_sections(
    model: ZegFormer, opts: ExportOptions
) -> Tuple[ModelInfo, PreprocessInfo, InferenceSettings, TokenizerInfo]:
    """The typed manifest sections of ``model`` (the settings not given keep ``sdk.manifest``'s defaults)."""
    cfg = model.cfg
    info = ModelInfo(
        num_queries=cfg.num_queries,
        embed_dim=cfg.embed_dim,
        mask_stride=cfg.mask_stride,
        size_divisibility=cfg.size_divisibility,
        crop_size=cfg.crop_size,
        segment_logit_scale=float(model.predictor.logit_scale.detach().exp().item()),
        clip_logit_scale=float(model.clip.logit_scale.detach().exp().item()),
        config=cfg.to_dict(),
    )
    pre = PreprocessInfo(
        **{
            k: [float(v) for v in getattr(cfg, k)]
            for k in ("pixel_mean", "pixel_std", "clip_pixel_mean", "clip_pixel_std")
        }
    )
    inference = InferenceSettings(
        size_divisibility=cfg.size_divisibility,
        crop_size=cfg.crop_size,
        ensemble_lambda=cfg.ensemble_lambda,
        gzero_calibrate=cfg.gzero_calibrate,
        dense_size=[int(s) for s in opts.dense_size],
    )
    return info, pre, inference, TokenizerInfo(context_length=cfg.clip.context_length)


def build_manifest(
    model: ZegFormer,
    payload: Dict[str, Any],
    checkpoint: Path,
    graph_entries: Dict,
    vocab_entries: Dict[str, str],
    default_vocab: str,
    opts: ExportOptions,
) -> Dict[str, Any]:
    """Everything of ``manifest.json`` except ``files`` (filled in when written)."""
    import onnx
    import open_clip

    return new_manifest(
        *manifest_sections(model, opts),
        classes=payload["classes"],
        default_vocabulary=default_vocab,
        vocabularies=vocab_entries,
        graphs=graph_entries,
        checkpoint={"path": str(checkpoint.resolve()), "sha256": bf.sha256_file(checkpoint)},
        versions={
            "zegformer_sdk": __version__,
            "torch": str(torch.__version__),
            "onnx": str(onnx.__version__),
            "opset": opts.opset,
            "open_clip": str(open_clip.__version__),
        },
    )


def write_static_files(model: ZegFormer, bundle: Path) -> None:
    """``background.npy`` ([1,D] float32, not normalised) and the tokenizer vocabulary."""
    np.save(bundle / bf.BACKGROUND, model.predictor.bg_feature.detach().float().cpu().numpy())
    src = SDK_RESOURCES / bf.TOKENIZER_VOCAB
    if not src.is_file():
        raise ExportError(f"tokenizer vocabulary {src} is missing from this installation")
    shutil.copyfile(src, bundle / bf.TOKENIZER_VOCAB)


def check_tensorrt_available() -> None:
    """Fail early (before minutes of export) when engines cannot be built here."""
    from .tensorrt import require_tensorrt

    require_tensorrt()  # raises TensorRTUnavailable, an ExportError with a one-line reason


def export_bundle(checkpoint: Path, out: Path, opts: ExportOptions) -> Dict[str, Any]:
    """Write a complete bundle to ``out`` (all or nothing); returns the manifest."""
    checkpoint, out = Path(checkpoint), Path(out)
    check_destination(out.absolute(), opts.force)
    if opts.tensorrt:
        check_tensorrt_available()
    model, payload = load(checkpoint)
    check_options(model.cfg, opts)
    if opts.tensorrt and opts.profiles:
        check_profiles(model, opts)
    vocabs = vocab.resolve(opts.vocabs, payload)
    default_vocab = vocabs[0].name if opts.vocabs else vocabs[-1].name
    specs = graphs.graph_specs(model, opts.image_size, opts.dense_size)
    with staging_dir(out, opts.force) as tmp:
        graph_entries = graphs.export_graphs(specs, tmp, opts.opset, opts.progress)
        write_static_files(model, tmp)
        vocab_entries = vocab.write_vocabularies(vocab.embed_vocabularies(model, vocabs, opts.progress), tmp)
        manifest = build_manifest(model, payload, checkpoint, graph_entries, vocab_entries, default_vocab, opts)
        manifest = write_manifest(tmp, manifest)
        if opts.verify:
            from .verify import verify_graphs

            verify_graphs(
                tmp, specs, model, opts.image_size, opts.dense_size, opts.verify_sizes, progress=opts.progress
            )
        if opts.precision is not None and (opts.precision.int8 or opts.precision.fp16):
            from .precision import add_precisions

            manifest = add_precisions(tmp, manifest, opts.precision)
        if opts.tensorrt:
            manifest = _build_engines(tmp, opts)
    return manifest


def check_profiles(model: ZegFormer, opts: ExportOptions) -> None:
    """Validate ``--profile`` overrides before the export rather than after it."""
    from .trt_profiles import default_profiles, merge_profiles

    info, _, inference, tokenizer = manifest_sections(model, opts)
    facts = {"model": info.to_dict(), "inference": inference.to_dict(), "tokenizer": tokenizer.to_dict()}
    merge_profiles(default_profiles(facts), opts.profiles)


def engine_precision(opts: ExportOptions) -> str:
    """The TensorRT engines' precision: as asked, else fp16 with --fp16, int8 with --int8, else fp32."""
    if opts.trt_precision:
        return opts.trt_precision
    p = opts.precision
    return "fp16" if opts.fp16 else "int8" if p is not None and p.int8 else "fp32"


def _build_engines(bundle: Path, opts: ExportOptions) -> Dict[str, Any]:
    from .tensorrt import TensorRTError, build_engines

    try:
        build_engines(
            bundle,
            workspace=opts.workspace_gb,
            profiles=opts.profiles,
            precision=engine_precision(opts),
            num_profiles=opts.trt_contexts,
        )
    except TensorRTError as e:
        raise ExportError(str(e)) from e
    return read_manifest(bundle)


def export_graphs_only(
    checkpoint: Path,
    out_dir: Path,
    image_size: Tuple[int, int] = (640, 640),
    dense_size: Tuple[int, int] = (448, 448),
    names: Sequence[str] = ("proposal", "clip_image", "clip_text", "clip_dense"),
    opset: int = graphs.DEFAULT_OPSET,
) -> List[graphs.GraphSpec]:
    """Just the ONNX graphs (no vocabularies, no manifest) into an existing directory; for tests."""
    model, _ = load(Path(checkpoint))
    specs = [s for s in graphs.graph_specs(model, image_size, dense_size) if s.name in names]
    graphs.export_graphs(specs, Path(out_dir), opset, progress=False)
    return specs
