"""The manifest's schema: types, required keys, ranges and confined paths of ``manifest.json``."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Dict, Union

from ..errors import REEXPORT, BundleError
from .options import MAX_SIDE
from .paths import is_relpath
from .values import dict_of, int_in, is_dict, is_int, is_number, is_pos_number, is_str, list_of, optional

MAX_MANIFEST_BYTES = 64 << 20
SHA256 = re.compile(r"[0-9a-f]{64}")

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
    "preprocess": {
        k: (True, list_of(is_number, 3), "a list of 3 finite numbers") for k in ("pixel_mean", "clip_pixel_mean")
    },
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
FIELDS["preprocess"].update(
    {
        k: (True, list_of(is_pos_number, 3), "a list of 3 positive finite numbers")
        for k in ("pixel_std", "clip_pixel_std")
    }
)


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


def read_manifest_text(path: Path) -> str:
    """The manifest's text, refusing absurd sizes before reading."""
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{path} is larger than {MAX_MANIFEST_BYTES >> 20} MiB: not a manifest; {REEXPORT}")
    return path.read_text(encoding="utf-8-sig")
