"""Import an official ZegFormer (detectron2) checkpoint into our checkpoint format.

    python -m train.convert_official --official model_final.pth --out MODEL.pth [--clip SOURCE]

CLIP weights come from the checkpoint when it holds ``sem_seg_head.predictor.clip_model.*``
(evaluation-config models), else from ``--clip``: an OpenAI-format state-dict file (or the
TorchScript archive OpenAI distributes), or an open_clip pretrained tag such as ``openai``
(downloads; needs the network). Unknown, missing or mis-shaped keys are an error listing them.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from .checkpoint import CheckpointError, save_checkpoint
from .classes import dataset_classes
from .config import ClipConfig, ModelConfig, preset
from .model import build_model

log = logging.getLogger(__name__)

# official prefix → ours (first match wins; the CLIP prefix must precede the predictor's)
PREFIXES: Tuple[Tuple[str, str], ...] = (
    ("sem_seg_head.predictor.clip_model.", "clip."),
    ("sem_seg_head.pixel_decoder.", "pixel_decoder."),
    ("sem_seg_head.predictor.", "predictor."),
    ("backbone.", "backbone."),
)
# present in official files but not model weights: loss buffers, OpenAI metadata, old buffers
IGNORED = re.compile(
    r"^(criterion\..*|(clip_)?pixel_(mean|std)|.*num_batches_tracked"
    r"|(sem_seg_head\.predictor\.clip_model\.)?(input_resolution|context_length|vocab_size))$"
)
CLIP_PREFIX = "sem_seg_head.predictor.clip_model."
# criterion.empty_weight has (seen classes + 1) entries: identifies the training dataset
DATASET_BY_NUM_SEEN = {156: "coco-stuff", 15: "voc", 572: "ade-847"}


def load_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    """A detectron2 checkpoint (dict with ``model``) or a bare state dict, loaded safely."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"cannot read {path} as a PyTorch checkpoint (truncated or not a .pth file?): {type(e).__name__}: {e}"
        ) from e
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors (a dict, or a dict with 'model')")
    return obj


def load_clip_source(source: str) -> Dict[str, torch.Tensor]:
    """OpenAI-named CLIP weights from a state-dict file, a TorchScript archive, or an open_clip tag."""
    path = Path(source)
    if path.is_file():
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            try:  # OpenAI distributes TorchScript archives (ViT-B-16.pt)
                sd = torch.jit.load(str(path), map_location="cpu").state_dict()
            except Exception as e:
                raise CheckpointError(f"cannot read CLIP weights from {path}: {e}") from e
        if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
            sd = sd["state_dict"]
        return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    try:
        import open_clip

        log.info("downloading open_clip ViT-B-16-quickgelu weights %r", source)
        model = open_clip.create_model("ViT-B-16-quickgelu", pretrained=source)
        return model.state_dict()
    except Exception as e:
        raise CheckpointError(
            f"--clip {source!r} is neither a file nor a loadable open_clip pretrained tag (no network?): {e}"
        ) from e


def _count(keys: Sequence[str], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in keys for m in [rx.match(k)] if m})


