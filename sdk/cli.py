"""Command line: ``python -m sdk segment ...`` and ``python -m sdk info BUNDLE``.

examples:
  python -m sdk segment photos/ --bundle bundle/ --out results/
  python -m sdk segment a.jpg b.png --bundle bundle/ --vocab "cat;sofa;floor, carpet" --out results/
  python -m sdk segment --video clip.mp4 --bundle bundle/ --mode maskpool --out results/
  python -m sdk segment --webcam 0 --bundle bundle/ --mode proposal
  python -m sdk info bundle/
  python -m sdk demo --bundle bundle/          # web page on http://127.0.0.1:7860 (pip install '.[demo]')
  python -m sdk label images/ --bundle bundle/ --vocab "cat;sofa" --out labels/ [--ray auto] [--workers 4]
  python -m sdk serve --bundle bundle/ --http-port 8000 --instances 2

Per image, ``--out`` receives ``<name>.png`` (class indices; 16-bit above 256 classes),
``<name>_overlay.png`` (colours + legend) and ``<name>.json`` (classes present, areas, timings).
No output replaces an input or another output: clashing names get a ``_1`` suffix (logged), and
``--out`` may not be an input folder. A bad image is one error line; a bundle problem stops the run.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

from .errors import SegmenterError

log = logging.getLogger("sdk")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def min_size_arg(text: str):
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


def add_segmenter_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of every command that makes a :class:`~sdk.Segmenter` (segment, label, serve)."""
    from .backends import backend_names
    from .modes import MODES

    parser.add_argument("--bundle", required=True, type=Path, help="model bundle directory")
    parser.add_argument("--vocab", help="built-in vocabulary NAME, a FILE of names, or 'a;b;c'")
    parser.add_argument("--mode", choices=MODES, default="cropmask")
    parser.add_argument("--backend", default="auto", choices=backend_names(),
                        help="auto picks TensorRT, then ONNX Runtime CUDA, then ONNX Runtime CPU")
    parser.add_argument("--precision", default="fp32", metavar="TIER",
                        help="fp32 (faithful, default), bf16 (openvino), int8, fp16 (GPU), auto (fastest tier "
                             "whose agreement measured at export meets the bar), or per graph "
                             "'clip_image=int8,proposal=fp32'")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--min-size", type=min_size_arg, default="bundle", metavar="N|none",
                        help="shortest side after resizing (default: the bundle's); 'none' keeps the size")
    parser.add_argument("--prune-threshold", type=float, default=0.02, help="for --mode pruned")


def segmenter_kwargs(args: argparse.Namespace, **overrides: Any) -> Dict[str, Any]:
    """``Segmenter`` keyword arguments from :func:`add_segmenter_arguments`' options (plus ``--threads``)."""
    kwargs = {"bundle_dir": str(args.bundle), "backend": args.backend, "device": args.device, "mode": args.mode,
              "min_size": args.min_size, "prune_threshold": args.prune_threshold, "vocabulary": args.vocab,
              "precision": args.precision, "threads": getattr(args, "threads", None)}
    kwargs.update(overrides)
    return kwargs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sdk", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    seg = sub.add_parser("segment", help="segment images, a video or a webcam stream")
    seg.add_argument("inputs", nargs="*", type=Path, help="image files and/or directories of images")
    seg.add_argument("--out", type=Path, help="output directory (required except with --webcam)")
    add_segmenter_arguments(seg)
    seg.add_argument("--threads", type=int, help="backend intra-op threads")
    seg.add_argument("--alpha", type=alpha_arg, default=0.5, help="overlay opacity in [0, 1] (default 0.5)")
    seg.add_argument("--recursive", action="store_true", help="search directories recursively")
    seg.add_argument("--video", type=Path, help="segment every frame of a video file")
    seg.add_argument("--webcam", nargs="?", type=int, const=0, metavar="INDEX",
                     help="segment a camera stream (default camera 0); q or Esc quits")
    seg.add_argument("--no-progress", action="store_true")
    seg.add_argument("-v", "--verbose", action="store_true")
    info = sub.add_parser("info", help="print a bundle's manifest summary")
    info.add_argument("bundle", type=Path)
    from . import demo

    demo.add_arguments(sub.add_parser("demo", help="a local web page to try a bundle (needs the [demo] extra)",
                                      description=demo.__doc__,
                                      formatter_class=argparse.RawDescriptionHelpFormatter))
    from . import label, serve  # label (Ray) and serve (Triton); their heavy imports are lazy

    label.add_parser(sub)
    serve.add_parser(sub)
    return parser


