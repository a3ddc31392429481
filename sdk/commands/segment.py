"""``python -m sdk segment``: segment images, a video or a webcam stream into ``--out``.

Per image, ``--out`` receives ``<name>.png`` (class indices; 16-bit above 256 classes; or an indexed
PNG with ``--label-png palette``), ``<name>_overlay.png`` (colours + legend) and, last,
``<name>.json`` (classes present with area, score, box and COCO RLE mask; timings) — the same files
``label`` writes (sdk/outputs.py). A video gives ``<name>_overlay.mp4``.

Outputs of an earlier run: when ``--out`` already holds this command's outputs for some of the
inputs, the run stops before any work unless told what to do with them: ``--overwrite`` replaces
them, ``--skip-existing`` keeps the complete ones and segments only the rest (resume).
Other files are never replaced: an output whose name is taken by an input, by another output of
this run or by a file that is not ours gets a ``_1`` suffix (logged), and ``--out`` may not be an
input folder. A bad image is one error line; a bundle problem stops the run.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

from ..errors import SegmenterError
from .options import add_output_arguments, add_run_arguments, add_segmenter_arguments, segmenter_kwargs

log = logging.getLogger("sdk")


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``segment`` to the CLI's sub-parsers."""
    p = sub.add_parser(
        "segment",
        help="segment images, a video or a webcam stream",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="*", type=Path, help="image files and/or directories of images")
    p.add_argument("--out", type=Path, help="output directory (required except with --webcam)")
    add_segmenter_arguments(p)
    add_output_arguments(p)
    p.add_argument("--recursive", action="store_true", help="search directories recursively")
    p.add_argument("--video", type=Path, help="segment every frame of a video file")
    p.add_argument(
        "--webcam",
        nargs="?",
        type=int,
        const=0,
        metavar="INDEX",
        help="segment a camera stream (default camera 0); q or Esc quits",
    )
    earlier = p.add_mutually_exclusive_group()
    earlier.add_argument(
        "--overwrite", action="store_true", help="replace the outputs an earlier run wrote in --out for these inputs"
    )
    earlier.add_argument(
        "--skip-existing",
        action="store_true",
        help="keep the complete outputs of an earlier run and segment only the other inputs",
    )
    add_run_arguments(p)
    p.set_defaults(handler=lambda args: run(args, p))
    return p


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Check the arguments and ``--out`` before any work, then segment; 1 when some images failed."""
    from ..inputs import find_images
    from ..outputs import check_out_dir, plan_outputs

    if not args.inputs and args.video is None and args.webcam is None:
        parser.error("give images/directories, --video FILE or --webcam [INDEX]")
    if args.out is None and args.webcam is None:
        parser.error("--out is required")
    paths = find_images(args.inputs, args.recursive)
    if args.inputs and not paths:
        parser.error("no images found in the given inputs")
    stems: List[str] = []
    videos = {"video": args.video, "webcam": args.webcam}
    targets: Dict[str, Optional[Path]] = {}
    if args.out is not None:
        check_out_dir(args.out, [*args.inputs, *([args.video.parent] if args.video else [])], args.recursive)
        stems = plan_outputs(paths, args.out)
        paths, stems = earlier_run(paths, stems, args)
        targets = {kind: video_target(args, source) for kind, source in videos.items() if source is not None}
    from ..segmenter import Segmenter

    seg = Segmenter(**segmenter_kwargs(args))
    failures = segment_images(seg, paths, stems, args) if paths else 0
    if args.video is not None and (args.out is None or targets["video"] is not None):
        segment_video(seg, args.video, targets.get("video"), args, show=False)
    if args.webcam is not None:
        segment_video(seg, args.webcam, targets.get("webcam"), args, show=True)
    return 1 if failures else 0


def video_target(args: argparse.Namespace, source) -> Optional[Path]:
    """Where a video's overlay goes (``None``: an earlier run's is kept, see :func:`sdk.outputs.video_output`)."""
    from ..outputs import video_output

    camera = isinstance(source, int)
    return video_output(
        args.out,
        f"webcam{source}" if camera else Path(source).stem,
        None if camera else source,
        overwrite=args.overwrite,
        skip_existing=args.skip_existing,
    )


def earlier_run(paths: Sequence[Path], stems: Sequence[str], args: argparse.Namespace):
    """Apply the rule for an earlier run's outputs (module doc); returns the ``(paths, stems)`` to do."""
    from ..outputs import OutputError, existing_outputs, is_complete

    found = [stem for stem in stems if existing_outputs(args.out, stem)]
    if found and not (args.overwrite or args.skip_existing):
        raise OutputError(
            f"--out {args.out} holds the outputs of an earlier run for {len(found)} of these inputs "
            f"(e.g. {found[0]}.*): pass --overwrite to replace them, --skip-existing to keep them "
            "and segment the rest, or choose another --out"
        )
    if args.skip_existing:
        keep = [i for i, stem in enumerate(stems) if not is_complete(args.out, stem)]
        if len(keep) < len(stems):
            log.warning(
                "skipping %d of %d images whose outputs in %s are complete",
                len(stems) - len(keep),
                len(stems),
                args.out,
            )
        return [paths[i] for i in keep], [stems[i] for i in keep]
    if found:
        log.warning("replacing the outputs of an earlier run for %d images in %s", len(found), args.out)
    return list(paths), list(stems)


