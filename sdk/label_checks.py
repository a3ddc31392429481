"""Checks of ``python -m sdk label``, all made in the driver before Ray starts.

The input (a folder, a list file or a Parquet table, each read or refused in one line), ``--out``
(never a folder of input images, as for ``segment``), the job's options and everything an actor
would trip on (bundle, mode, sizes, precision, vocabulary), and one line for a Ray failure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .errors import OptionError, SegmenterError
from .outputs import LABEL_PNG_FORMATS

LIST_SUFFIXES = {".txt", ".lst", ".list", ".csv"}


def read_inputs(source: Path, column: Optional[str] = None, recursive: bool = False) -> List[Tuple[str, str]]:
    """``(path, name)`` of every image of a folder, a list file (one path a line) or a Parquet table.

    An unreadable list (not UTF-8, a NUL byte) or table (not Parquet, no such column, values that
    are not paths) is an :class:`OptionError` naming the file, before any work.
    """
    from .inputs import find_images

    if source.is_dir():
        return [(str(p), p.relative_to(source).as_posix()) for p in find_images([source], recursive)]
    if not source.is_file():
        raise OptionError(f"label input {source} does not exist; give a folder, a list file or a Parquet table")
    if source.suffix.lower() in (".parquet", ".pq"):
        names = _parquet_paths(source, column)
    elif source.suffix.lower() in LIST_SUFFIXES:
        from .validate.text import read_text_file

        lines = read_text_file(source, OptionError, "list file").splitlines()
        names = [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]
    else:
        raise OptionError(
            f"{source}: give a folder of images, a list file ({', '.join(sorted(LIST_SUFFIXES))}, "
            "one path a line) or a Parquet table (.parquet) with a column of paths"
        )
    base = source.parent
    return [(str(p if p.is_absolute() else base / p), name) for name in names for p in (Path(name),)]


def _parquet_paths(source: Path, column: Optional[str]) -> List[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise SegmenterError("reading a Parquet table needs pyarrow: pip install 'zegformer-sdk[ray]'") from e
    try:
        schema = pq.read_schema(source)
        candidates = (
            [column] if column else [c for c in ("path", "image", "file_name", "filename") if c in schema.names]
        )
        if not candidates or candidates[0] not in schema.names:
            raise OptionError(
                f"{source} has no column {column or 'path'!r} (columns: {schema.names}); "
                "name the column of image paths with --column"
            )
        values = pq.read_table(source, columns=candidates[:1]).column(0).to_pylist()
    except OptionError:
        raise
    except Exception as e:  # noqa: BLE001 — pyarrow raises ArrowInvalid, OSError, ... for a broken file
        detail = " ".join(str(e).split())[:200]
        raise OptionError(
            f"cannot read the Parquet table {source} ({type(e).__name__}: {detail}); is it a complete .parquet file?"
        ) from e
    names = []
    for row, value in enumerate(values):
        if value is None or value == "":
            continue
        if not isinstance(value, str) or "\x00" in value:
            raise OptionError(
                f"{source}: row {row} of column {candidates[0]!r} is {type(value).__name__} "
                f"{str(value)[:80]!r}, not a path; give a column of path strings with --column"
            )
        names.append(value)
    return names


def check_out(out: Path, source: Path, pairs: Sequence[Tuple[str, str]], recursive: bool) -> None:
    """Refuse an ``--out`` whose outputs could replace or mix with the input images, exactly as ``segment``
    does: the input folder (or inside it with ``--recursive``); for a list or table, a folder of its images."""
    from .outputs import check_out_dir

    if source.is_dir():
        check_out_dir(out, [source], recursive)
    else:
        check_out_dir(out, sorted({Path(path).parent for path, _ in pairs}), False)


def ray_failure(error: BaseException) -> str:
    """One line for a Ray failure: the innermost cause Ray carried over from the actor, not its traceback."""
    seen = set()
    while id(error) not in seen:
        seen.add(id(error))
        inner = getattr(error, "cause", None) or error.__cause__
        if not isinstance(inner, BaseException):
            break
        error = inner
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[-1] if lines else ""
    return f"{type(error).__name__}: {text[:300]}"


def check_run_options(
    *, workers: Any, cpus_per_worker: Any, gpus_per_worker: Any, batch_size: Any, alpha: Any, label_png: Any
) -> None:
    """The job's own options (:class:`OptionError`, before anything starts)."""
    from .validate.values import is_int, is_number

    checks = (
        ("workers", workers is None or (is_int(workers) and 1 <= workers <= 100_000), "an integer >= 1"),
        ("cpus-per-worker", is_number(cpus_per_worker) and 0 < cpus_per_worker <= 1024, "a number > 0"),
        ("gpus-per-worker", is_number(gpus_per_worker) and 0 <= gpus_per_worker <= 64, "a number >= 0"),
        ("batch-size", is_int(batch_size) and 1 <= batch_size <= 100_000, "an integer >= 1"),
        ("alpha", is_number(alpha) and 0 <= alpha <= 1, "a number in [0, 1]"),
        ("label-png", label_png in LABEL_PNG_FORMATS, f"one of {LABEL_PNG_FORMATS}"),
    )
    for name, ok, what in checks:
        if not ok:
            raise OptionError(f"--{name} must be {what}")


def check_job(segmenter: Dict[str, Any]) -> None:
    """Find in the driver, before Ray starts, what every actor would trip on: the bundle (manifest and
    every file's hash), the mode, sizes, device, precision and vocabulary — each a one-line typed error.

    The vocabulary is resolved by a CPU Segmenter here (embedding a new one fills the disk cache the
    local actors then read). With ``--device cpu`` the backend itself is created with the precision
    (a missing library or an unsupported tier is found here); otherwise the actors' device is not
    known here, so the precision is parsed and its graph files looked up.
    """
    from .backends import create_backend, parse_device
    from .precision import PrecisionPlan, missing_files, parse
    from .segmenter import Segmenter

    device, spec = segmenter.get("device", "auto"), segmenter.get("precision")
    if not isinstance(device, str):
        raise OptionError(f"--device {device!r} is invalid: give auto, cpu, cuda or cuda:N")
    parse_device(device)
    request = parse(spec)  # a malformed precision is an OptionError before any file is read
    same = {k: segmenter[k] for k in ("mode", "min_size", "prune_threshold", "vocabulary") if k in segmenter}
    seg = Segmenter(segmenter["bundle_dir"], backend="onnxruntime", device="cpu", threads=1, **same)
    bundle = seg.bundle
    for rel in bundle.manifest["files"]:
        bundle.file(rel)
    if device.strip().lower() == "cpu":
        create_backend(bundle, segmenter.get("backend", "auto"), "cpu", {"precision": spec, "threads": 1})
        return
    if request.default == "auto":
        return
    plan = PrecisionPlan.of_request(request)
    for tier in plan.uses:
        missing = missing_files(bundle, tier, [g for g, t in plan.graphs if t == tier])
        if missing:
            raise OptionError(
                f"--precision {spec}: {bundle.root} has no {tier} graphs for {missing}; re-export "
                f"with `python -m export ... --{tier}`, or choose another precision"
            )
