"""``python -m sdk label``: label an image collection on Ray Data, resumably.

A pool of Ray actors, each holding one :class:`~sdk.Segmenter`, runs ``map_batches`` over the
images that are not yet complete. Each image's files are written by the actor, atomically and with
the record last (see :mod:`sdk.outputs`), so a re-run skips what is complete and redoes what is
partial, and a batch that Ray retries after a worker died rewrites the same files — nothing is
lost or duplicated. An image that fails is recorded in ``errors.jsonl``; the job goes on.
At the end the driver assembles ``_annotations.coco.json`` (COCO, RLE masks, categories = the
vocabulary) and ``classes.txt`` from the per-image records.

Ray is imported lazily: ``pip install 'zegformer-sdk[ray]'``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from .errors import SegmenterError
from .label_checks import check_run_options, ray_failure, read_inputs
from .outputs import SUFFIXES, coco_image_entries, is_complete, read_record, write_image_outputs

log = logging.getLogger(__name__)
COCO_FILE, CONFIG_FILE, CLASSES_FILE, ERRORS_FILE = (
    "_annotations.coco.json",
    "_label_config.json",
    "classes.txt",
    "errors.jsonl",
)
RESERVED_STEMS = {Path(COCO_FILE).stem, Path(CONFIG_FILE).stem}  # would collide with "<stem>.json"


@dataclass(frozen=True)
class Item:
    path: str  # where the image is read from
    name: str  # how the dataset names it (COCO ``file_name``, errors file)
    stem: str  # output file stem


@dataclass
class LabelSummary:
    total: int
    skipped: int
    labelled: int
    errors: List[Dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the run
    ray_start_seconds: float = 0.0  # of which: starting / connecting to Ray

    @property
    def images_per_second(self) -> float:
        """Labelled images per second of the job itself (actor start-up included, Ray's start not)."""
        busy = self.seconds - self.ray_start_seconds
        return self.labelled / busy if busy > 0 else 0.0

    def line(self) -> str:
        return (
            f"{self.total} images: {self.labelled} labelled in {self.seconds:.1f} s "
            f"({self.images_per_second:.2f} images/s after {self.ray_start_seconds:.1f} s of Ray start-up), "
            f"{self.skipped} already complete, {len(self.errors)} errors"
        )


# ---------------------------------------------------------------------------------------- inputs
def make_items(pairs: Sequence[Tuple[str, str]]) -> List[Item]:
    """Items with unique output stems: ``<name>``, or ``<name>_N`` when its files would collide with
    another image's (``x.png`` and ``x_overlay.png``, two ``x`` in subfolders) or the dataset files."""
    stems: List[str] = []
    taken: Set[str] = set()
    for _, name in pairs:
        base = Path(name).stem or "image"
        stem, n = base, 0
        while stem in RESERVED_STEMS or any(stem + suffix in taken for suffix in SUFFIXES):
            n += 1
            stem = f"{base}_{n}"
        taken.update(stem + suffix for suffix in SUFFIXES)
        stems.append(stem)
    return [Item(path, name, stem) for (path, name), stem in zip(pairs, stems)]


# ---------------------------------------------------------------------------------------- the actor
class LabelWorker:
    """A Ray Data actor: one Segmenter; segments a batch of images and writes their files."""

    def __init__(
        self,
        segmenter: Dict[str, Any],
        out: str,
        alpha: float,
        label_png: str,
        save_features: Optional[str] = None,
        features_storage: str = "fp32",
    ):
        from .segmenter import Segmenter

        self.segmenter = Segmenter(**segmenter)
        self.out, self.alpha, self.label_png = Path(out), alpha, label_png
        self.save_features, self.features_storage = save_features, features_storage

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        stems, errors = list(batch["stem"]), []
        for path, stem in zip(batch["path"], stems):
            errors.append(self.label_one(str(path), str(stem)))
        return {"stem": np.array(stems, dtype=object), "error": np.array(errors, dtype=object)}

    def label_one(self, path: str, stem: str) -> str:
        """Segment and write one image; returns ``""`` or the error message."""
        from .preprocess import load_image

        try:
            image = load_image(path)
            if self.save_features:  # encode + classify is the same result; pruned: every query encoded
                features = self.segmenter.encode(image)
                features.source, features.name = path, Path(path).name
                result = self.segmenter.classify(features)
                features.save(Path(self.save_features) / f"{stem}.features.npz", self.features_storage)
            else:
                result = self.segmenter(image)
            write_image_outputs(self.out, stem, path, image, result, self.alpha, self.label_png)
            return ""
        except Exception as e:  # noqa: BLE001 — one image's failure must never stop the job
            log.warning("%s: %s", path, e)
            return f"{type(e).__name__}: {' '.join(str(e).split())}"


# ---------------------------------------------------------------------------------------- the job
def run_label(
    items: Sequence[Item],
    out: Path,
    segmenter: Dict[str, Any],
    *,
    ray_address: Optional[str] = None,
    workers: Optional[int] = None,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    batch_size: int = 4,
    alpha: float = 0.5,
    label_png: str = "gray",
    progress: bool = True,
    settings: Optional[Dict[str, Any]] = None,
    save_features: Optional[Path] = None,
    features_storage: str = "fp32",
) -> LabelSummary:
    """Label ``items`` into ``out`` on Ray (see the module doc); returns the summary.

    ``segmenter``: keyword arguments of :class:`~sdk.Segmenter` (``bundle_dir`` ...). ``settings``:
    what makes outputs differ (recorded in ``_label_config.json``; a re-run with other settings is
    refused rather than mixing labels). ``ray_address``: an existing cluster (``auto``, ``HOST:PORT``)
    or ``None`` for a local Ray (reused when this process is already connected). ``save_features``:
    also write each image's ``<stem>.features.npz`` there (``features_storage``: its masks' storage).
    """
    from .atomicio import remove_stale_temps

    check_run_options(
        workers=workers,
        cpus_per_worker=cpus_per_worker,
        gpus_per_worker=gpus_per_worker,
        batch_size=batch_size,
        alpha=alpha,
        label_png=label_png,
    )
    out.mkdir(parents=True, exist_ok=True)
    check_settings(out, settings if settings is not None else {"segmenter": _jsonable(segmenter)})
    remove_stale_temps(out)
    todo = [it for it in items if not is_complete(out, it.stem)]
    summary = LabelSummary(total=len(items), skipped=len(items) - len(todo), labelled=0)
    start = time.perf_counter()
    errors: Dict[str, str] = {}
    if todo:
        summary.ray_start_seconds = connect(ray_address)
        worker = {
            "out": str(out),
            "alpha": alpha,
            "label_png": label_png,
            "features_storage": features_storage,
            "save_features": None if save_features is None else str(save_features),
        }
        try:
            results = _run_on_ray(
                todo, segmenter, workers, cpus_per_worker, gpus_per_worker, batch_size, worker, progress
            )
        except (SegmenterError, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 — Ray wraps an actor's failure in its own multi-line error
            raise SegmenterError(f"the Ray job failed: {ray_failure(e)}") from e
        errors = {stem: msg for stem, msg in results.items() if msg}
        summary.labelled = sum(1 for msg in results.values() if not msg)
    summary.seconds = time.perf_counter() - start
    remove_stale_temps(out)  # every task has finished: what is left was a killed writer's
    summary.errors = [
        {"image": it.name, "path": it.path, "error": errors[it.stem]} for it in items if it.stem in errors
    ]
    write_dataset_files(items, out, summary.errors)
    return summary


def connect(ray_address: Optional[str]) -> float:
    """Connect to Ray (``None``: a new local instance) unless connected already; returns the seconds taken."""
    ray = _ray()
    start = time.perf_counter()
    if not ray.is_initialized():
        ray.init(address=ray_address or "local", include_dashboard=False, configure_logging=False, log_to_driver=False)
    return time.perf_counter() - start


def _run_on_ray(
    todo, segmenter, workers, cpus_per_worker, gpus_per_worker, batch_size, worker, progress
) -> Dict[str, str]:
    """Run the actor pool over ``todo``; ``{stem: error or ""}`` for every image that came back."""
    ray = _ray()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    if workers is None:
        workers = default_workers(ray.cluster_resources(), cpus_per_worker, gpus_per_worker)
    workers = max(1, min(workers, math.ceil(len(todo) / batch_size)))
    rows = [{"path": it.path, "stem": it.stem} for it in todo]
    ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), max(workers * 4, 1)))
    ds = ds.map_batches(
        LabelWorker,
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=cpus_per_worker,
        num_gpus=gpus_per_worker or None,
        fn_constructor_kwargs={"segmenter": segmenter, **worker},
    )
    from tqdm import tqdm

    results: Dict[str, str] = {}
    with tqdm(total=len(rows), desc=f"label ({workers} workers)", unit="img", disable=not progress) as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for stem, error in zip(batch["stem"], batch["error"]):
                results[str(stem)] = str(error)
            bar.update(len(batch["stem"]))
            bar.set_postfix(errors=sum(1 for e in results.values() if e), refresh=False)
    return results