def find_images(inputs: Sequence[Path], recursive: bool = False) -> List[Path]:
    """Image files among ``inputs`` (directories are listed, sorted)."""
    found: List[Path] = []
    for p in inputs:
        if p.is_dir():
            pattern = "**/*" if recursive else "*"
            found += sorted(f for f in p.glob(pattern) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            found.append(p)
    return found


def make_segmenter(args: argparse.Namespace):
    from .segmenter import Segmenter

    return Segmenter(**segmenter_kwargs(args))


def segment_images(seg, paths: Sequence[Path], out: Path, alpha: float, progress: bool) -> int:
    """Segment each image and write its outputs; returns the number of failures.

    A bad image is one log line and the run goes on; a bundle/backend problem stops the run.
    """
    from tqdm import tqdm

    from .errors import ImageError
    from .outputs import plan_outputs, write_image_outputs
    from .preprocess import load_image

    failures = 0
    for path, stem in tqdm(list(zip(paths, plan_outputs(paths, out))), desc="segment", unit="img",
                           disable=not progress or len(paths) < 2):
        try:
            image = load_image(path)
            result = seg(image)
        except ImageError as e:
            log.error("%s", " ".join(str(e).split()))
            failures += 1
            continue
        write_image_outputs(out, stem, str(path), image, result, alpha)
    print(f"segmented {len(paths) - failures} of {len(paths)} images into {out}"
          + (f"; {failures} could not be read (see above)" if failures else ""), file=sys.stderr)
    return failures


def frames(capture) -> Iterable:
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        yield frame


def segment_video(seg, source, out: Optional[Path], alpha: float, show: bool, progress: bool) -> int:
    """Segment a video file or camera; write ``<out>/<name>_overlay.mp4`` and/or show frames."""
    import cv2
    from tqdm import tqdm

    from .visualize import overlay

    capture = cv2.VideoCapture(source if isinstance(source, int) else str(source))
    if not capture.isOpened():
        raise SegmenterError(f"cannot open {'camera' if isinstance(source, int) else 'video'} {source}")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writer, count = None, 0
    try:
        for frame in tqdm(frames(capture), total=total, desc="frames", unit="frame", disable=not progress):
            result = seg(frame, bgr=True)
            vis = overlay(frame[..., ::-1], result, alpha, fixed_height=True)[..., ::-1].copy()
            if out is not None and writer is None:
                out.mkdir(parents=True, exist_ok=True)
                name = f"webcam{source}" if isinstance(source, int) else Path(source).stem
                from .outputs import video_output

                target = video_output(out, name, None if isinstance(source, int) else Path(source))
                writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"),
                                         fps, (vis.shape[1], vis.shape[0]))
            if writer is not None:
                writer.write(vis)
            count += 1
            if show and _show(vis, result):
                break
    finally:
        capture.release()
        if writer is not None:
            writer.release()
        if show:
            cv2.destroyAllWindows()
    log.info("%d frames segmented", count)
    return 0


def _show(frame_bgr, result) -> bool:
    """Display a frame; True when the user quits (q / Esc)."""
    import cv2

    text = f"{result.timings.get('total', 0):.0f} ms"
    cv2.putText(frame_bgr, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2, cv2.LINE_AA)
    try:
        cv2.imshow("zegformer-sdk (q to quit)", frame_bgr)
        return (cv2.waitKey(1) & 0xFF) in (ord("q"), 27)
    except cv2.error as e:
        raise SegmenterError(f"cannot open a window ({e.msg.strip()}); opencv-python-headless has no GUI: "
                             "pip install opencv-python, or pass --out to write a video") from e


def run_segment(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if not args.inputs and args.video is None and args.webcam is None:
        parser.error("give images/directories, --video FILE or --webcam [INDEX]")
    if args.out is None and args.webcam is None:
        parser.error("--out is required")
    paths = find_images(args.inputs, args.recursive)
    if args.inputs and not paths:
        parser.error("no images found in the given inputs")
    if args.out is not None:
        from .outputs import check_out_dir

        check_out_dir(args.out, [*args.inputs, *([args.video.parent] if args.video else [])], args.recursive)
    seg = make_segmenter(args)
    progress = not args.no_progress
    failures = segment_images(seg, paths, args.out, args.alpha, progress) if paths else 0
    if args.video is not None:
        segment_video(seg, args.video, args.out, args.alpha, show=False, progress=progress)
    if args.webcam is not None:
        segment_video(seg, args.webcam, args.out, args.alpha, show=True, progress=False)
    return 1 if failures else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "info":
            from .bundle import Bundle

            bundle = Bundle(args.bundle)
            print(bundle.summary())
            for rel in bundle.manifest["files"]:  # a file failing its hash is an error (exit 2)
                bundle.file(rel)
            return 0
        if args.command == "demo":
            from .demo import run

            return run(args)
        if hasattr(args, "handler"):  # label, serve
            return args.handler(args)
        return run_segment(args, parser)
    except SegmenterError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # writing an output failed (disk full, permissions, ...)
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
