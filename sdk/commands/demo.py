"""``python -m sdk demo``: the command line of :mod:`sdk.demo` (a local web page to try a bundle)."""

from __future__ import annotations

import argparse

from .options import add_segmenter_arguments, segmenter_kwargs


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``demo`` to the CLI's sub-parsers (Gradio is imported only when the demo starts)."""
    from .. import demo

    p = sub.add_parser(
        "demo",
        help="a local web page to try a bundle (needs the [demo] extra)",
        description=demo.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_segmenter_arguments(p)  # --mode and --vocab: what the page starts with
    p.add_argument("--port", type=int, default=7860, help="HTTP port (default 7860)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument(
        "--concurrency", type=int, default=1, help="segmentations run at once; more wait in the queue (default 1)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens (INFO)")
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Load the bundle once, build the page, serve it until interrupted."""
    from ..demo import import_gradio, serve_page
    from ..errors import OptionError
    from ..segmenter import Segmenter

    for name, value, lo, hi in (("port", args.port, 1, 65535), ("concurrency", args.concurrency, 1, 64)):
        if not lo <= value <= hi:  # before anything starts: one line, not a socket traceback
            raise OptionError(f"--{name} {value} is invalid: give an integer in {lo}..{hi}")
    import_gradio()  # the install hint before the bundle is loaded
    seg = Segmenter(**segmenter_kwargs(args))
    return serve_page(
        seg, host=args.host, port=args.port, concurrency=args.concurrency, verbose=args.verbose, vocabulary=args.vocab
    )
