"""Models and bundles for the benchmarks: synthetic-weight checkpoints exported once and cached."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import List, Tuple

log = logging.getLogger(__name__)
CACHE = Path(__file__).resolve().parent / ".cache"


def synthetic_checkpoint(preset_name: str, path: Path) -> None:
    """A checkpoint whose weights follow the reference fixture's recipe (deterministic, diverse queries).

    The recipe is keyed by official parameter names, so the fixture's own tensors come out for
    ``r101-vit16``; default PyTorch initialisation would make all queries nearly identical.
    """
    from tests.recipe import recipe_tensor
    from train.checkpoint import save_checkpoint
    from train.classes import dataset_classes
    from train.config import preset
    from train.convert_official import to_official_names
    from train.model import build_model

    model = build_model(preset(preset_name))
    ours = list(model.state_dict())
    official = to_official_names(model.state_dict())
    model.load_state_dict({k: recipe_tensor(name, tuple(v.shape)) for k, (name, v) in zip(ours, official.items())})
    split = dataset_classes("coco-stuff")
    save_checkpoint(path, model, split.names, split.seen)


def export_bundle(checkpoint: Path, bundle: Path) -> None:
    """Graphs plus a 3-class vocabulary (the benchmarks set their own embeddings)."""
    from export.__main__ import main as export_main

    vocab = bundle.parent / "bench_classes.txt"
    vocab.write_text("person\ntree\nsky\n")
    code = export_main(
        ["--checkpoint", str(checkpoint), "--out", str(bundle), "--vocab", str(vocab), "--no-progress", "-q", "--force"]
    )
    if code:
        raise RuntimeError(f"export failed with exit code {code}")


def prepare_bundle(args, tmp: Path) -> Tuple[Path, Path, List[str], int]:
    """(bundle dir, checkpoint, training class names, embedding dim) for the run's arguments."""
    if args.bundle:
        manifest = json.loads((args.bundle / "manifest.json").read_text())
        checkpoint = args.checkpoint or Path(manifest["checkpoint"]["path"])
        classes = manifest["classes"]
        train = [n for n, s in zip(classes["names"], classes["seen"]) if s]
        return args.bundle, checkpoint, train, int(manifest["model"]["embed_dim"])
    root = tmp if args.quick else CACHE / args.model
    root.mkdir(parents=True, exist_ok=True)
    checkpoint, bundle = root / "model.pth", root / "bundle"
    if not checkpoint.exists():
        log.info("writing a synthetic %s checkpoint to %s", args.model, checkpoint)
        synthetic_checkpoint(args.model, checkpoint)
    if not (bundle / "manifest.json").exists():
        log.info("exporting %s (once; cached in %s)", args.model, root)
        export_bundle(checkpoint, bundle)
    return prepare_bundle(type(args)(**{**vars(args), "bundle": bundle, "checkpoint": checkpoint}), tmp)
