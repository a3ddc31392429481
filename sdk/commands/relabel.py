"""``python -m sdk relabel``: the command line of :mod:`sdk.relabel` (saved features, a new vocabulary)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_output_arguments, add_run_arguments, add_segmenter_arguments, segmenter_kwargs


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``relabel`` to the CLI's sub-parsers."""
    from .. import relabel

    p = sub.add_parser(
        "relabel",
        help="label saved image features with a new vocabulary (no image graph runs)",
        description=relabel.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", type=Path, help="a folder of .features.npz files (label --save-features writes them)")
    p.add_argument("--out", required=True, type=Path, help="output directory (re-run to resume)")
    add_segmenter_arguments(p)
    p.set_defaults(mode=None)  # the features' own mode; --mode only checks it
    add_output_arguments(p)
    p.add_argument("--workers", type=int, default=2, help="files classified at once (threads; default 2)")
    p.add_argument("--recursive", action="store_true", help="search the folder recursively")
    add_run_arguments(p)
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``relabel`` from parsed arguments; prints the summary; 1 when some files failed."""
    from ..bundle import Bundle
    from ..errors import OptionError, SegmenterError
    from ..features import SUFFIX, bundle_identity
    from ..label import COCO_FILE, ERRORS_FILE
    from ..outputs import check_out_dir
    from ..relabel import find_features, read_items, run_relabel
    from ..segmenter import Segmenter

    if args.workers < 1:
        raise OptionError(f"--workers must be at least 1, not {args.workers}")
    check_out_dir(args.out, [args.input], args.recursive)
    paths = find_features(args.input, args.recursive)
    if not paths:
        raise SegmenterError(f"no {SUFFIX} files in {args.input}; write them with label --save-features")
    items = read_items(paths, bundle_identity(Bundle(args.bundle).manifest), args.mode)
    kwargs = segmenter_kwargs(args, bundle_dir=str(args.bundle.resolve()))
    kwargs["mode"] = args.mode or "cropmask"  # classify uses each file's own mode; no graph session opens
    seg = Segmenter(**kwargs)
    settings = {
        "relabel": str(args.input.resolve()),
        "bundle_dir": kwargs["bundle_dir"],
        "vocabulary": args.vocab,
        "prune_threshold": args.prune_threshold,
        "label_png": args.label_png,
    }
    summary = run_relabel(
        items,
        args.out,
        seg,
        settings=settings,
        workers=args.workers,
        alpha=args.alpha,
        label_png=args.label_png,
        progress=not args.no_progress,
    )
    print(
        f"{summary.total} feature files: {summary.labelled} relabelled in {summary.seconds:.1f} s "
        f"({summary.images_per_second:.2f} images/s), {summary.skipped} already complete, "
        f"{len(summary.errors)} errors"
    )
    if summary.errors:
        print(f"failed files are listed in {args.out / ERRORS_FILE}")
    print(f"COCO annotations: {args.out / COCO_FILE}")
    return 1 if summary.errors else 0
