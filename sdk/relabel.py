"""Label saved image features again, with any vocabulary (``python -m sdk relabel``: :mod:`sdk.commands.relabel`).

``DIR`` holds ``<stem>.features.npz`` files (``python -m sdk label ... --save-features DIR`` or
``ImageFeatures.save``). Each is classified with the new vocabulary — no image graph runs — and
written exactly as ``label`` writes (see :mod:`sdk.outputs`): ``<stem>.png``, ``<stem>_overlay.png``
(drawn on the source image when it can still be read, else on gray), ``<stem>.json`` last, then
``_annotations.coco.json`` (RLE), ``classes.txt`` and ``errors.jsonl``. A re-run skips what is
complete, so a killed run resumes. Features of another bundle stop the run before any work, with
one line; a file that cannot be read is recorded in ``errors.jsonl`` and the run goes on.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .errors import BundleError, OptionError, SegmenterError
from .features import SUFFIX, peek
from .label import RESERVED_STEMS, Item, LabelSummary, check_settings, make_items, write_dataset_files
from .outputs import is_complete, write_image_outputs

log = logging.getLogger(__name__)
GRAY = 128  # overlay background when the source image is gone


def find_features(source: Path, recursive: bool = False) -> List[Path]:
    """The features files of a folder (sorted)."""
    if not source.is_dir():
        raise SegmenterError(
            f"relabel input {source} is not a folder of {SUFFIX} files "
            "(python -m sdk label ... --save-features DIR writes one)"
        )
    return sorted(p for p in source.glob(("**/*" if recursive else "*") + SUFFIX) if p.is_file())


def read_items(paths: Sequence[Path], bundle_id: str, mode: Optional[str]) -> List[Item]:
    """One item per file (named as the image was); refuses features of another bundle or mode up front.

    A file whose header cannot be read keeps its place (its error is recorded when it is processed).
    """
    pairs = []
    for path in paths:
        stem = path.name[: -len(SUFFIX)]
        try:
            header = peek(path)
        except BundleError:
            pairs.append((str(path), stem))
            continue
        if header["bundle_id"] != bundle_id:
            raise BundleError(
                f"{path} was encoded with another bundle (identity {header['bundle_id'][:12]}…, "
                f"--bundle has {bundle_id[:12]}…); relabel with the bundle that encoded it"
            )
        if mode is not None and header.get("mode") != mode:
            raise OptionError(
                f"{path} was encoded in mode {header.get('mode')!r}, not --mode {mode}; "
                "leave --mode out to use the features' mode"
            )
        pairs.append((str(path), header.get("name") or stem))  # the image's name (COCO file_name)
    stems = [Path(path).name[: -len(SUFFIX)] for path, _ in pairs]  # label saved them under its own stems
    if len(set(stems)) == len(stems) and not RESERVED_STEMS & set(stems):
        return [Item(path, name, stem) for (path, name), stem in zip(pairs, stems)]
    return make_items(pairs)  # --recursive with one stem in two folders: suffixed, as label does


class Relabeler:
    """Classifies features files with one Segmenter and writes each image's outputs."""

    def __init__(self, seg: Any, out: Path, alpha: float = 0.5, label_png: str = "gray"):
        self.seg, self.out, self.alpha, self.label_png = seg, out, alpha, label_png

    def one(self, item: Item) -> str:
        """Relabel one file; returns ``""`` or the error message (one failure never stops the run)."""
        try:
            features = self.seg.load_features(item.path)
            result = self.seg.classify(features)
            image = self._image(features)
            write_image_outputs(
                self.out, item.stem, features.source or item.path, image, result, self.alpha, self.label_png
            )
            return ""
        except (SegmenterError, OSError, ValueError) as e:
            log.warning("%s: %s", item.path, e)
            return f"{type(e).__name__}: {' '.join(str(e).split())}"

    @staticmethod
    def _image(features: Any) -> np.ndarray:
        """The source image for the overlay, or gray when it is gone or changed size."""
        from .preprocess import load_image

        if features.source:
            try:
                image = load_image(features.source)
                if image.shape[:2] == tuple(features.original):
                    return image
            except (SegmenterError, OSError):
                pass
        return np.full((*features.original, 3), GRAY, np.uint8)


def run_relabel(
    items: Sequence[Item],
    out: Path,
    seg: Any,
    *,
    settings: Dict[str, Any],
    workers: int = 1,
    alpha: float = 0.5,
    label_png: str = "gray",
    progress: bool = True,
) -> LabelSummary:
    """Relabel ``items`` into ``out`` with ``seg`` (its vocabulary); returns the summary (see the module doc)."""
    from tqdm import tqdm

    from .atomicio import remove_stale_temps

    check_settings(out, settings)
    remove_stale_temps(out)
    todo = [it for it in items if not is_complete(out, it.stem)]
    summary = LabelSummary(total=len(items), skipped=len(items) - len(todo), labelled=0)
    worker = Relabeler(seg, out, alpha, label_png)
    start = time.perf_counter()
    errors: Dict[str, str] = {}
    with (
        ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
        tqdm(total=len(todo), desc="relabel", unit="img", disable=not progress) as bar,
    ):
        for it, message in zip(todo, pool.map(worker.one, todo)):
            if message:
                errors[it.stem] = message
            else:
                summary.labelled += 1
            bar.update()
    summary.seconds = time.perf_counter() - start
    summary.errors = [
        {"image": it.name, "path": it.path, "error": errors[it.stem]} for it in items if it.stem in errors
    ]
    write_dataset_files(items, out, summary.errors)
    return summary


__all__ = ["find_features", "read_items", "Relabeler", "run_relabel"]
