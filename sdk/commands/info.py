"""``python -m sdk info BUNDLE``: print a bundle's manifest summary and verify every file's sha256."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``info`` to the CLI's sub-parsers."""
    p = sub.add_parser("info", help="print a bundle's manifest summary (and verify its files)", description=__doc__)
    p.add_argument("bundle", type=Path, help="model bundle directory")
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Print the summary; a file failing its hash is a :class:`~sdk.errors.BundleError` (exit 2)."""
    from ..bundle import Bundle

    bundle = Bundle(args.bundle)
    print(bundle.summary())
    for rel in bundle.manifest["files"]:
        bundle.file(rel)
    return 0
