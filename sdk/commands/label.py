"""``python -m sdk label``: the command line of :mod:`sdk.label` (resumable labelling on Ray Data)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_output_arguments, add_run_arguments, add_segmenter_arguments, segmenter_kwargs


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``label`` to the CLI's sub-parsers."""
    from .. import label

    p = sub.add_parser(
        "label",
        help="label a folder / list / Parquet table of images on Ray (resumable)",
        description=label.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", type=Path, help="a folder of images, a list file (one path a line) or a .parquet table")
    p.add_argument("--out", required=True, type=Path, help="output directory (re-run to resume)")
    add_segmenter_arguments(p, threads=False)  # an actor's threads are its --cpus-per-worker
    add_output_arguments(p)
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="an existing Ray cluster ('auto' or HOST:PORT); default: start a local Ray on this machine",
    )
    p.add_argument("--workers", type=int, help="Segmenter actors (default: as many as the CPUs/GPUs allow)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs per actor (default 1; also its threads)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per actor, fractions allowed")
    p.add_argument("--batch-size", type=int, default=4, help="images per Ray task (default 4)")
    p.add_argument("--column", help="the Parquet column of image paths (default: path/image/file_name)")
    p.add_argument("--recursive", action="store_true", help="search a folder recursively")
    p.add_argument(
        "--save-features",
        type=Path,
        metavar="DIR",
        help="also save each image's features (<stem>.features.npz) for python -m sdk relabel",
    )
    p.add_argument(
        "--features-storage",
        choices=("fp32", "fp16", "uint8"),
        default="fp32",
        help="masks in saved features: fp32 (exact, default), fp16, uint8 (compact; docs/features.md)",
    )
    add_run_arguments(p)
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``label`` from parsed arguments; prints the summary; 1 when some images failed.

    Everything is checked before Ray starts (:mod:`sdk.label_checks`): the options, the input
    list, ``--out`` (never a folder of input images), the bundle, precision and vocabulary.
    """
    from ..errors import SegmenterError
    from ..label import COCO_FILE, ERRORS_FILE, make_items, run_label
    from ..label_checks import check_job, check_out, check_run_options, read_inputs
    from ..validate.paths import root_dir

    check_run_options(
        workers=args.workers,
        cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker,
        batch_size=args.batch_size,
        alpha=args.alpha,
        label_png=args.label_png,
    )
    pairs = read_inputs(args.input, args.column, args.recursive)
    items = make_items(pairs)
    if not items:
        raise SegmenterError(f"no images found in {args.input}")
    threads = max(1, int(round(args.cpus_per_worker)))
    segmenter = segmenter_kwargs(args, bundle_dir=str(root_dir(args.bundle)), threads=threads)
    check_job(segmenter)
    check_out(args.out, args.input, pairs, args.recursive)
    settings = {k: segmenter[k] for k in ("bundle_dir", "mode", "min_size", "prune_threshold", "vocabulary")}
    settings["label_png"] = args.label_png
    if args.save_features is not None:
        from ..outputs import check_out_dir

        check_out_dir(args.save_features, [args.input], args.recursive)
        settings.update(save_features=str(args.save_features.resolve()), features_storage=args.features_storage)
    summary = run_label(
        items,
        args.out,
        segmenter,
        ray_address=args.ray,
        workers=args.workers,
        cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker,
        batch_size=args.batch_size,
        alpha=args.alpha,
        label_png=args.label_png,
        progress=not args.no_progress,
        settings=settings,
        save_features=args.save_features,
        features_storage=args.features_storage,
    )
    print(summary.line())
    if summary.errors:
        print(f"failed images are listed in {args.out / ERRORS_FILE}")
    print(f"COCO annotations: {args.out / COCO_FILE}")
    return 1 if summary.errors else 0
