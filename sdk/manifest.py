"""``manifest.json``: its typed sections with their defaults, the one reader and the one writer.

The exporter builds a manifest with :func:`new_manifest` and writes it with :func:`write_manifest`;
the SDK (and ``export.tensorrt``) read it with :func:`read_manifest`. A key missing from an older
manifest takes the default written here, and nowhere else. The format is documented in
``sdk/bundle_format.py``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from . import bundle_format as fmt
from . import constants as C
from .atomicio import write_json_atomic
from .errors import REEXPORT, BundleError
from .precision import FILE_TIERS, PRECISIONS

PathLike = Union[str, os.PathLike]


class _Section:
    """A manifest section: ``from_dict`` fills the defaults and ignores unknown keys."""

    __dataclass_fields__: ClassVar[Dict[str, Any]]  # every section is a dataclass (the type checker's view)

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]]):
        data = dict(data or {})
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except TypeError as e:  # a required key is missing
            raise BundleError(f"manifest section {cls.__name__}: {e}; {REEXPORT}") from e

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ModelInfo(_Section):
    """``manifest["model"]``: the network's shapes and logit scales."""

    segment_logit_scale: float
    clip_logit_scale: float
    num_queries: int = 100
    embed_dim: int = 512
    mask_stride: int = C.MASK_STRIDE
    size_divisibility: int = C.SIZE_DIVISIBILITY
    crop_size: int = C.CROP_SIZE
    config: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InferenceSettings(_Section):
    """``manifest["inference"]``: the test-time settings (official values by default)."""

    min_size: Optional[int] = C.MIN_SIZE
    max_size: int = C.MAX_SIZE
    size_divisibility: int = C.SIZE_DIVISIBILITY
    mask_threshold: float = C.MASK_THRESHOLD
    crop_size: int = C.CROP_SIZE
    ensemble_lambda: float = C.ENSEMBLE_LAMBDA
    gzero_calibrate: float = C.GZERO_CALIBRATE
    dense_size: Optional[List[int]] = None  # clip_dense input (H, W); None: (crop_size, crop_size)


@dataclass(frozen=True)
class PreprocessInfo(_Section):
    """``manifest["preprocess"]``: pixel statistics (RGB, 0..255 scale)."""

    pixel_mean: List[float]
    pixel_std: List[float]
    clip_pixel_mean: List[float]
    clip_pixel_std: List[float]


@dataclass(frozen=True)
class TokenizerInfo(_Section):
    """``manifest["tokenizer"]``: the BPE vocabulary file and the context length."""

    file: str = fmt.TOKENIZER_VOCAB
    context_length: int = C.CONTEXT_LENGTH


@dataclass(frozen=True)
class Settings:
    """The typed view of a manifest's sections (defaults filled in)."""

    model: ModelInfo
    inference: InferenceSettings
    preprocess: PreprocessInfo
    tokenizer: TokenizerInfo

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> Settings:
        return cls(
            ModelInfo.from_dict(manifest.get("model")),
            InferenceSettings.from_dict(manifest.get("inference")),
            PreprocessInfo.from_dict(manifest.get("preprocess")),
            TokenizerInfo.from_dict(manifest.get("tokenizer")),
        )

    @property
    def crop_size(self) -> int:
        return int(self.inference.crop_size or self.model.crop_size)

    @property
    def dense_size(self) -> Tuple[int, int]:
        size = self.inference.dense_size or (self.crop_size, self.crop_size)
        return int(size[0]), int(size[1])


# ---------------------------------------------------------------------------- writing
def new_manifest(
    model: ModelInfo,
    preprocess: PreprocessInfo,
    inference: InferenceSettings,
    tokenizer: TokenizerInfo,
    classes: Mapping[str, Sequence],
    **rest: Any,
) -> Dict[str, Any]:
    """A manifest dict (``files`` is filled in by :func:`write_manifest`); ``rest`` adds the other keys."""
    return {
        "format": fmt.FORMAT,
        "format_version": fmt.FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": model.to_dict(),
        "preprocess": preprocess.to_dict(),
        "inference": inference.to_dict(),
        "tokenizer": tokenizer.to_dict(),
        "classes": {"names": list(classes["names"]), "seen": [bool(s) for s in classes["seen"]]},
        "background": fmt.BACKGROUND,
        "files": {},
        "engines": {},
        **rest,
    }


