"""Vocabularies: built-in ones from the bundle, and names embedded at run time.

Run-time names go through the torch-free tokenizer, ``clip_text.onnx`` (prompts cut to their
length, ``sdk.text_batches``) and the prompt rules of ``sdk.prompts`` (the exporter's rules). The
templates are those recorded in the bundle's default vocabulary: ``templates`` for the segment
classifier, ``templates_clip`` for the CLIP branch.

Embeddings are cached in memory (LRU) and on disk (``ZEGFORMER_CACHE`` or
``~/.cache/zegformer-sdk``; ``ZEGFORMER_CACHE=off`` disables it), keyed by the sha256 of
``clip_text.onnx``, the names and the templates. Disk writes are atomic.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .atomicio import write_npz_atomic
from .bundle import REEXPORT, Bundle
from .cache import cache_root
from .classnames import validate_names
from .errors import BundleError, VocabularyError
from .prompts import expand_prompts, pool_class_embeddings
from .text_batches import ROUND_TO, Progress, dynamic_length, encode_cut
from .validate.arrays import as_features, cached_embeddings_ok

log = logging.getLogger(__name__)
CACHE_VERSION = 1
VocabularySpec = Union[None, str, os.PathLike, Sequence[str], "Vocabulary"]


@dataclass(frozen=True)
class Vocabulary:
    """Class names with their two text-embedding sets and seen flags (immutable)."""

    names: Tuple[str, ...]
    text_features: np.ndarray  # [K,D] segment classifier
    text_features_clip: np.ndarray  # [K,D] CLIP branch
    seen: np.ndarray  # [K] bool: equal to a training (seen) class
    source: str = "runtime"

    def __len__(self) -> int:
        return len(self.names)


class EmbeddingCache:
    """Memory LRU + optional on-disk store of ``(text_features, text_features_clip)``."""

    def __init__(self, directory: Optional[Path], capacity: int = 32):
        self.directory = directory
        self.capacity = capacity
        self.dim: Optional[int] = None  # the embedding width a cache file must have (set by the store)
        self._memory: OrderedDict[str, Tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, names: Sequence[str]) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        with self._lock:
            hit = self._memory.get(key)
            if hit is not None:
                self._memory.move_to_end(key)
                return hit
        hit = self._read(key, names)
        if hit is not None:
            self._remember(key, hit)
        return hit

    def put(self, key: str, names: Sequence[str], value: Tuple[np.ndarray, np.ndarray]) -> None:
        self._remember(key, value)
        self._write(key, names, value)

    def _remember(self, key: str, value: Tuple[np.ndarray, np.ndarray]) -> None:
        with self._lock:
            self._memory[key] = value
            self._memory.move_to_end(key)
            while len(self._memory) > self.capacity:
                self._memory.popitem(last=False)

    def _path(self, key: str) -> Optional[Path]:
        return None if self.directory is None else self.directory / "text" / f"{key}.npz"

    def _read(self, key: str, names: Sequence[str]) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                if [str(n) for n in z["names"]] != list(names):
                    return None
                hit = z["text_features"].astype(np.float32), z["text_features_clip"].astype(np.float32)
            if not cached_embeddings_ok(hit, len(names), self.dim):
                log.warning("rebuilding the embedding cache file %s: wrong shape or non-finite values", path)
                return None
            return hit
        except Exception as e:  # a truncated or foreign file: ignore it, it will be rewritten
            log.warning("ignoring unreadable embedding cache file %s: %s", path, e)
            return None

    def _write(self, key: str, names: Sequence[str], value: Tuple[np.ndarray, np.ndarray]) -> None:
        path = self._path(key)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_npz_atomic(
                path, {"names": np.array(list(names)), "text_features": value[0], "text_features_clip": value[1]}
            )
        except OSError as e:
            log.warning("cannot write the embedding cache %s: %s", path, e)


class VocabularyStore:
    """Turns vocabulary specs into :class:`Vocabulary` objects (thread-safe)."""

    def __init__(
        self,
        bundle: Bundle,
        text_encoder: Callable[[np.ndarray], np.ndarray],
        cache_dir: Union[None, bool, str, os.PathLike] = None,
        text_batch: int = 64,
        reuse_builtin: bool = True,
        memory_capacity: int = 32,
        progress: Progress = None,
        text_tier: str = "fp32",
    ):
        self.bundle = bundle
        self.text_tier = text_tier  # the text graph's precision: part of the cache key
        self.text_encoder = text_encoder
        self.text_batch = max(1, int(text_batch))
        self.reuse_builtin = reuse_builtin
        self.cache = EmbeddingCache(cache_root(cache_dir), memory_capacity)
        self.cache.dim = bundle.model.get("embed_dim")
        self.seen_names = frozenset(bundle.seen_names)
        self.text_graph_runs = 0  # clip_text calls (a cache hit adds none)
        self.progress = progress  # see sdk.text_batches: None = a tqdm bar on a terminal after 1.5 s
        self.cut_text: Optional[bool] = None  # None: cut when the bundle's text graph has a dynamic length
        self.round_to = ROUND_TO  # cut lengths rounded up to a multiple of this
        self._builtin: Dict[str, Vocabulary] = {}
        self._arrays: Dict[str, Dict[str, np.ndarray]] = {}
        self._tokenizer = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ built-in
    def arrays(self, name: str) -> Dict[str, np.ndarray]:
        """The arrays of built-in vocabulary ``name`` (read and verified once)."""
        with self._lock:
            if name not in self._arrays:
                try:
                    self._arrays[name] = self.bundle.vocabulary_arrays(name)
                except KeyError:
                    raise VocabularyError(
                        f"unknown built-in vocabulary {name!r}; the bundle has {sorted(self.bundle.vocabularies)}"
                    ) from None
            return self._arrays[name]

    def builtin(self, name: str) -> Vocabulary:
        with self._lock:
            if name not in self._builtin:
                data = self.arrays(name)
                names = tuple(str(n) for n in data["names"])
                self._builtin[name] = self.make(
                    names, data["text_features"], data["text_features_clip"], f"builtin:{name}"
                )
            return self._builtin[name]

    def templates(self) -> Tuple[List[str], List[str]]:
        """(segment-classifier templates, CLIP templates) recorded in the default vocabulary."""
        default = self.bundle.default_vocabulary
        data = self.arrays(default) if default else {}
        if "templates" not in data or "templates_clip" not in data:
            raise BundleError(
                f"the bundle's default vocabulary {default!r} records no prompt templates; "
                f"run-time vocabularies need them: {REEXPORT}"
            )
        return [str(t) for t in data["templates"]], [str(t) for t in data["templates_clip"]]

    def make(
        self, names: Sequence[str], text_features: np.ndarray, text_features_clip: np.ndarray, source: str = "user"
    ) -> Vocabulary:
        """A :class:`Vocabulary` from given embeddings (shapes checked)."""
        names = tuple(validate_names(names))
        dim = self.bundle.settings.model.embed_dim
        tf = as_features("text_features", text_features, (len(names), dim), VocabularyError)
        tfc = as_features("text_features_clip", text_features_clip, (len(names), dim), VocabularyError)
        seen = np.array([n in self.seen_names for n in names], dtype=bool)
        return Vocabulary(names, tf, tfc, seen, source)

    # ------------------------------------------------------------------ run time
    def embed(self, names: Sequence[str]) -> Vocabulary:
        """Embeddings of ``names`` from the caches, the built-in vocabularies, or the text graph."""
        names = validate_names(names)
        templates, templates_clip = self.templates()
        key = self.cache_key(names, templates, templates_clip)
        hit = self.cache.get(key, names)
        if hit is None:
            with self._lock:  # one embedding computation at a time
                hit = self.cache.get(key, names)
                if hit is None:
                    hit = self._compute(names, templates, templates_clip)
                    self.cache.put(key, names, hit)
        return self.make(names, hit[0], hit[1], "runtime")

    def cache_key(self, names: Sequence[str], templates: Sequence[str], templates_clip: Sequence[str]) -> str:
        graph = self.bundle.graph("clip_text")
        text_file = ((graph.get("variants") or {}).get(self.text_tier) or graph)["file"]
        payload = {
            "v": CACHE_VERSION,
            "clip_text": self.bundle.manifest["files"].get(text_file),
            **({"tier": self.text_tier} if self.text_tier != "fp32" else {}),
            "names": list(names),
            "templates": list(templates),
            "templates_clip": list(templates_clip),
        }
        return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode("utf-8")).hexdigest()

    def _compute(
        self, names: List[str], templates: List[str], templates_clip: List[str]
    ) -> Tuple[np.ndarray, np.ndarray]:
        known = self._builtin_rows(names, templates, templates_clip)
        todo = [n for n in names if n not in known]
        if todo:
            tf, tfc = self.encode_sets(todo, [templates, templates_clip])
            known.update({n: (tf[i], tfc[i]) for i, n in enumerate(todo)})
        return (np.stack([known[n][0] for n in names]), np.stack([known[n][1] for n in names]))

    def _builtin_rows(
        self, names: List[str], templates: List[str], templates_clip: List[str]
    ) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
        """Rows of built-in vocabularies (same templates) for names they contain."""
        rows: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
        if not self.reuse_builtin:
            return rows
        wanted = set(names)
        for vocab_name in self.bundle.vocabularies:
            data = self.arrays(vocab_name)
            if [str(t) for t in data.get("templates", [])] != templates or [
                str(t) for t in data.get("templates_clip", [])
            ] != templates_clip:
                continue
            for i, n in enumerate(str(n) for n in data["names"]):
                if n in wanted and n not in rows:
                    rows[n] = (
                        data["text_features"][i].astype(np.float32),
                        data["text_features_clip"][i].astype(np.float32),
                    )
        return rows

    def encode(self, names: Sequence[str], templates: Sequence[str]) -> np.ndarray:
        """Class embeddings ``[K,D]`` of ``names`` under ``templates`` via the text graph."""
        return self.encode_sets(names, [templates])[0]

    def encode_sets(self, names: Sequence[str], template_sets: Sequence[Sequence[str]]) -> List[np.ndarray]:
        """Class embeddings ``[K,D]`` of ``names`` under each template set, all prompts in one cut run
        (one progress bar; shared prompts embedded once)."""
        expanded = [expand_prompts(names, templates) for templates in template_sets]
        unique = list(dict.fromkeys(p for prompts, _ in expanded for p in prompts))
        index = {p: i for i, p in enumerate(unique)}
        tokens = self.tokenizer()(unique, dtype=np.int32)
        cut = dynamic_length(self.bundle.graph("clip_text")) if self.cut_text is None else self.cut_text
        raw = encode_cut(
            tokens, self._count_runs, self.text_batch, cut=cut, progress=self.progress, round_to=self.round_to
        )
        log.info(
            "embedded %d names (%d prompts%s) with the text graph",
            len(names),
            len(unique),
            ", cut to their length" if cut else ", 77 tokens: the bundle's text graph has a fixed length",
        )
        return [
            pool_class_embeddings(raw[[index[p] for p in prompts]], owner, len(names)) for prompts, owner in expanded
        ]

    def _count_runs(self, tokens: np.ndarray) -> np.ndarray:
        self.text_graph_runs += 1
        return self.text_encoder(tokens)

    def tokenizer(self):
        with self._lock:
            if self._tokenizer is None:
                from .tokenizer import ClipTokenizer

                info = self.bundle.settings.tokenizer
                vocab = self.bundle.file(info.file)
                try:
                    self._tokenizer = ClipTokenizer(vocab, context_length=info.context_length)
                except Exception as e:  # a broken gzip/BPE file: EOFError, BadGzipFile, ValueError, ...
                    raise BundleError(
                        f"bundle file {vocab} is not a CLIP BPE vocabulary ({type(e).__name__}: {e}); {REEXPORT}"
                    ) from e
            return self._tokenizer