def default_workers(resources: Dict[str, float], cpus_per_worker: float, gpus_per_worker: float) -> int:
    """As many actors as the cluster's CPUs (or GPUs, when each worker takes some) allow."""
    if gpus_per_worker > 0:
        return max(1, int(resources.get("GPU", 0) // gpus_per_worker))
    return max(1, int(resources.get("CPU", 1) // max(cpus_per_worker, 1e-6)))


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise SegmenterError("sdk label runs on Ray Data: pip install 'zegformer-sdk[ray]'") from e
    return ray


# ---------------------------------------------------------------------------------------- dataset files
def check_settings(out: Path, settings: Dict[str, Any]) -> None:
    """Record the settings in ``out``; refuse to continue a directory labelled with other settings."""
    from .atomicio import write_json_atomic

    path = out / CONFIG_FILE
    if path.is_file():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            previous = None
        if previous is not None and previous != settings:
            changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
            raise SegmenterError(
                f"{out} holds labels made with other settings ({', '.join(changed)} differ; "
                f"see {path}); choose another --out, or delete it to start over"
            )
    write_json_atomic(path, settings)


def write_dataset_files(items: Sequence[Item], out: Path, errors: List[Dict[str, str]]) -> None:
    """``errors.jsonl`` (this run's failures), ``classes.txt`` and the COCO JSON of every complete image."""
    from .atomicio import write_json_atomic, write_text_atomic
    from .formats import coco_dataset

    write_text_atomic(out / ERRORS_FILE, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in errors))
    done = [(it, rec) for it in items if is_complete(out, it.stem) for rec in (read_record(out, it.stem),) if rec]
    if not done:
        return
    names = done[0][1]["class_names"]
    mixed = [it.name for it, rec in done if rec["class_names"] != names]
    if mixed:
        raise SegmenterError(
            f"{len(mixed)} records in {out} have another vocabulary (e.g. {mixed[0]}); "
            "label into a fresh --out directory"
        )
    write_text_atomic(out / CLASSES_FILE, "".join(n + "\n" for n in names))
    entries = coco_image_entries([rec for _, rec in done], [it.name for it, _ in done])
    write_json_atomic(out / COCO_FILE, coco_dataset(entries, names), indent=None)


def _jsonable(options: Dict[str, Any]) -> Dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()}


__all__ = ["Item", "LabelSummary", "LabelWorker", "read_inputs", "make_items", "run_label"]
