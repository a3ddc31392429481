"""``ImageFeatures``: everything of one image that does not depend on the vocabulary, and its file format.

``Segmenter.encode(image)`` runs the image graphs once; ``Segmenter.classify(features, vocabulary)``
asks the result for any vocabulary without them (``seg(image, vocabulary)`` is exactly the two in a
row). What a mode keeps: the proposal graph's mask logits ``[1,Q,h,w]`` (the padded mask grid) and
segment embeddings ``[Q,D]``; ``cropmask``/``pruned``: the CLIP embedding of each query's masked
crop ``[N,D]``; ``maskpool``: the mask-pooled dense CLIP embeddings ``[Q,D]``; ``proposal``: no CLIP
rows. The arrays stay where the backend made them (device arrays on a GPU) until :meth:`save`.

The file (``docs/features.md``): an uncompressed or deflated ``.npz`` without pickles, with a UTF-8
JSON ``header`` (format, version, bundle identity, mode, precision, sizes, mask storage) beside the
arrays. Masks may be stored as ``fp32`` (exact), ``fp16`` or ``uint8`` (the sigmoid quantised to
8 bits); the last two are deflated and measured in ``benchmarks/vocabulary.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np

from .arrays import ArrayOps, host
from .errors import BundleError, OptionError

FORMAT = "zegformer-sdk/features"
FORMAT_VERSION = 1
STORAGES = ("fp32", "fp16", "uint8")
SUFFIX = ".features.npz"
MAX_ARRAY_BYTES = 1 << 30  # refuse arrays above 1 GiB before reading them (a hostile or broken file)
MAX_HEADER_BYTES = 1 << 16
UINT8_FLOOR = 0.25 / 255  # probability of a quantised 0 (and 1 - of 255): the middle of its bin's outer half
# uint8 masks store sigmoid(logit / UINT8_SCALE): the steps cover logits of about ±28 instead of ±6.2, so that
# bilinear interpolation between a saturated cell and its neighbour stays close (benchmarks/results/vocabulary.md)
UINT8_SCALE = 4.0
PathLike = Union[str, os.PathLike]
# files of the bundle the vocabulary side alone reads: they do not change what an image encodes to
TEXT_SIDE = ("vocab/", "clip_text", "bpe_", ".engine")


def bundle_identity(manifest: Mapping[str, Any]) -> str:
    """The sha256 that binds features to a bundle: its image-side files and the settings that shape them.

    Graph files (and their weights), ``background.npy`` and the ``model``/``preprocess``/``inference``
    sections count; vocabularies, the text graph, the tokenizer and TensorRT plans do not, so adding
    a vocabulary or building engines keeps saved features valid.
    """
    files = {
        k: v
        for k, v in sorted(manifest.get("files", {}).items())
        if not any(k.startswith(t) or k.endswith(t) for t in TEXT_SIDE)
    }
    facts = {"files": files, **{k: manifest.get(k) for k in ("model", "preprocess", "inference")}}
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class ImageFeatures:
    """The vocabulary-free half of a segmentation of one image (see the module docstring).

    ``clip_queries``: the queries the ``clip`` rows belong to (host int64), ``None`` when every
    query has one. Only the ``pruned`` mode encoded *for a vocabulary* holds a subset.
    """

    mode: str
    masks: Any  # [1,Q,h,w] mask logits on the padded mask grid
    embeddings: Any  # [Q,D] segment embeddings (L2-normalised)
    clip: Optional[Any]  # [N,D] CLIP embeddings, or None (mode "proposal")
    clip_queries: Optional[np.ndarray]
    original: Tuple[int, int]  # (H, W) of the input image: the label map's size
    resized: Tuple[int, int]  # (H, W) the model saw
    padded: Tuple[int, int]  # (Hp, Wp) after padding
    bundle_id: str
    precision: str
    source: Optional[str] = None  # the image's path when known (relabel draws its overlay on it)
    name: Optional[str] = None  # how a dataset names the image (COCO file_name); default: the file name
    storage: str = "fp32"  # how the masks were stored ("fp32" when never saved)
    timings: Dict[str, float] = field(default_factory=dict, compare=False)
    arrays: ArrayOps = field(default_factory=host, repr=False, compare=False)
    selection: Optional[Tuple[Any, np.ndarray]] = field(default=None, repr=False, compare=False)

    @property
    def num_queries(self) -> int:
        return int(self.embeddings.shape[0])

    def check(self, bundle_id: str, mode: Optional[str] = None, where: str = "these features") -> None:
        """Refuse features of another bundle (:class:`BundleError`) or mode (:class:`OptionError`)."""
        if self.bundle_id != bundle_id:
            raise BundleError(
                f"{where} were encoded with another bundle (identity {self.bundle_id[:12]}…, this "
                f"bundle's is {bundle_id[:12]}…); encode the images again with this bundle"
            )
        if mode is not None and mode != self.mode:
            raise OptionError(
                f"{where} were encoded in mode {self.mode!r}, not {mode!r}; classify them in "
                f"mode {self.mode!r} or encode again in mode {mode!r}"
            )

    def to(self, arrays: ArrayOps) -> ImageFeatures:
        """These features on ``arrays`` (themselves when already there; else copied through the host)."""
        if arrays is self.arrays:
            return self

        def move(x: Any) -> Any:
            return None if x is None else arrays.upload(np.ascontiguousarray(self.arrays.download(x)))

        return dataclasses.replace(
            self,
            masks=move(self.masks),
            embeddings=move(self.embeddings),
            clip=move(self.clip),
            arrays=arrays,
            selection=None,
        )

    # ------------------------------------------------------------------ file
    def save(self, path: PathLike, storage: str = "fp32") -> Path:
        """Write the features to ``path`` atomically (see ``docs/features.md``); returns the path.

        ``storage``: ``"fp32"`` (exact), ``"fp16"`` or ``"uint8"`` (8-bit sigmoid) for the masks.
        """
        if storage not in STORAGES:
            raise OptionError(f"unknown feature storage {storage!r}; choose one of {STORAGES}")
        from .atomicio import atomic_path

        arrays = self._host_arrays(storage)
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            # numpy's stub checks **kwds against its keyword-only allow_pickle: bool
            (np.savez if storage == "fp32" else np.savez_compressed)(f, **arrays)  # type: ignore[arg-type]
        return path

    def _host_arrays(self, storage: str) -> Dict[str, np.ndarray]:
        down = self.arrays.download
        masks = np.asarray(down(self.masks), dtype=np.float32)
        header = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "bundle_id": self.bundle_id,
            "mode": self.mode,
            "precision": self.precision,
            "original": list(self.original),
            "resized": list(self.resized),
            "padded": list(self.padded),
            "storage": storage,
            "mask_scale": UINT8_SCALE if storage == "uint8" else 1.0,
            "source": self.source,
            "name": self.name,
            "queries": self.num_queries,
        }
        out = {
            "header": np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8),
            "masks": encode_masks(masks, storage),
            "embeddings": np.asarray(down(self.embeddings), dtype=np.float32),
        }
        if self.clip is not None:
            out["clip"] = np.asarray(down(self.clip), dtype=np.float32)
        if self.clip_queries is not None:
            out["clip_queries"] = np.asarray(self.clip_queries, dtype=np.int64)
        return out

    @classmethod
    def load(
        cls,
        path: PathLike,
        bundle_id: Optional[str] = None,
        mode: Optional[str] = None,
        arrays: Optional[ArrayOps] = None,
    ) -> ImageFeatures:
        """Read features written by :meth:`save`; with ``bundle_id``/``mode`` refuse others.

        A file that is not such features (truncated, pickled, foreign, of a newer format) is a
        one-line :class:`BundleError`; ``arrays`` uploads them (default: numpy).
        """
        path = Path(path)
        data = read_npz(path)
        header = read_header(path, data)
        try:
            masks, emb, clip, queries = _checked_arrays(data, header)
        except (ValueError, TypeError, KeyError) as e:
            raise BundleError(f"{path} is not valid saved features: {e}; write it again") from None
        ops = arrays or host()
        features = cls(
            mode=header["mode"],
            masks=ops.upload(masks),
            embeddings=ops.upload(emb),
            clip=None if clip is None else ops.upload(clip),
            clip_queries=queries,
            original=_pair(header["original"]),
            resized=_pair(header["resized"]),
            padded=_pair(header["padded"]),
            bundle_id=header["bundle_id"],
            precision=str(header["precision"]),
            source=header.get("source"),
            name=header.get("name"),
            storage=header["storage"],
            arrays=ops,
        )
        features.check(bundle_id or features.bundle_id, mode, where=str(path))
        return features


# ---------------------------------------------------------------------------- mask storage
def encode_masks(masks: np.ndarray, storage: str, scale: float = UINT8_SCALE) -> np.ndarray:
    """Mask logits as stored: fp32 as they are, fp16, or ``uint8`` = round(255·sigmoid(logit / scale))."""
    if storage == "fp16":
        return masks.astype(np.float16)
    if storage == "uint8":
        with np.errstate(over="ignore"):
            sig = 1.0 / (1.0 + np.exp(-masks.astype(np.float64) / scale))
        return np.rint(sig * 255.0).astype(np.uint8)
    return masks


def decode_masks(stored: np.ndarray, storage: str, scale: float = UINT8_SCALE) -> np.ndarray:
    """Stored masks back to float32 logits (``uint8``: ``scale``·logit of the step's value, ends clamped)."""
    if storage == "uint8":
        p = np.clip(np.arange(256) / 255.0, UINT8_FLOOR, 1.0 - UINT8_FLOOR)
        return (scale * np.log(p / (1.0 - p))).astype(np.float32)[stored]  # a 256-entry table
    return stored.astype(np.float32)


# ---------------------------------------------------------------------------- reading, checked
def peek(path: PathLike) -> Dict[str, Any]:
    """The checked JSON header of a features file, without reading its arrays (a :class:`BundleError` if bad)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            with z.open("header.npy") as member:
                _array_header("header", member, MAX_HEADER_BYTES)
            with z.open("header.npy") as member:
                raw = np.lib.format.read_array(member, allow_pickle=False)
    except FileNotFoundError:
        raise BundleError(f"features file {path} does not exist") from None
    except Exception as e:  # noqa: BLE001 - not a zip, no header member, a bad .npy header, ...
        raise BundleError(
            f"{path} is not a readable features file ({type(e).__name__}); write it again with "
            "ImageFeatures.save or label --save-features"
        ) from None
    return read_header(path, {"header": raw})


def read_npz(path: Path) -> Dict[str, np.ndarray]:
    """Every array of a features file, each size checked from its header before it is read; no pickles."""
    try:
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                with z.open(name) as member:
                    _array_header(name, member, MAX_ARRAY_BYTES)
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise BundleError(f"features file {path} does not exist") from None
    except Exception as e:  # BadZipFile, ValueError (pickles, bad headers), OSError, EOFError, ...
        detail = " ".join(str(e).split())[:200]
        raise BundleError(
            f"{path} is not a readable features file ({type(e).__name__}: {detail}); "
            "write it again with ImageFeatures.save or label --save-features"
        ) from None


def _array_header(name: str, member: Any, limit: int) -> None:
    """Check an ``.npy`` member's header (no objects, at most ``limit`` bytes) before its data is read."""
    version = np.lib.format.read_magic(member)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f"array {name} has .npy format {version}")
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(member)
    if dtype.hasobject or math.prod(shape) * dtype.itemsize > limit:
        raise ValueError(f"array {name} ({dtype}, shape {shape}) is not one features hold")


