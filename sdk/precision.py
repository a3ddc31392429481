"""Precision tiers: which numeric precision each graph runs at, on which backend, and ``auto``.

``fp32`` is the faithful path. Reduced tiers trade a measured amount of label-map agreement with
fp32 for speed:

========  ==========================================  ============================================
tier      how                                          backends (declared in their ``BackendSpec``)
========  ==========================================  ============================================
``fp32``  the bundle's graphs                          all
``bf16``  the fp32 graphs, bf16 inference precision    ``openvino`` (CPUs with AVX512_BF16 or AMX)
``int8``  ``<graph>.int8.onnx`` (QDQ, calibrated)      ``onnxruntime``, ``openvino``, ``tensorrt``
``fp16``  ``<graph>.fp16.onnx`` (strongly typed)       ``onnxruntime`` (CUDA; on the CPU it runs
                                                       through casts — for checking, not speed),
                                                       ``tensorrt``
========  ==========================================  ============================================

The precision string (one parser, :func:`parse`; every malformed or conflicting form is an
:class:`~sdk.errors.OptionError`):

* ``"int8"`` — a bare tier is the default of the *image* graphs (``proposal``, ``clip_image``,
  ``clip_dense``). The text graph ``clip_text`` runs in fp32 unless it is named: it runs once per
  vocabulary and its embeddings are cached, so a default tier never changes them silently;
* ``"clip_image=int8,proposal=fp32"`` — per graph (graphs not named: fp32);
* ``"int8,clip_image=fp32"`` — the bare tier as the default, then the named graphs override it
  (the order of the items does not matter); ``"int8,clip_text=int8"`` runs all four graphs in int8;
* ``{"clip_image": "int8"}`` — a mapping of graph → tier, like the per-graph string;
* ``"auto"`` alone, or ``None`` (= ``"fp32"``).

Refused: two bare tiers, a graph named twice with different tiers, ``auto`` with anything else,
unknown graphs or tiers, empty items, values that are not strings, and a tier that the chosen
backend does not run on that graph (its ``BackendSpec.tiers``) or that the bundle has no file for.

Resolution against a backend lives beside the registry (``sdk.backends.resolve``, ``choose_auto``):
``auto`` takes the fastest of the backend's candidates (``BackendSpec.auto_precision``: tiers, and
``clip_image=int8`` — int8 CLIP, fp32 proposal network) whose label-map agreement with fp32, measured
at export (``python -m export ... --int8 --fp16``, stored in ``manifest["precision"]["agreement"]``),
is at least :data:`AUTO_BAR`; without measurements it is fp32.

Manifest (written by ``export/precision.py``): ``graphs[name]["precision"]`` (``"fp32"``) and
``graphs[name]["variants"][tier] = {"file": "<graph>.<tier>.onnx", "precision": tier, ...}`` (int8:
``"calibration"`` = source, image count, method, seed; fp16: the ops kept in fp32);
``precision = {"agreement": {tier: {backend: fraction}}, "bar": ..., "measured_on": {...}}``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .errors import BackendError, BundleError, OptionError

log = logging.getLogger(__name__)
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
IMAGE_GRAPHS = ("proposal", "clip_image", "clip_dense")  # what a bare tier applies to
TIERED_GRAPHS = IMAGE_GRAPHS  # (the name export/precision.py reads: the graphs it writes variants of)
FILE_TIERS = ("fp16", "int8")  # tiers with graph files of their own; bf16 is a run-time setting
AUTO_BAR = 0.99  # auto's floor on label-map agreement with fp32
PrecisionSpec = Union[None, str, Mapping[str, str]]


GRAPHS = ("proposal", "clip_image", "clip_text", "clip_dense")  # the bundle's graphs, in pipeline order


class PrecisionError(OptionError, BackendError):
    """A precision that is malformed, unknown, unsupported by the backend, or missing from the bundle."""


def variant_file(graph_file: str, tier: str) -> str:
    """``proposal.onnx`` → ``proposal.int8.onnx`` (the convention the exporter and TensorRT share)."""
    stem = graph_file[:-5] if graph_file.endswith(".onnx") else graph_file
    return f"{stem}.{tier}.onnx"


# ---------------------------------------------------------------- the one parser
@dataclass(frozen=True)
class PrecisionRequest:
    """A parsed precision: the image graphs' default (a tier or ``"auto"``) and per-graph overrides."""

    default: str = "fp32"
    overrides: Tuple[Tuple[str, str], ...] = ()

    def tiers(self) -> Tuple[str, ...]:
        """The tiers the request names (``auto`` excluded)."""
        named = ([] if self.default == "auto" else [self.default]) + [t for _, t in self.overrides]
        return tuple(dict.fromkeys(named))

    @property
    def text(self) -> str:
        """The canonical string (``"int8,clip_image=fp32"``), which parses back to this request."""
        items = ([self.default] if self.default != "fp32" or not self.overrides else []) + [
            f"{g}={t}" for g, t in self.overrides
        ]
        return ",".join(items)


