"""The options several subcommands share, declared once (types, defaults, checks, help).

* :func:`add_segmenter_arguments` — what makes a :class:`~sdk.Segmenter` (segment, label, serve, demo);
  :func:`segmenter_kwargs` turns them back into its keyword arguments;
* :func:`add_output_arguments` — the per-image output files (segment, label): ``--label-png``, ``--alpha``;
* :func:`add_run_arguments` — ``--no-progress`` and ``-v/--verbose``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, Optional, Union


def min_size_arg(text: str) -> Optional[Union[int, str]]:
    """An integer, ``none`` (keep the input size) or ``bundle`` (the bundle's default)."""
    if text.strip().lower() in ("none", "0", "off"):
        return None
    if text == "bundle":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (an integer or 'none')") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("--min-size must be positive (or 'none')")
    return value


def alpha_arg(text: str) -> float:
    """A number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not an opacity in [0, 1]")
    return value


def add_segmenter_arguments(parser: argparse.ArgumentParser, threads: bool = True) -> None:
    """``--bundle --vocab --mode --backend --precision --device --min-size --prune-threshold [--threads]``."""
    from ..backends import backend_names
    from ..modes import MODES

    parser.add_argument("--bundle", required=True, type=Path, help="model bundle directory")
    parser.add_argument("--vocab", help="built-in vocabulary NAME, a FILE of names, or 'a;b;c'")
    parser.add_argument("--mode", choices=MODES, default="cropmask")
    parser.add_argument(
        "--backend",
        default="auto",
        choices=backend_names(),
        help="auto picks TensorRT, then ONNX Runtime CUDA, then ONNX Runtime CPU",
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        metavar="TIER",
        help="fp32 (faithful, default), bf16 (openvino), int8, fp16 (GPU), auto (fastest tier "
        "whose agreement measured at export meets the bar), or per graph "
        "'clip_image=int8,proposal=fp32'",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--min-size",
        type=min_size_arg,
        default="bundle",
        metavar="N|none",
        help="shortest side after resizing (default: the bundle's); 'none' keeps the size",
    )
    parser.add_argument("--prune-threshold", type=float, default=0.02, help="for --mode pruned")
    if threads:
        parser.add_argument("--threads", type=int, help="backend intra-op threads")


def segmenter_kwargs(args: argparse.Namespace, **overrides: Any) -> Dict[str, Any]:
    """``Segmenter`` keyword arguments from :func:`add_segmenter_arguments`' options, then ``overrides``."""
    kwargs = {
        "bundle_dir": str(args.bundle),
        "backend": args.backend,
        "device": args.device,
        "mode": args.mode,
        "min_size": args.min_size,
        "prune_threshold": args.prune_threshold,
        "vocabulary": args.vocab,
        "precision": args.precision,
        "threads": getattr(args, "threads", None),
    }
    kwargs.update(overrides)
    return kwargs


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """The per-image files' options (see :mod:`sdk.outputs`)."""
    from ..outputs import LABEL_PNG_FORMATS

    parser.add_argument(
        "--label-png",
        choices=LABEL_PNG_FORMATS,
        default="gray",
        help="gray: class indices as 8/16-bit gray (default); palette: an indexed PNG with the "
        "SDK's colours and the class list inside",
    )
    parser.add_argument("--alpha", type=alpha_arg, default=0.5, help="overlay opacity in [0, 1] (default 0.5)")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """``--no-progress`` and ``-v/--verbose``."""
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens (INFO)")