def read_header(path: Path, data: Mapping[str, np.ndarray]) -> Dict[str, Any]:
    """The JSON header, with its format and version checked."""
    raw = data.get("header")
    try:
        if raw is None or raw.dtype != np.uint8 or raw.ndim != 1 or raw.size > MAX_HEADER_BYTES:
            raise ValueError("no header")
        header = json.loads(raw.tobytes().decode("utf-8"))
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ValueError("another format")
    except ValueError:
        raise BundleError(
            f"{path} is not zegformer-sdk features (no {FORMAT} header); "
            "write it with ImageFeatures.save or label --save-features"
        ) from None
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise BundleError(
            f"{path} has features format version {version!r}, this SDK reads {FORMAT_VERSION}; "
            + ("upgrade zegformer-sdk" if newer else "encode the images again")
        )
    return header


def _checked_arrays(data: Mapping[str, np.ndarray], header: Dict[str, Any]):
    if not isinstance(header.get("mode"), str) or header.get("storage") not in STORAGES:
        raise ValueError(f"unknown mode {header.get('mode')!r} or storage {header.get('storage')!r}")
    if not isinstance(header.get("bundle_id"), str) or not all(
        isinstance(header.get(k), (str, type(None))) for k in ("source", "name")
    ):
        raise ValueError("bad bundle_id, source or name")
    original, resized, padded = (_pair(header[k]) for k in ("original", "resized", "padded"))
    if not (resized[0] <= padded[0] and resized[1] <= padded[1]):
        raise ValueError(f"resized {resized} exceeds padded {padded}")
    stored, emb = data["masks"], data["embeddings"]
    want = {"fp32": np.float32, "fp16": np.float16, "uint8": np.uint8}[header["storage"]]
    if stored.dtype != want or stored.ndim != 4 or stored.shape[0] != 1:
        raise ValueError(f"masks are {stored.dtype} {stored.shape}, not {np.dtype(want)} [1,Q,h,w]")
    q = stored.shape[1]
    if emb.dtype != np.float32 or emb.shape[:1] != (q,) or emb.ndim != 2 or header.get("queries") != q:
        raise ValueError(f"embeddings {emb.dtype} {emb.shape} do not match {q} queries")
    clip, queries = data.get("clip"), data.get("clip_queries")
    if (clip is None) != (header["mode"] == "proposal"):
        raise ValueError(f"mode {header['mode']!r} {'needs' if clip is None else 'has no'} CLIP rows")
    if clip is not None and (clip.dtype != np.float32 or clip.ndim != 2 or clip.shape[1] != emb.shape[1]):
        raise ValueError(f"CLIP rows {clip.dtype} {clip.shape} do not match embeddings {emb.shape}")
    if queries is not None:
        if clip is None:  # a "proposal" file with clip_queries: refuse it as bad features, not an AttributeError
            raise ValueError("clip_queries without CLIP rows")
        if (
            queries.dtype != np.int64
            or queries.shape != (clip.shape[0],)
            or np.any(np.diff(queries) <= 0)
            or queries.size
            and not 0 <= queries[0] <= queries[-1] < q
        ):
            raise ValueError("clip_queries are not increasing query indices, one per CLIP row")
    elif clip is not None and clip.shape[0] != q:
        raise ValueError(f"{clip.shape[0]} CLIP rows for {q} queries")
    for name, a in (("embeddings", emb), ("clip", clip), ("masks", stored)):
        if a is not None and a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ValueError(f"{name} hold NaN or infinite values")
    scale = header.get("mask_scale", 1.0)
    if not isinstance(scale, (int, float)) or not 0 < scale <= 1e3:
        raise ValueError(f"mask_scale {scale!r} is not a positive number")
    return decode_masks(stored, header["storage"], float(scale)), emb, clip, queries


def _pair(value: Any) -> Tuple[int, int]:
    if not (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v < 1 << 20 for v in value)
    ):
        raise ValueError(f"{value!r} is not a (height, width) pair")
    return int(value[0]), int(value[1])