def _tier(value: Any, where: str, spec: Any) -> str:
    if not isinstance(value, str):
        raise PrecisionError(f"precision{where} must be a string tier, got {value!r}; choose one of {PRECISIONS}")
    tier = value.strip().lower()
    if tier == "auto":
        raise PrecisionError(
            f"precision {spec!r}: 'auto' cannot be combined with other items or given per graph; use 'auto' alone"
        )
    if tier not in PRECISIONS:
        raise PrecisionError(f"unknown precision {value!r}{where}; choose one of {PRECISIONS} or 'auto'")
    return tier


def _items(spec: Union[str, Mapping[Any, Any]]) -> List[Tuple[Optional[str], Any]]:
    """``(graph or None, tier)`` items of a string or a mapping, in order."""
    if not isinstance(spec, str):
        return [(k, v) for k, v in spec.items()]
    items: List[Tuple[Optional[str], Any]] = []
    for part in spec.split(","):
        if not part.strip():
            raise PrecisionError(
                f"precision {spec!r} has an empty item; write e.g. 'int8' or 'clip_image=int8,proposal=fp32'"
            )
        graph, eq, tier = part.partition("=")
        items.append((graph, tier) if eq else (None, part))
    return items


def parse(spec: Any) -> PrecisionRequest:
    """``None``, a tier, ``"auto"``, ``"[tier,]graph=tier,..."`` or a mapping → a :class:`PrecisionRequest`.

    Every malformed or conflicting form raises :class:`PrecisionError` (an :class:`OptionError`).
    """
    if spec is None:
        return PrecisionRequest()
    if isinstance(spec, PrecisionRequest):
        return spec
    if not isinstance(spec, (str, Mapping)):
        raise PrecisionError(
            f"precision={spec!r} is invalid: give a string such as 'int8' or "
            "'clip_image=int8', or a mapping {graph: tier}"
        )
    if isinstance(spec, str) and spec.strip().lower() == "auto":
        return PrecisionRequest("auto")
    if not (spec.strip() if isinstance(spec, str) else spec):
        raise PrecisionError(f"precision {spec!r} is empty; give a tier such as 'fp32' or 'int8', or 'auto'")
    default: Optional[str] = None
    chosen: Dict[str, str] = {}
    for graph, value in _items(spec):
        if graph is None:
            tier = _tier(value, "", spec)
            if default not in (None, tier):
                raise PrecisionError(
                    f"precision {spec!r} names two default tiers ({default!r} and {tier!r}); "
                    "give one, then graph=tier overrides"
                )
            default = tier
            continue
        name = graph.strip().lower() if isinstance(graph, str) else graph
        if name not in GRAPHS:
            raise PrecisionError(f"precision for unknown graph {graph!r} in {spec!r}; the graphs are {GRAPHS}")
        tier = _tier(value, f" for {name}", spec)
        if chosen.get(name, tier) != tier:
            raise PrecisionError(f"precision {spec!r} names {name} twice ({chosen[name]!r} and {tier!r}); name it once")
        chosen[name] = tier
    return PrecisionRequest(default or "fp32", tuple((g, chosen[g]) for g in GRAPHS if g in chosen))


