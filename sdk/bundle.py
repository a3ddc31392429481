"""Open a model bundle: read and check ``manifest.json``, verify every file before it is used.

See ``sdk/bundle_format.py`` for the format and ``sdk/manifest.py`` for the manifest's reader;
``Bundle.settings`` is its typed view (defaults filled in). A file is hashed (sha256) the first
time it is asked for, *before* anything deserialises it; a mismatch is a :class:`BundleError`
naming the file.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np

from . import bundle_format as fmt
from .errors import REEXPORT, BundleError
from .manifest import Settings, read_manifest
from .validate.arrays import check_background, check_embedding_rows, load_npy, load_npz
from .validate.paths import confined_path, root_dir

log = logging.getLogger(__name__)


class Bundle:
    """A verified view of a bundle directory (thread-safe)."""

    def __init__(self, root: Union[str, os.PathLike], verify: bool = True):
        self.root = root_dir(root)
        self.verify = verify
        self._verified: Dict[str, Path] = {}
        self._lock = threading.Lock()
        self.manifest = read_manifest(self.root)
        self.settings = Settings.from_manifest(self.manifest)

    # ------------------------------------------------------------------ files
    def file(self, relpath: str) -> Path:
        """Absolute path of a bundle file, after checking it exists and its sha256 matches."""
        with self._lock:
            if relpath in self._verified:
                return self._verified[relpath]
        path = confined_path(self.root, relpath, self.root / fmt.MANIFEST)
        expected = self.manifest["files"].get(relpath)
        if expected is None:
            raise BundleError(f"{relpath} is not listed in {self.root / fmt.MANIFEST}; {REEXPORT}")
        if not path.is_file():
            raise BundleError(f"bundle file {path} is missing; {REEXPORT}")
        if self.verify:
            try:
                actual = fmt.sha256_file(path)
            except OSError as e:
                raise BundleError(f"cannot read bundle file {path}: {e.strerror or e}") from e
            if actual != expected:
                raise BundleError(
                    f"bundle file {path} is corrupted or was modified: sha256 {actual[:16]}… "
                    f"!= {expected[:16]}… recorded in the manifest; {REEXPORT}"
                )
        with self._lock:
            self._verified[relpath] = path
        return path

    def has_graph(self, name: str) -> bool:
        entry = self.manifest["graphs"].get(name)
        return bool(entry) and entry.get("file") in self.manifest["files"]

    def graph(self, name: str) -> Dict[str, Any]:
        entry = self.manifest["graphs"].get(name)
        if not entry:
            raise BundleError(f"{self.root} has no {name!r} graph; {REEXPORT} (it writes {fmt.GRAPHS})")
        return entry

    def graph_file(self, name: str) -> Path:
        return self.file(self.graph(name)["file"])

    def background(self) -> np.ndarray:
        path = self.file(self.manifest.get("background", fmt.BACKGROUND))
        bg = load_npy(path)
        check_background(path, bg, self.model.get("embed_dim"))
        return np.ascontiguousarray(bg, dtype=np.float32).reshape(1, -1)

    def vocabulary_arrays(self, name: str) -> Dict[str, np.ndarray]:
        """The arrays of a built-in vocabulary ``vocab/<name>.npz``."""
        rel = self.vocabularies.get(name)
        if rel is None:
            raise KeyError(name)
        path = self.file(rel)
        data = load_npz(path, ("names", "text_features", "text_features_clip"))
        check_embedding_rows(path, data, self.model.get("embed_dim"))
        return data

    # ------------------------------------------------------------------ facts
    @property
    def model(self) -> Dict[str, Any]:
        """``manifest["model"]`` with the defaults filled in (see ``settings.model``)."""
        return self.settings.model.to_dict()

    @property
    def inference(self) -> Dict[str, Any]:
        """``manifest["inference"]`` with the defaults filled in (see ``settings.inference``)."""
        return self.settings.inference.to_dict()

    @property
    def preprocess(self) -> Dict[str, Any]:
        return self.settings.preprocess.to_dict()

    @property
    def vocabularies(self) -> Dict[str, str]:
        return dict(self.manifest.get("vocabularies") or {})

    @property
    def default_vocabulary(self) -> Optional[str]:
        return self.manifest.get("default_vocabulary") or next(iter(self.vocabularies), None)

    @property
    def seen_names(self) -> List[str]:
        classes = self.manifest["classes"]
        return [n for n, s in zip(classes["names"], classes["seen"]) if s]

    @property
    def engines(self) -> Dict[str, Dict[str, Any]]:
        return dict(self.manifest.get("engines") or {})

    def summary(self) -> str:
        """A human-readable summary of the manifest (``python -m sdk info``)."""
        m, inf, cls = self.settings.model, self.settings.inference, self.manifest["classes"]
        lines = [
            f"bundle     {self.root}",
            f"format     {self.manifest['format']} v{self.manifest['format_version']}, "
            f"created {self.manifest.get('created', '?')}",
            f"model      {m.num_queries} queries, embed dim {m.embed_dim}, "
            f"crop {m.crop_size}, scales seg {m.segment_logit_scale:.4g} clip {m.clip_logit_scale:.4g}",
            f"inference  min_size {inf.min_size}, max_size {inf.max_size}, pad "
            f"{inf.size_divisibility}, λ {inf.ensemble_lambda:.4g}, calibrate "
            f"{inf.gzero_calibrate}, dense {inf.dense_size}",
            f"classes    {len(cls['names'])} ({sum(map(bool, cls['seen']))} seen)",
            f"vocab      {', '.join(self.vocabularies) or '-'} (default {self.default_vocabulary})",
            f"graphs     {', '.join(n for n in fmt.GRAPHS if self.has_graph(n))}",
        ]
        for name, e in self.engines.items():
            lines.append(
                f"engine     {name}: {e.get('file')} TensorRT {e.get('tensorrt')} "
                f"{e.get('gpu')} sm{e.get('compute_capability')} {e.get('precision')}"
            )
        versions = self.manifest.get("versions") or {}
        lines.append("versions   " + ", ".join(f"{k} {v}" for k, v in versions.items()))
        return "\n".join(lines)