def infer_clip_config(sd: Dict[str, torch.Tensor], template: ClipConfig, p: str = "clip.") -> ClipConfig:
    """CLIP shapes from the weights; head counts from ``template`` when its widths match, else width/64."""
    keys = list(sd)
    vision_width, _, patch, _ = sd[p + "visual.conv1.weight"].shape
    grid = round((sd[p + "visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = sd[p + "ln_final.weight"].shape[0]
    return ClipConfig(
        embed_dim=sd[p + "text_projection"].shape[1],
        image_size=grid * patch,
        patch_size=patch,
        vision_width=vision_width,
        vision_heads=template.vision_heads if template.vision_width == vision_width else max(1, vision_width // 64),
        vision_layers=_count(keys, re.escape(p) + r"visual\.transformer\.resblocks\.(\d+)\."),
        context_length=sd[p + "positional_embedding"].shape[0],
        vocab_size=sd[p + "token_embedding.weight"].shape[0],
        text_width=text_width,
        text_heads=template.text_heads if template.text_width == text_width else max(1, text_width // 64),
        text_layers=_count(keys, re.escape(p) + r"transformer\.resblocks\.(\d+)\."),
    )


def infer_config(sd: Dict[str, torch.Tensor], template: Optional[ModelConfig] = None) -> ModelConfig:
    """Architecture from tensor shapes; what shapes cannot tell (attention heads, GroupNorm
    groups, constants) comes from ``template`` (default: the official R101 + ViT-B/16 config)."""
    template = template or ModelConfig()
    keys = list(sd)
    blocks = tuple(_count(keys, rf"backbone\.res{i}\.(\d+)\.") for i in range(2, 6))
    q, hidden = sd["predictor.query_embed.weight"].shape
    return dataclasses.replace(
        template,
        backbone_blocks=blocks,
        backbone_width=sd["backbone.stem.conv1.weight"].shape[0],
        conv_dim=sd["pixel_decoder.layer_1.weight"].shape[0],
        mask_dim=sd["predictor.mask_embed.layers.2.weight"].shape[0],
        hidden_dim=hidden,
        num_queries=q,
        dim_feedforward=sd["predictor.transformer.decoder.layers.0.linear1.weight"].shape[0],
        dec_layers=_count(keys, r"predictor\.transformer\.decoder\.layers\.(\d+)\."),
        clip=infer_clip_config(sd, template.clip),
    )


def rename(official: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Map official names to ours; returns (renamed weights, unknown names)."""
    ours, unknown = {}, []
    for key, value in official.items():
        if IGNORED.match(key):
            continue
        for theirs, mine in PREFIXES:
            if key.startswith(theirs):
                ours[mine + key[len(theirs) :]] = value.float()  # official CLIP may be float16
                break
        else:
            unknown.append(key)
    return ours, unknown


def to_official_names(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Our names → the official detectron2 names (the inverse of :func:`rename`)."""
    out = {}
    for key, value in state_dict.items():
        theirs, mine = next((t, m) for t, m in PREFIXES if key.startswith(m))
        out[theirs + key[len(mine) :]] = value
    return out


def detect_dataset(official: Dict[str, torch.Tensor]) -> Optional[str]:
    w = official.get("criterion.empty_weight")
    return DATASET_BY_NUM_SEEN.get(w.numel() - 1) if w is not None else None


def convert(
    official_path: Path,
    out: Path,
    clip: Optional[str] = None,
    dataset: Optional[str] = None,
    template: Optional[ModelConfig] = None,
) -> ModelConfig:
    """Convert ``official_path`` into our checkpoint at ``out``; returns the model config."""
    official = load_state_dict(official_path)
    has_clip = any(k.startswith(CLIP_PREFIX) for k in official)
    if not has_clip:
        if clip is None:
            raise CheckpointError(
                f"{official_path} holds no CLIP weights (a training checkpoint): "
                "give them with --clip (OpenAI state-dict file or open_clip tag)"
            )
        official.update({CLIP_PREFIX + k: v for k, v in load_clip_source(clip).items()})
    ours, unknown = rename(official)
    if unknown:
        raise CheckpointError(
            f"{len(unknown)} unknown keys in {official_path} (not a ZegFormer checkpoint?): {unknown[:20]}"
        )
    try:
        cfg = infer_config(ours, template)
    except KeyError as e:
        raise CheckpointError(f"{official_path} lacks {e} (truncated or foreign checkpoint)") from e
    model = build_model(cfg)
    check_weights(model.state_dict(), ours, official_path)
    model.load_state_dict(ours)
    dataset = dataset or detect_dataset(official) or "coco-stuff"
    split = dataset_classes(dataset)
    save_checkpoint(
        out,
        model,
        split.names,
        split.seen,
        extra={"source": {"official": str(official_path), "clip": clip or "checkpoint", "dataset": dataset}},
    )
    log.info("wrote %s (%s, %d classes of %s)", out, _describe(cfg), len(split.names), dataset)
    return cfg


def check_weights(expected: Dict[str, torch.Tensor], got: Dict[str, torch.Tensor], source: Path) -> None:
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = [
        f"{k}: {tuple(got[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in got and got[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{source} does not fit the model: missing {missing[:20]} "
            f"({len(missing)}), unexpected {unexpected[:20]} ({len(unexpected)}), "
            f"mis-shaped {shapes[:20]} ({len(shapes)})"
        )


def _describe(cfg: ModelConfig) -> str:
    depth = 2 + 3 * sum(cfg.backbone_blocks)
    return f"R{depth}, {cfg.num_queries} queries, CLIP ViT-{cfg.clip.vision_layers}L/{cfg.clip.patch_size}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train.convert_official",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--official", required=True, type=Path, help="official ZegFormer .pth")
    parser.add_argument("--out", required=True, type=Path, help="where to write our checkpoint")
    parser.add_argument(
        "--clip",
        help="CLIP weights when the checkpoint has none: an OpenAI-format "
        "state-dict file, or an open_clip pretrained tag (e.g. openai)",
    )
    parser.add_argument(
        "--dataset",
        choices=["coco-stuff", "voc", "ade-847"],
        help="training dataset (class list and seen split); default: detected "
        "from criterion.empty_weight, else coco-stuff",
    )
    parser.add_argument(
        "--preset",
        default="r101-vit16",
        choices=["r101-vit16", "r50-vit16", "tiny"],
        help="config for what shapes cannot tell (attention heads, GroupNorm groups); "
        "depths and widths are read from the weights (default r101-vit16)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        convert(args.official, args.out, args.clip, args.dataset, preset(args.preset))
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
