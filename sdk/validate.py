"""Checks at the SDK's boundary: manifest schema, paths inside a bundle, bundle arrays, options.

Every check raises the SDK's typed errors (``sdk.errors``) with a message that names the file
and says what to do; nothing here deserialises an untrusted file beyond ``json``/``numpy``
with pickles off.
"""
from __future__ import annotations

import math
import numbers
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Dict, Iterable, Optional, Union

import numpy as np

from .errors import BundleError, OptionError

REEXPORT = "re-export the bundle (python -m export --checkpoint MODEL.pth --out DIR)"
MAX_MANIFEST_BYTES = 64 << 20
MAX_SIDE = 16384  # largest min_size/max_size accepted (a bigger side does not fit any backend)
SHA256 = re.compile(r"[0-9a-f]{64}")

Check = Callable[[Any], bool]


# ---------------------------------------------------------------- primitive checks
def is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def int_in(lo: int, hi: int) -> Check:
    return lambda v: is_int(v) and lo <= v <= hi


def is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def is_pos_number(v: Any) -> bool:
    return is_number(v) and v > 0


def is_str(v: Any) -> bool:
    return isinstance(v, str) and bool(v)


def list_of(check: Check, length: Optional[int] = None) -> Check:
    return lambda v: (isinstance(v, list) and (length is None or len(v) == length)
                      and all(check(x) for x in v))


def dict_of(check: Check) -> Check:
    return lambda v: isinstance(v, dict) and all(isinstance(k, str) and check(x) for k, x in v.items())


def optional(check: Check) -> Check:
    return lambda v: v is None or check(v)


def is_dict(v: Any) -> bool:
    return isinstance(v, dict)


def is_relpath(v: Any) -> bool:
    return isinstance(v, str) and lexically_confined(v)