def segment_images(seg, paths: Sequence[Path], stems: Sequence[str], args: argparse.Namespace) -> int:
    """Segment each image and write its outputs; returns the number of failures.

    A bad image is one log line and the run goes on; a bundle/backend problem stops the run.
    """
    from tqdm import tqdm

    from ..errors import ImageError
    from ..outputs import write_image_outputs
    from ..preprocess import load_image

    failures = 0
    for path, stem in tqdm(
        list(zip(paths, stems)), desc="segment", unit="img", disable=args.no_progress or len(paths) < 2
    ):
        try:
            image = load_image(path)
            result = seg(image)
        except ImageError as e:
            log.error("%s", " ".join(str(e).split()))
            failures += 1
            continue
        write_image_outputs(args.out, stem, str(path), image, result, args.alpha, args.label_png)
    print(
        f"segmented {len(paths) - failures} of {len(paths)} images into {args.out}"
        + (f"; {failures} could not be read (see above)" if failures else ""),
        file=sys.stderr,
    )
    return failures


def frames(capture) -> Iterable:
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        yield frame


def segment_video(seg, source, target: Optional[Path], args: argparse.Namespace, show: bool) -> None:
    """Segment a video file or camera; write the overlay video to ``target`` and/or show frames."""
    import contextlib

    import cv2
    from tqdm import tqdm

    from ..visualize import overlay

    camera = isinstance(source, int)
    capture = cv2.VideoCapture(source if camera else str(source))
    if not capture.isOpened():
        raise SegmenterError(f"cannot open {'camera' if camera else 'video'} {source}")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    count = 0
    with contextlib.ExitStack() as stack:
        stack.callback(capture.release)
        if show:
            stack.callback(cv2.destroyAllWindows)
        writer = _VideoSink(stack, target, fps)
        for frame in tqdm(frames(capture), total=total, desc="frames", unit="frame", disable=args.no_progress or show):
            result = seg(frame, bgr=True)
            vis = overlay(frame[..., ::-1], result, args.alpha, fixed_height=True)[..., ::-1].copy()
            writer.write(vis)
            count += 1
            if show and _show(vis, result):
                break
    log.info("%d frames segmented", count)


class _VideoSink:
    """An mp4 written under a temporary name and renamed onto ``target`` when the video ends."""

    def __init__(self, stack, target: Optional[Path], fps: float):
        self.stack, self.target, self.fps = stack, target, fps
        self.writer: Optional[Any] = None  # a cv2.VideoWriter from the first frame on

    def write(self, frame) -> None:
        import cv2

        from ..atomicio import atomic_path

        if self.target is None:
            return
        if self.writer is None:
            tmp = self.stack.enter_context(atomic_path(self.target))
            self.writer = cv2.VideoWriter(
                str(tmp),
                cv2.VideoWriter_fourcc(*"mp4v"),  # type: ignore[attr-defined]  # stub gap
                self.fps,
                (frame.shape[1], frame.shape[0]),
            )
            self.stack.callback(self.writer.release)  # runs before the rename (callbacks unwind in reverse)
        self.writer.write(frame)


def _show(frame_bgr, result) -> bool:
    """Display a frame; True when the user quits (q / Esc)."""
    import cv2

    text = f"{result.timings.get('total', 0):.0f} ms"
    cv2.putText(frame_bgr, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2, cv2.LINE_AA)
    try:
        cv2.imshow("zegformer-sdk (q to quit)", frame_bgr)
        return (cv2.waitKey(1) & 0xFF) in (ord("q"), 27)
    except cv2.error as e:
        raise SegmenterError(
            f"cannot open a window ({e.msg.strip()}); opencv-python-headless has no GUI: "
            "pip install opencv-python, or pass --out to write a video"
        ) from e