# ---------------------------------------------------------------- plans
@dataclass(frozen=True)
class PrecisionPlan:
    """The precision of each graph (and what the user asked for)."""

    graphs: Tuple[Tuple[str, str], ...]
    requested: str = "fp32"

    def of(self, graph: str) -> str:
        return dict(self.graphs).get(graph, "fp32")

    @property
    def label(self) -> str:
        """``"int8"`` when the image graphs are uniform, else ``"proposal=fp32,clip_image=int8,..."``;
        ``",clip_text=<tier>"`` is added when the text graph is not fp32 (recorded in ``info``;
        it parses back to this plan)."""
        image = [(g, t) for g, t in self.graphs if g in IMAGE_GRAPHS]
        tiers = {t for _, t in image}
        text = tiers.pop() if len(tiers) == 1 else ",".join(f"{g}={t}" for g, t in image)
        return text if self.of("clip_text") == "fp32" else f"{text},clip_text={self.of('clip_text')}"

    @property
    def uses(self) -> Tuple[str, ...]:
        return tuple(sorted({p for _, p in self.graphs}))

    @staticmethod
    def of_request(request: PrecisionRequest, requested: Optional[str] = None) -> PrecisionPlan:
        """The plan of a (non-``auto``) request: the default on the image graphs, fp32 text, then the overrides."""
        tiers = {g: (request.default if g in IMAGE_GRAPHS else "fp32") for g in GRAPHS}
        tiers.update(request.overrides)
        return PrecisionPlan(tuple((g, tiers[g]) for g in GRAPHS), requested or request.text)

    @staticmethod
    def uniform(tier: str, requested: Optional[str] = None) -> PrecisionPlan:
        """``tier`` on the image graphs, the text graph in fp32."""
        return PrecisionPlan.of_request(PrecisionRequest(tier), requested or tier)


FP32 = PrecisionPlan.uniform("fp32")


def agreement(bundle, tier: str, backend: str) -> Optional[float]:
    """The label-map agreement with fp32 measured at export for ``tier`` (this backend's, else the
    lowest measured on any backend), or ``None``."""
    table = ((bundle.manifest.get("precision") or {}).get("agreement") or {}).get(tier) or {}
    if backend in table:
        return float(table[backend])
    return min(map(float, table.values())) if table else None


def missing_files(bundle, tier: str, graphs: Sequence[str] = GRAPHS) -> List[str]:
    """Graphs of the bundle (among ``graphs``) that lack a ``tier`` variant (none for fp32/bf16)."""
    if tier not in FILE_TIERS:
        return []
    return [g for g in graphs if bundle.has_graph(g) and tier not in (bundle.graph(g).get("variants") or {})]


def missing_by_tier(bundle, plan: PrecisionPlan) -> Dict[str, List[str]]:
    """Per file tier of ``plan``, the graphs the bundle has no file for (tiers with none left out)."""
    found = {t: missing_files(bundle, t, [g for g, p in plan.graphs if p == t]) for t in plan.uses}
    return {t: g for t, g in found.items() if g}


def graph_path(bundle, name: str, tier: str) -> Path:
    """The verified file of graph ``name`` at ``tier`` (bf16 runs the fp32 file)."""
    if tier not in FILE_TIERS:
        return bundle.graph_file(name)
    variant = (bundle.graph(name).get("variants") or {}).get(tier)
    if not variant:
        raise BundleError(f"{bundle.root} has no {tier} version of {name}; re-export with --{tier}")
    return bundle.file(variant["file"])