def file_hashes(bundle_dir: PathLike) -> Dict[str, str]:
    """``{relative posix path: sha256}`` of every file of the bundle except the manifest.

    Hidden paths (a component starting with ``.``: temporary files being written) are skipped.
    """
    root = Path(bundle_dir)
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if rel.as_posix() != fmt.MANIFEST and not any(part.startswith(".") for part in rel.parts):
            out[rel.as_posix()] = fmt.sha256_file(path)
    return out


def write_manifest(bundle_dir: PathLike, manifest: Mapping[str, Any]) -> Dict[str, Any]:
    """Refresh ``manifest["files"]`` from the directory and write ``manifest.json`` atomically."""
    manifest = dict(manifest)
    manifest["files"] = file_hashes(bundle_dir)
    write_json_atomic(Path(bundle_dir) / fmt.MANIFEST, manifest)
    return manifest


# ---------------------------------------------------------------------------- reading
def read_manifest(bundle_dir: PathLike) -> Dict[str, Any]:
    """Load ``manifest.json`` and check its format, version and sections (:class:`BundleError`)."""
    root = Path(bundle_dir)
    path = root / fmt.MANIFEST
    if not root.is_dir():
        raise BundleError(f"bundle directory not found: {root}")
    if not path.is_file():
        raise BundleError(f"{path} is missing: {root} is not a model bundle; {REEXPORT}")
    from .validate.paths import confined_path
    from .validate.schema import check_manifest_schema, read_manifest_text

    confined_path(root, fmt.MANIFEST, path)
    try:
        manifest = json.loads(read_manifest_text(path))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise BundleError(f"{path} is not valid JSON ({e}); {REEXPORT}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != fmt.FORMAT:
        raise BundleError(f"{path} is not a {fmt.FORMAT} manifest; {REEXPORT}")
    version = manifest.get("format_version")
    if version != fmt.FORMAT_VERSION:
        raise BundleError(
            f"{root} has bundle format version {version!r}; this version reads "
            f"{fmt.FORMAT_VERSION}: upgrade zegformer-sdk or {REEXPORT} with this version"
        )
    manifest = check_manifest_schema(manifest, path)
    check_runtime_sections(manifest, path)
    Settings.from_manifest(manifest)  # the typed sections parse
    return manifest


# ---------------------------------------------------------------------------- the sections backends read
def _entry_fields() -> Dict[str, Dict[str, tuple]]:
    """key -> (required, check, what it must be) for each kind of entry the backends read."""
    from .validate.paths import is_relpath
    from .validate.schema import SHA256
    from .validate.values import dict_of, is_dict, is_int, is_number, is_str, list_of, optional

    tier = lambda v: v in PRECISIONS  # noqa: E731
    is_text = lambda v: isinstance(v, str)  # noqa: E731
    shape = lambda v: isinstance(v, str) or list_of(lambda d: is_int(d) or isinstance(d, str))(v)  # noqa: E731
    return {
        "graph": {
            "file": (True, is_relpath, "a relative path inside the bundle"),
            "inputs": (False, dict_of(shape), "an object {name: shape}"),
            "outputs": (False, dict_of(shape), "an object {name: shape}"),
            "precision": (False, tier, f"one of {PRECISIONS}"),
            "variants": (False, is_dict, "an object {tier: {file, precision, ...}}"),
        },
        "variant": {
            "file": (True, is_relpath, "a relative path inside the bundle"),
            "precision": (False, tier, f"one of {PRECISIONS}"),
            "calibration": (False, optional(is_dict), "an object or null"),
        },
        "engine": {
            "file": (True, is_relpath, "a relative path inside the bundle"),
            "precision": (False, tier, f"one of {PRECISIONS}"),
            "tensorrt": (False, is_text, "a version string"),
            "gpu": (False, is_text, "a string"),
            "cuda": (False, optional(lambda v: is_text(v) or is_number(v)), "a version string"),
            "compute_capability": (False, lambda v: is_text(v) or is_number(v), "a string such as '8.9'"),
            "num_profiles": (False, lambda v: is_int(v) and 1 <= v <= 64, "an integer in 1..64"),
            "profiles": (False, dict_of(is_dict), "an object {input: {min, opt, max}}"),
            "onnx_file": (False, optional(is_relpath), "a relative path inside the bundle"),
            "onnx_sha256": (False, optional(lambda v: is_text(v) and bool(SHA256.fullmatch(v))), "a sha256 hex digest"),
        },
        "precision": {
            "agreement": (
                False,
                dict_of(dict_of(lambda v: is_number(v) and 0 <= v <= 1)),
                "an object {tier: {backend: fraction in [0, 1]}}",
            ),
            "bar": (False, lambda v: is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
            "reference": (False, is_text, "a string"),
            "measured_on": (False, optional(is_dict), "an object"),
        },
        "checkpoint": {
            "path": (False, optional(is_str), "a path string or null"),
            "sha256": (
                False,
                optional(lambda v: is_text(v) and bool(SHA256.fullmatch(v))),
                "a sha256 hex digest or null",
            ),
        },
        "top": {
            "created": (False, optional(is_text), "an ISO-8601 time string"),
            "precision": (False, optional(is_dict), "an object {agreement, bar, ...}"),
            "versions": (
                False,
                optional(dict_of(lambda v: v is None or isinstance(v, (str, int, float)))),
                "an object {package: version}",
            ),
        },
    }


def check_runtime_sections(manifest: Dict[str, Any], path: PathLike) -> None:
    """Types of every key the backends and precision rules read: ``graphs`` (``precision``,
    ``variants`` and each variant's ``file``), ``engines``, ``precision`` and ``checkpoint``.

    Complements :func:`sdk.validate.check_manifest_schema` (the other sections); a wrong type is a
    :class:`BundleError` naming the key and ``manifest.json``, never an error deep in a backend.
    """
    fields = _entry_fields()

    def check(node: Any, kind: str, where: str) -> None:
        if not isinstance(node, dict):
            raise BundleError(f'{path}: "{where}" must be an object; {REEXPORT}')
        for key, (required, ok, what) in fields[kind].items():
            name = f"{where}.{key}" if where else key
            if key not in node:
                if required:
                    raise BundleError(f'{path}: "{name}" must be {what} (it is missing); {REEXPORT}')
            elif not ok(node[key]):
                raise BundleError(f'{path}: "{name}" must be {what}, not {_shown(node[key])}; {REEXPORT}')

    check(manifest, "top", "")
    for name, entry in manifest["graphs"].items():
        check(entry, "graph", f"graphs.{name}")
        for tier, variant in (entry.get("variants") or {}).items():
            where = f"graphs.{name}.variants.{tier}"
            if tier not in FILE_TIERS:
                raise BundleError(f'{path}: "{where}": a variant\'s tier must be one of {FILE_TIERS}; {REEXPORT}')
            check(variant, "variant", where)
            if variant.get("precision", tier) != tier:
                raise BundleError(f'{path}: "{where}.precision" is {variant["precision"]!r}, not {tier!r}; {REEXPORT}')
    for name, entry in (manifest.get("engines") or {}).items():
        check(entry, "engine", f"engines.{name}")
    if manifest.get("precision") is not None:
        check(manifest["precision"], "precision", "precision")
    if manifest.get("checkpoint") is not None:
        check(manifest["checkpoint"], "checkpoint", "checkpoint")


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return f"{type(value).__name__} {text[:60] + ('…' if len(text) > 60 else '')}"


def is_bundle(path: PathLike) -> bool:
    """True for a directory holding a manifest of this format (any version)."""
    try:
        data = json.loads((Path(path) / fmt.MANIFEST).read_text(encoding="utf-8"))
        return isinstance(data, dict) and data.get("format") == fmt.FORMAT
    except (OSError, ValueError):
        return False