# ---------------------------------------------------------------- the manifest schema
# (section, key) -> (required, check, what the value must be). Sections are required dicts.
SECTIONS = ("model", "preprocess", "inference", "classes", "graphs", "files")
FIELDS: Dict[str, Dict[str, tuple]] = {
    "": {
        "format": (True, is_str, "a string"),
        "format_version": (True, is_int, "an integer"),
        "default_vocabulary": (False, optional(is_str), "a vocabulary name or null"),
        "vocabularies": (False, optional(dict_of(is_relpath)), "{name: relative path inside the bundle}"),
        "tokenizer": (False, optional(is_dict), "an object"),
        "background": (False, is_relpath, "a relative path inside the bundle"),
        "engines": (False, optional(dict_of(is_dict)), "{graph: object} or null"),
        "versions": (False, optional(is_dict), "an object"),
        "checkpoint": (False, optional(is_dict), "an object"),
    },
    "model": {
        "segment_logit_scale": (True, is_pos_number, "a positive finite number"),
        "clip_logit_scale": (True, is_pos_number, "a positive finite number"),
        "num_queries": (False, int_in(1, 10000), "an integer in 1..10000"),
        "embed_dim": (False, int_in(1, 65536), "an integer in 1..65536"),
        "mask_stride": (False, int_in(1, 64), "an integer in 1..64"),
        "size_divisibility": (False, int_in(1, 1024), "an integer in 1..1024"),
        "crop_size": (False, int_in(1, 4096), "an integer in 1..4096"),
        "config": (False, optional(is_dict), "an object"),
    },
    "preprocess": {k: (True, list_of(is_number, 3), "a list of 3 finite numbers")
                   for k in ("pixel_mean", "clip_pixel_mean")},
    "inference": {
        "min_size": (False, optional(int_in(1, MAX_SIDE)), f"an integer in 1..{MAX_SIDE} or null"),
        "max_size": (False, int_in(1, MAX_SIDE), f"an integer in 1..{MAX_SIDE}"),
        "size_divisibility": (False, int_in(1, 1024), "an integer in 1..1024"),
        "crop_size": (False, int_in(1, 4096), "an integer in 1..4096"),
        "mask_threshold": (False, is_number, "a finite number"),
        "ensemble_lambda": (False, lambda v: is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
        "gzero_calibrate": (False, is_number, "a finite number"),
        "dense_size": (False, optional(list_of(int_in(1, 8192), 2)), "[H, W] integers in 1..8192, or null"),
    },
    "classes": {
        "names": (True, list_of(is_str), "a list of non-empty strings"),
        "seen": (True, list_of(lambda v: isinstance(v, bool)), "a list of booleans"),
    },
    "graphs": {},
    "files": {},
}
FIELDS["preprocess"].update({k: (True, list_of(is_pos_number, 3), "a list of 3 positive finite numbers")
                             for k in ("pixel_std", "clip_pixel_std")})


def check_manifest_schema(manifest: Any, path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Types, required keys and path confinement of a parsed ``manifest.json``; returns it.

    Raises :class:`BundleError` naming the key and the file on the first problem.
    """
    def fail(key: str, what: str) -> None:
        raise BundleError(f"{path}: {key} must be {what}; {REEXPORT}")

    if not isinstance(manifest, dict):
        fail("the manifest", "a JSON object")
    for section in SECTIONS:
        if not isinstance(manifest.get(section), dict):
            fail(f'"{section}"', "an object" + (" (it is missing)" if section not in manifest else ""))
    for section, fields in FIELDS.items():
        node = manifest if section == "" else manifest[section]
        for key, (required, check, what) in fields.items():
            name = f'"{section}.{key}"' if section else f'"{key}"'
            if key not in node:
                if required:
                    fail(name, what + " (it is missing)")
                continue
            if not check(node[key]):
                fail(name, what)
    classes = manifest["classes"]
    if len(classes["names"]) != len(classes["seen"]):
        fail('"classes.seen"', f"as long as classes.names ({len(classes['names'])})")
    for rel, digest in manifest["files"].items():
        if not is_relpath(rel):
            fail(f'the "files" entry {rel!r}', "a relative path inside the bundle")
        if not (isinstance(digest, str) and SHA256.fullmatch(digest)):
            fail(f'"files.{rel}"', "a sha256 hex digest")
    for name, entry in manifest["graphs"].items():
        if not isinstance(entry, dict) or not is_relpath(entry.get("file")):
            fail(f'"graphs.{name}"', 'an object whose "file" is a relative path inside the bundle')
        for io in ("inputs", "outputs"):
            if io in entry and not dict_of(lambda v: True)(entry[io]):
                fail(f'"graphs.{name}.{io}"', "an object {name: shape}")
    default = manifest.get("default_vocabulary")
    if default is not None and default not in (manifest.get("vocabularies") or {}):
        fail('"default_vocabulary"', "one of the bundle's vocabularies")
    tok = manifest.get("tokenizer") or {}
    if "file" in tok and not is_relpath(tok["file"]):
        fail('"tokenizer.file"', "a relative path inside the bundle")
    if "context_length" in tok and not int_in(3, 1024)(tok["context_length"]):
        fail('"tokenizer.context_length"', "an integer in 3..1024")
    for name, entry in (manifest.get("engines") or {}).items():
        if "file" in entry and not is_relpath(entry["file"]):
            fail(f'"engines.{name}.file"', "a relative path inside the bundle")
    return manifest


# ---------------------------------------------------------------- paths inside the bundle
def root_dir(root: Any) -> Path:
    """The absolute, resolved bundle directory (a bad path type or a symlink loop is a BundleError)."""
    if not isinstance(root, (str, os.PathLike)):
        raise BundleError(f"bundle_dir must be a path, not {type(root).__name__}")
    try:
        return Path(root).expanduser().resolve()
    except (OSError, RuntimeError, ValueError) as e:
        raise BundleError(f"bundle directory {root} cannot be resolved ({e})") from e


def read_manifest_text(path: Path) -> str:
    """The manifest's text, refusing absurd sizes before reading."""
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{path} is larger than {MAX_MANIFEST_BYTES >> 20} MiB: not a manifest; {REEXPORT}")
    return path.read_text(encoding="utf-8-sig")


def lexically_confined(rel: str) -> bool:
    """True for a non-empty relative POSIX path with no ``..``, drive, backslash or NUL."""
    if not rel or "\x00" in rel or "\\" in rel or rel.startswith("/") or re.match(r"[A-Za-z]:", rel):
        return False
    parts = PurePosixPath(rel).parts
    return bool(parts) and all(p not in ("..", "") for p in parts)


def confined_path(root: Path, rel: str, manifest_path: Union[str, os.PathLike]) -> Path:
    """``root / rel`` after checking it stays inside ``root`` once symlinks are resolved."""
    if not isinstance(rel, str) or not lexically_confined(rel):
        raise BundleError(f"{manifest_path} names the file {rel!r}, which is not a relative path inside "
                          f"the bundle; refusing to read it; {REEXPORT}")
    path = root / rel
    try:
        real = path.resolve(strict=False)
        real_root = root.resolve(strict=True)
    except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop (Python < 3.13)
        raise BundleError(f"bundle file {path} cannot be resolved ({e}: a symlink loop?); {REEXPORT}") from e
    if real != real_root and real_root not in real.parents:
        raise BundleError(f"bundle file {path} is a symlink to {real}, outside the bundle; refusing to "
                          f"read it; {REEXPORT}")
    return path


# ---------------------------------------------------------------- arrays of the bundle
def load_npy(path: Path) -> np.ndarray:
    """A ``.npy`` of the bundle (no pickles); a broken file is a :class:`BundleError` naming it."""
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:  # numpy raises ValueError/OSError/EOFError/... for broken files
        raise BundleError(f"bundle file {path} is not a readable .npy array ({type(e).__name__}: {e}); "
                          f"{REEXPORT}") from e


def load_npz(path: Path, required: Iterable[str]) -> Dict[str, np.ndarray]:
    """All arrays of a ``.npz`` of the bundle, checking ``required`` keys are present."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as e:  # BadZipFile, ValueError (pickled objects), OSError, EOFError, ...
        raise BundleError(f"bundle file {path} is not a readable .npz archive ({type(e).__name__}: {e}); "
                          f"{REEXPORT}") from e
    missing = sorted(set(required) - set(data))
    if missing:
        raise BundleError(f"bundle file {path} lacks the arrays {missing}; {REEXPORT}")
    return data


def check_embedding_rows(path: Path, data: Dict[str, np.ndarray], dim: Optional[int]) -> None:
    """A vocabulary archive: ``names [K]`` strings, both feature sets ``[K, dim]`` and finite."""
    names = data["names"]
    if names.ndim != 1 or names.dtype.kind not in "US" or len(names) == 0:
        raise BundleError(f"bundle file {path}: names must be a non-empty 1-D string array; {REEXPORT}")
    for key in ("text_features", "text_features_clip"):
        arr = data[key]
        want = (len(names), dim if dim else (arr.shape[-1] if arr.ndim == 2 else -1))
        if arr.shape != want or arr.dtype.kind != "f" or not np.isfinite(arr).all():
            raise BundleError(f"bundle file {path}: {key} has shape {arr.shape} ({arr.dtype}); expected finite "
                              f"floats of shape {want}; {REEXPORT}")


def cached_embeddings_ok(hit: Any, rows: int, dim: Optional[int]) -> bool:
    """A disk-cache entry is two finite ``[rows, dim]`` float arrays (else it is rebuilt)."""
    a, b = hit
    want = (rows, dim or (a.shape[-1] if a.ndim == 2 else -1))
    return a.shape == want and b.shape == want and bool(np.isfinite(a).all() and np.isfinite(b).all())


def as_features(label: str, value: Any, shape: tuple, error: type) -> np.ndarray:
    """User-given text embeddings → contiguous float32 of ``shape``, finite (else ``error``)."""
    try:
        arr = np.ascontiguousarray(value, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise error(f"{label} is not an array of numbers ({e})") from e
    if arr.shape != shape:
        raise error(f"{label} has shape {arr.shape}; expected {shape}")
    if not np.isfinite(arr).all():
        raise error(f"{label} holds NaN or infinite values")
    return arr


def check_background(path: Path, bg: np.ndarray, dim: Optional[int]) -> None:
    if bg.dtype.kind != "f" or bg.size == 0 or (dim and bg.size != dim) or not np.isfinite(bg).all():
        raise BundleError(f"bundle file {path} holds a {bg.dtype} array of shape {bg.shape}; expected "
                          f"{dim or 'D'} finite floats (the background embedding); {REEXPORT}")


def graph_load_error(path: Path, error: Exception) -> Exception:
    """ONNX Runtime's failure to open a (hash-verified) graph: the file's fault unless it is the device's."""
    from .errors import BackendError

    text = " ".join(str(error).split())[:300]
    if any(w in text for w in ("CUDA", "cuda", "provider", "Provider", "out of memory")):
        return BackendError(f"ONNX Runtime cannot load {path} on this device: {text}")
    return BundleError(f"bundle file {path} is not a graph this ONNX Runtime can load ({text}); {REEXPORT}")


# ---------------------------------------------------------------- Segmenter options
def _int_option(name: str, value: Any, low: int, high: int, allow_none: bool = True) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if not is_int(value) or not low <= int(value) <= high:
        raise OptionError(f"{name}={value!r} is invalid: give an integer in {low}..{high}"
                          + (" or None" if allow_none else ""))
    return int(value)


def check_sizes(min_size: Any, max_size: Any) -> None:
    """``min_size``: None, "bundle" or 1..16384; ``max_size``: None or 1..16384 (typed errors)."""
    if not (min_size is None or (isinstance(min_size, str) and min_size == "bundle")):
        _int_option("min_size", min_size, 1, MAX_SIDE)
    _int_option("max_size", max_size, 1, MAX_SIDE)


def check_options(*, min_size: Any = None, max_size: Any = None, threads: Any = None, clip_batch: Any = None,
                  prune_threshold: Any = 0.02, text_batch: Any = 64, backend: Any = "auto",
                  device: Any = "auto", mode: Any = "cropmask", bgr: Any = False, cache_dir: Any = None,
                  checkpoint: Any = None) -> None:
    """Reject bad :class:`~sdk.Segmenter` options at construction with :class:`OptionError`."""
    check_sizes(min_size, max_size)
    _int_option("threads", threads, 0, 1024)
    _int_option("clip_batch", clip_batch, 1, 1 << 16)
    _int_option("text_batch", text_batch, 1, 1 << 16, allow_none=False)
    if not is_number(prune_threshold) or float(prune_threshold) < 0.0:
        raise OptionError(f"prune_threshold={prune_threshold!r} is invalid: give a finite number >= 0")
    for name, value in (("backend", backend), ("device", device), ("mode", mode)):
        if not isinstance(value, str):
            raise OptionError(f"{name}={value!r} is invalid: give a string")
    if not isinstance(bgr, (bool, np.bool_)):
        raise OptionError(f"bgr={bgr!r} is invalid: give True or False")
    if not (cache_dir is None or isinstance(cache_dir, (bool, str, os.PathLike))):
        raise OptionError(f"cache_dir={cache_dir!r} is invalid: give a directory, None or False")
    if not (checkpoint is None or isinstance(checkpoint, (str, os.PathLike))):
        raise OptionError(f"checkpoint={checkpoint!r} is invalid: give a path or None")


# ---------------------------------------------------------------- text files and names
MAX_TEXT_BYTES = 16 << 20
MAX_NAME_CHARS = 1000


def read_text_file(path: Union[str, os.PathLike], error: type, what: str = "file") -> str:
    """A UTF-8 text file (BOM and CRLF tolerated) as ``str``; any problem is ``error`` naming the file."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_TEXT_BYTES:
            raise error(f"{what} {path} is larger than {MAX_TEXT_BYTES >> 20} MiB; is it the right file?")
        data = path.read_bytes()
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror or e}") from e
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise error(f"{what} {path} is not UTF-8 text (byte {e.start}, line {line}); save it as UTF-8") from e
    if "\x00" in text:
        raise error(f"{what} {path} contains NUL characters; it is not a text file")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def check_name_text(name: str, index: int, error: type) -> None:
    """A class name is encodable (no lone surrogates) and of a sane length."""
    if len(name) > MAX_NAME_CHARS:
        raise error(f"class name #{index} has {len(name)} characters; at most {MAX_NAME_CHARS} are supported")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as e:
        raise error(f"class name #{index} {name!r} is not valid Unicode text (a lone surrogate at "
                    f"character {e.start}); pass real characters") from e
