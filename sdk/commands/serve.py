"""``python -m sdk serve``: the command line of :mod:`sdk.serve` (the Segmenter behind Triton)."""

from __future__ import annotations

import argparse

from .options import add_segmenter_arguments, segmenter_kwargs


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``serve`` to the CLI's sub-parsers."""
    from .. import serve

    p = sub.add_parser(
        "serve",
        help="serve a bundle on Triton (PyTriton): HTTP/gRPC, dynamic batching",
        description=serve.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_segmenter_arguments(p)
    p.add_argument("--instances", type=int, default=1, help="model instances (one Segmenter each; default 1)")
    p.add_argument("--max-batch-size", type=int, default=8, help="dynamic batcher's largest batch (default 8)")
    p.add_argument(
        "--max-queue-delay-us",
        type=int,
        default=1000,
        help="how long a request may wait for others to batch with (default 1000 µs)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--model-name", default=serve.MODEL_NAME)
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens (INFO)")
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the server until SIGINT/SIGTERM."""
    from ..serve.server import ServerOptions, serve

    options = ServerOptions(
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        instances=args.instances,
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
        model_name=args.model_name,
        verbose=args.verbose,
    )
    return serve(segmenter_kwargs(args), options)
