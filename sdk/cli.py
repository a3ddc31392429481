"""Command line: ``python -m sdk COMMAND ...`` (``python -m sdk COMMAND --help`` for each).

examples:
  python -m sdk segment photos/ --bundle bundle/ --out results/
  python -m sdk segment a.jpg b.png --bundle bundle/ --vocab "cat;sofa;floor, carpet" --out results/
  python -m sdk segment --video clip.mp4 --bundle bundle/ --mode maskpool --out results/
  python -m sdk segment --webcam 0 --bundle bundle/ --mode proposal
  python -m sdk info bundle/
  python -m sdk demo --bundle bundle/          # web page on http://127.0.0.1:7860 (pip install '.[demo]')
  python -m sdk label images/ --bundle bundle/ --vocab "cat;sofa" --out labels/ [--ray auto] [--workers 4]
  python -m sdk label images/ --bundle bundle/ --out labels/ --save-features feats/   # then, any vocabulary:
  python -m sdk relabel feats/ --bundle bundle/ --vocab "dog;grass" --out labels2/    # no image graph runs
  python -m sdk serve --bundle bundle/ --http-port 8000 --instances 2

Per image, ``segment`` and ``label`` write ``<name>.png`` (class indices; 16-bit above 256 classes),
``<name>_overlay.png`` (colours + legend) and ``<name>.json`` (classes present, areas, boxes, RLE
masks, timings). No output replaces an input or a file that is not ours; a second ``segment`` run
into the same ``--out`` stops unless told --overwrite or --skip-existing; ``label`` resumes.
A bad image is one error line; a bundle problem stops the run (exit code 2).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

from .errors import SegmenterError

# every subcommand: a module with register(sub) (see sdk/commands/__init__.py), in --help order
COMMANDS = ("segment", "info", "demo", "label", "relabel", "serve")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m sdk`` parser with every module of :data:`COMMANDS` registered."""
    parser = argparse.ArgumentParser(
        prog="python -m sdk", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__package__}.commands.{name}").register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse, run the command's handler; an SDK or OS error is one ``error:`` line and exit code 2."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args) or 0)
    except (SegmenterError, OSError) as e:  # OSError: writing an output failed (disk full, permissions, ...)
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
