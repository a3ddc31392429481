"""Export a zegformer-sdk checkpoint as a model bundle (ONNX graphs, text embeddings, manifest).

examples:
  python -m export --checkpoint model.pth --out bundles/zegformer
  python -m export --checkpoint model.pth --out b --vocab coco-stuff --vocab my_classes.txt --verify
  python -m export --checkpoint model.pth --out b --tensorrt --fp16 --workspace 8
  python -m export --checkpoint model.pth --out b --tensorrt --int8 --trt-contexts 4   # 4 threads per engine
  python -m export --checkpoint model.pth --out b --int8 --fp16          # reduced-precision graphs too
  python -m export --checkpoint model.pth --out b --int8 --calibration my_photos/

reduced precision (--int8, --fp16): <graph>.int8.onnx (QDQ: symmetric int8, per-channel weights,
calibrated on real images: scikit-image's sample photographs by default, or --calibration DIR) and
<graph>.fp16.onnx (strongly typed FP16, norms/softmax in FP32) beside the proposal, CLIP image and
dense CLIP graphs; then the label-map agreement of each tier with fp32 is measured on held-out
images and stored in the manifest (what Segmenter(precision="auto") reads).

vocabularies (--vocab A B C, or repeated; default: "train" + the checkpoint's own class list):
  coco-stuff (171), voc (20), ade-847 (847; slow: 847 x 33 prompts), train (the checkpoint's seen
  classes), the checkpoint's class list by its dataset name (else "all"), or a text file with one
  class per line ("a, b" = synonyms averaged; blank lines and # comments ignored; the vocabulary
  is named after the file). The first --vocab given is the bundle's default vocabulary.

Official ZegFormer checkpoints must be imported first: python -m train.convert_official.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path
from typing import Optional, Sequence, Tuple

from .errors import ExportError

log = logging.getLogger("export")


def size_arg(text: str) -> Tuple[int, int]:
    """``640`` or ``640x864`` → ``(H, W)``."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX,]\s*(\d+))?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (H or HxW, e.g. 640x864)")
    h = int(m.group(1))
    return h, int(m.group(2) or h)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--checkpoint", required=True, type=Path, help="our checkpoint (.pth)")
    p.add_argument("--out", required=True, type=Path, help="bundle directory to write (must not exist)")
    p.add_argument(
        "--vocab",
        action="extend",
        nargs="+",
        metavar="NAME_OR_FILE",
        help="vocabularies to precompute text embeddings for: several after one --vocab, "
        "or --vocab repeated (see above)",
    )
    p.add_argument(
        "--image-size",
        type=size_arg,
        default=(640, 640),
        metavar="HxW",
        help="proposal trace size, multiple of 32 (default 640x640); "
        "the graph stays dynamic in batch, height and width",
    )
    p.add_argument(
        "--dense-size",
        type=size_arg,
        default=(448, 448),
        metavar="HxW",
        help="fixed input size of clip_dense.onnx, multiple of the CLIP patch (default 448x448)",
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 17..20 (default 17)")
    p.add_argument(
        "--verify",
        action="store_true",
        help="run every graph with ONNX Runtime at other sizes and compare with PyTorch (fails beyond 1e-3 relative)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    p.add_argument(
        "--tensorrt",
        action="store_true",
        help="also build TensorRT engines, checked against ONNX Runtime (needs TensorRT 10 or 11, "
        "cuda-python or pycuda, and a GPU; pip install 'zegformer-sdk[tensorrt]')",
    )
    p.add_argument(
        "--fp16",
        action="store_true",
        help="also write strongly typed FP16 graphs (<graph>.fp16.onnx; normalisations/softmax kept "
        "FP32); with --tensorrt, FP16 engines built from them",
    )
    p.add_argument(
        "--trt-precision",
        choices=("fp32", "fp16", "int8"),
        metavar="P",
        help="precision of the TensorRT engines: fp32, fp16 or int8 (built from the --fp16/--int8 "
        "graphs; default: fp16 with --fp16, else int8 with --int8, else fp32)",
    )
    p.add_argument(
        "--trt-contexts",
        type=int,
        default=1,
        metavar="N",
        help="how many threads may run one engine at once: N optimisation profiles per engine, "
        "one per execution context (default 1: calls on an engine take turns)",
    )
    p.add_argument("--int8", action="store_true", help="also write QDQ int8 graphs (<graph>.int8.onnx), calibrated")
    p.add_argument(
        "--calibration",
        type=Path,
        metavar="DIR",
        help="int8 calibration images (default: scikit-image's sample photographs); every image used is "
        "decoded first, and one that does not decode stops the export, named (never skipped)",
    )
    p.add_argument("--calibration-images", type=int, metavar="N", help="use at most N calibration images (N >= 1)")
    p.add_argument(
        "--calibration-size",
        type=int,
        default=320,
        metavar="N",
        help="shortest side of the calibration and agreement images, >= 32 (default 320)",
    )
    p.add_argument(
        "--calibration-method",
        default="minmax",
        choices=("minmax", "percentile", "entropy"),
        help="int8 activation range estimator (default minmax)",
    )
    p.add_argument(
        "--no-agreement",
        action="store_true",
        help="skip measuring the reduced tiers' label-map agreement with fp32 (auto then stays fp32)",
    )
    p.add_argument(
        "--workspace", type=float, default=None, metavar="GiB", help="TensorRT builder workspace in GiB (default 4)"
    )
    p.add_argument(
        "--profile",
        action="append",
        default=[],
        metavar="GRAPH:INPUT=MIN,OPT,MAX",
        help="TensorRT shape profile override, e.g. proposal:image=1x3x64x64,1x3x640x864,2x3x1344x1344 (repeatable)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    return p


def options_from_args(args: argparse.Namespace):
    from .bundle import ExportOptions
    from .tensorrt import parse_profile

    profiles = {}
    for text in args.profile:
        for graph, shapes in parse_profile(text).items():
            profiles.setdefault(graph, {}).update(shapes)
    from .precision import PrecisionOptions

    precision = PrecisionOptions(
        fp16=args.fp16,
        int8=args.int8,
        calibration=args.calibration,
        calibration_images=args.calibration_images,
        calibration_method=args.calibration_method,
        calibration_size=args.calibration_size,
        measure=not args.no_agreement,
    )
    return ExportOptions(
        vocabs=args.vocab,
        image_size=args.image_size,
        dense_size=args.dense_size,
        opset=args.opset,
        verify=args.verify,
        force=args.force,
        tensorrt=args.tensorrt,
        fp16=args.fp16,
        workspace_gb=args.workspace,
        profiles=profiles or None,
        trt_precision=args.trt_precision,
        trt_contexts=args.trt_contexts,
        progress=not args.no_progress,
        precision=precision,
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (
        args.workspace is not None or args.profile or args.trt_precision or args.trt_contexts != 1
    ) and not args.tensorrt:
        parser.error("--workspace, --profile, --trt-precision and --trt-contexts only apply with --tensorrt")
    if args.trt_contexts < 1:
        parser.error(f"--trt-contexts must be at least 1, got {args.trt_contexts}")
    if args.trt_precision in ("fp16", "int8") and not getattr(args, args.trt_precision):
        parser.error(
            f"--trt-precision {args.trt_precision} builds from the {args.trt_precision} graphs: "
            f"add --{args.trt_precision}"
        )
    if (args.calibration or args.calibration_images) and not args.int8:
        parser.error("--calibration and --calibration-images only apply with --int8")
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        from .bundle import export_bundle
        from .calibration import check_calibration, check_options

        check_options(args.calibration_images, args.calibration_size)
        if args.int8 or (args.fp16 and not args.no_agreement):  # images decoded before any export work
            check_calibration(args.calibration, args.calibration_images, args.calibration_size)
        manifest = export_bundle(args.checkpoint, args.out, options_from_args(args))
    except ExportError as e:
        print(f"error: {e.one_line()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return 130
    except OSError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    log.info(
        "bundle %s: %d files, vocabularies %s (default %s)",
        args.out,
        len(manifest["files"]),
        ", ".join(manifest["vocabularies"]),
        manifest["default_vocabulary"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
