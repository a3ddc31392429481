"""``python -m sdk serve``: the Segmenter behind NVIDIA Triton (PyTriton), and a client helper.

The wire protocol (one definition for :mod:`sdk.serve.server` and :mod:`sdk.serve.client`):

inputs (per request, batch dimension first, one image per row)
  ``image``       BYTES ``[B, 1]``  an encoded image (PNG, JPEG, ...)
  ``vocabulary``  BYTES ``[B, K]``  optional class names (UTF-8; ``"a, b"`` = synonyms); default:
                                   the server's vocabulary
outputs
  ``label_map``   INT32 ``[B, H, W]`` class indices into ``class_names``
  ``class_names`` BYTES ``[B, K]``
  ``segments``    BYTES ``[B, 1]``  JSON: per class present index, name, area, score, seen, bbox
                                   and its COCO RLE mask
  ``error``       BYTES ``[B, 1]``  empty, or why this request failed (an undecodable image, a bad
                                   vocabulary; ``label_map`` is then 1×1 of -1). PyTriton fails
                                   every request of a batch when the callable raises, so
                                   per-request problems are answered here and the batch's other
                                   requests still succeed; :mod:`sdk.serve.client` raises them.
                                   Requests Triton itself rejects (a missing input, a wrong type)
                                   get an HTTP/gRPC error.

PyTriton (``pip install 'zegformer-sdk[serve]'``) needs ``numpy<2``: give the server its own
environment (see the README). Nothing here imports PyTriton or tritonclient at module level.
"""
from __future__ import annotations

import argparse

MODEL_NAME = "zegformer"
INPUT_IMAGE, INPUT_VOCABULARY = "image", "vocabulary"
OUTPUT_LABEL_MAP, OUTPUT_CLASS_NAMES, OUTPUT_SEGMENTS, OUTPUT_ERROR = "label_map", "class_names", "segments", "error"
OUTPUTS = (OUTPUT_LABEL_MAP, OUTPUT_CLASS_NAMES, OUTPUT_SEGMENTS, OUTPUT_ERROR)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``serve`` on the CLI's sub-parsers."""
    from ..cli import add_segmenter_arguments

    p = sub.add_parser("serve", help="serve a bundle on Triton (PyTriton): HTTP/gRPC, dynamic batching",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_segmenter_arguments(p)
    p.add_argument("--threads", type=int, help="backend threads per instance")
    p.add_argument("--instances", type=int, default=1, help="model instances (one Segmenter each; default 1)")
    p.add_argument("--max-batch-size", type=int, default=8, help="dynamic batcher's largest batch (default 8)")
    p.add_argument("--max-queue-delay-us", type=int, default=1000,
                   help="how long a request may wait for others to batch with (default 1000 µs)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--model-name", default=MODEL_NAME)
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(handler=main)
    return p


def main(args: argparse.Namespace) -> int:
    """Run the server until SIGINT/SIGTERM."""
    from .server import ServerOptions, serve

    from ..cli import segmenter_kwargs

    segmenter = segmenter_kwargs(args)
    options = ServerOptions(host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                            metrics_port=args.metrics_port, instances=args.instances,
                            max_batch_size=args.max_batch_size, max_queue_delay_us=args.max_queue_delay_us,
                            model_name=args.model_name, verbose=args.verbose)
    return serve(segmenter, options)
