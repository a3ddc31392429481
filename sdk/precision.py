"""Precision tiers: which numeric precision each graph runs at, on which backend, and ``auto``.

``fp32`` is the faithful path. Reduced tiers trade a measured amount of label-map agreement with
fp32 for speed:

========  ==========================================  ============================================
tier      how                                          backends
========  ==========================================  ============================================
``fp32``  the bundle's graphs                          all
``bf16``  the fp32 graphs, bf16 inference precision    ``openvino`` (CPUs with AVX512_BF16 or AMX)
``int8``  ``<graph>.int8.onnx`` (QDQ, calibrated)      ``onnxruntime``, ``openvino``, ``tensorrt``
``fp16``  ``<graph>.fp16.onnx`` (strongly typed)       ``onnxruntime`` (CUDA; on the CPU it runs
                                                       through casts — for checking, not speed),
                                                       ``tensorrt``
========  ==========================================  ============================================

A precision applies to the proposal, CLIP image and dense CLIP graphs; the text graph always runs
in fp32 (it runs once per vocabulary, and its embeddings are cached). Per graph:
``precision={"clip_image": "int8"}`` or ``"clip_image=int8,proposal=fp32"`` (unnamed graphs: fp32).

``auto`` takes the fastest candidate of the backend (:data:`FASTEST_FIRST`: the tiers, and
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
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from .errors import BackendError, BundleError

log = logging.getLogger(__name__)
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
TIERED_GRAPHS = ("proposal", "clip_image", "clip_dense")
FILE_TIERS = ("fp16", "int8")  # tiers with graph files of their own; bf16 is a run-time setting
AUTO_BAR = 0.99  # auto's floor on label-map agreement with fp32
SUPPORTED = {("onnxruntime", "cpu"): ("fp32", "int8", "fp16"), ("onnxruntime", "cuda"): ("fp32", "fp16", "int8"),
             ("openvino", "cpu"): ("fp32", "bf16", "int8"), ("tensorrt", "cuda"): ("fp32", "fp16", "int8"),
             ("torch", "cpu"): ("fp32",), ("torch", "cuda"): ("fp32",)}
# auto's candidates, fastest first. "clip_image=int8": only the CLIP image encoder in int8 — on the
# zero-shot testbed it kept 99.8 % of the labels where int8 on every graph kept 95.7 % (the proposal
# network is the sensitive one), and CLIP is most of the faithful mode's time.
FASTEST_FIRST = {("onnxruntime", "cpu"): ("int8", "clip_image=int8", "fp32"),
                 ("openvino", "cpu"): ("int8", "clip_image=int8", "bf16", "fp32"),
                 ("onnxruntime", "cuda"): ("int8", "fp16", "fp32"), ("tensorrt", "cuda"): ("int8", "fp16", "fp32")}
PrecisionSpec = Union[None, str, Mapping[str, str]]


class PrecisionError(BackendError, ValueError):
    """A precision that is unknown, unsupported by the backend, or missing from the bundle."""


def variant_file(graph_file: str, tier: str) -> str:
    """``proposal.onnx`` → ``proposal.int8.onnx`` (the convention the exporter and TensorRT share)."""
    stem = graph_file[:-5] if graph_file.endswith(".onnx") else graph_file
    return f"{stem}.{tier}.onnx"


@dataclass(frozen=True)
class PrecisionPlan:
    """The precision of each tiered graph (and what the user asked for)."""

    graphs: Tuple[Tuple[str, str], ...]
    requested: str = "fp32"

    def of(self, graph: str) -> str:
        return dict(self.graphs).get(graph, "fp32")

    @property
    def label(self) -> str:
        """``"int8"`` when uniform, else ``"proposal=fp32,clip_image=int8,..."`` (recorded in ``info``)."""
        tiers = {p for _, p in self.graphs}
        return tiers.pop() if len(tiers) == 1 else ",".join(f"{g}={p}" for g, p in self.graphs)

    @property
    def uses(self) -> Tuple[str, ...]:
        return tuple(sorted({p for _, p in self.graphs}))

    @staticmethod
    def uniform(tier: str, requested: Optional[str] = None) -> "PrecisionPlan":
        return PrecisionPlan(tuple((g, tier) for g in TIERED_GRAPHS), requested or tier)


FP32 = PrecisionPlan.uniform("fp32")


def _check_tier(tier: str, where: str) -> str:
    t = str(tier).strip().lower()
    if t not in PRECISIONS:
        raise PrecisionError(f"unknown precision {tier!r}{where}; choose one of {PRECISIONS} or 'auto'")
    return t


def parse(spec: PrecisionSpec) -> Union[str, Dict[str, str]]:
    """``None``/``"fp32"``/``"auto"``/a tier, ``"graph=tier,..."`` or a mapping → a tier, ``"auto"`` or a dict."""
    if spec is None:
        return "fp32"
    if isinstance(spec, str):
        text = spec.strip().lower()
        if "=" not in text:
            return "auto" if text == "auto" else _check_tier(text, "")
        spec = dict(part.split("=", 1) for part in text.split(",") if part.strip())
    out = {}
    for graph, tier in dict(spec).items():
        graph = str(graph).strip()
        if graph not in TIERED_GRAPHS:
            raise PrecisionError(f"precision for unknown graph {graph!r}; per-graph precision applies to "
                                 f"{TIERED_GRAPHS} (the text graph always runs in fp32)")
        out[graph] = _check_tier(tier, f" for {graph}")
    return out


def agreement(bundle, tier: str, backend: str) -> Optional[float]:
    """The label-map agreement with fp32 measured at export for ``tier`` (this backend's, else the
    lowest measured on any backend), or ``None``."""
    table = ((bundle.manifest.get("precision") or {}).get("agreement") or {}).get(tier) or {}
    if backend in table:
        return float(table[backend])
    return min(map(float, table.values())) if table else None


def _plan(spec: PrecisionSpec, requested: str) -> PrecisionPlan:
    """A tier, ``graph=tier,...`` or a mapping as a plan (unnamed graphs fp32)."""
    parsed = parse(spec)
    if isinstance(parsed, str):
        return PrecisionPlan.uniform(parsed, requested)
    return PrecisionPlan(tuple((g, parsed.get(g, "fp32")) for g in TIERED_GRAPHS), requested)


def _has_files(bundle, plan: PrecisionPlan) -> bool:
    return all(missing_files(bundle, tier, [g for g, p in plan.graphs if p == tier]) == [] for tier in plan.uses)


def choose_auto(bundle, backend: str, device: str, bar: float = AUTO_BAR) -> PrecisionPlan:
    """The fastest candidate (a tier, or ``clip_image=int8``) whose measured agreement is ≥ ``bar``
    and whose files the bundle has."""
    for spec in FASTEST_FIRST.get((backend, device), ("fp32",)):
        if spec == "fp32":
            break
        measured = agreement(bundle, spec, backend)
        plan = _plan(spec, "auto")
        if measured is not None and measured >= bar and _has_files(bundle, plan):
            log.info("precision auto: %s (agreement %.4f ≥ %.3f measured at export)", spec, measured, bar)
            return plan
        log.info("precision auto: not %s (agreement %s, bar %.3f)", spec, measured, bar)
    return PrecisionPlan.uniform("fp32", "auto")


def missing_files(bundle, tier: str, graphs=TIERED_GRAPHS) -> list:
    """Tiered graphs of the bundle that lack a ``tier`` variant (none for fp32/bf16)."""
    if tier not in FILE_TIERS:
        return []
    return [g for g in graphs if bundle.has_graph(g) and tier not in (bundle.graph(g).get("variants") or {})]


def resolve(bundle, backend: str, device: str, spec: PrecisionSpec) -> PrecisionPlan:
    """The plan for ``spec`` on ``backend`` (``"onnxruntime"``, ...) and device kind (``"cpu"``/``"cuda"``);
    an unsupported combination is a :class:`PrecisionError` that says what would work."""
    parsed = parse(spec)
    if parsed == "auto":
        return choose_auto(bundle, backend, device)
    plan = _plan(spec, parsed if isinstance(parsed, str) else str(spec))
    allowed = SUPPORTED.get((backend, device), ("fp32",))
    for tier in plan.uses:
        if tier not in allowed:
            hint = {"bf16": "backend='openvino' on the CPU", "fp16": "a GPU backend (tensorrt, onnxruntime on cuda)",
                    "int8": "backend='onnxruntime' or 'openvino'"}.get(tier, "fp32")
            raise PrecisionError(f"precision {tier!r} is not available on {backend} ({device}); it runs on "
                                 f"{hint}. {backend} ({device}) runs {allowed}")
        missing = missing_files(bundle, tier, [g for g, p in plan.graphs if p == tier])
        if missing:
            raise PrecisionError(f"{bundle.root} has no {tier} graphs for {missing}; re-export with "
                                 f"`python -m export ... --{tier}` (it writes <graph>.{tier}.onnx)")
    return plan


def graph_path(bundle, name: str, tier: str) -> Path:
    """The verified file of graph ``name`` at ``tier`` (bf16 runs the fp32 file)."""
    if tier not in FILE_TIERS:
        return bundle.graph_file(name)
    variant = (bundle.graph(name).get("variants") or {}).get(tier)
    if not variant:
        raise BundleError(f"{bundle.root} has no {tier} version of {name}; re-export with --{tier}")
    return bundle.file(variant["file"])


def describe(bundle) -> Dict[str, Any]:
    """What the bundle offers: tiers with files, and the agreement measured at export."""
    tiers = {t: [g for g in TIERED_GRAPHS if bundle.has_graph(g) and t in (bundle.graph(g).get("variants") or {})]
             for t in FILE_TIERS}
    return {"files": {t: g for t, g in tiers.items() if g},
            "agreement": (bundle.manifest.get("precision") or {}).get("agreement", {})}


def supported_pairs(backends, specs, device: str = "cpu") -> list:
    """``(backend, spec)`` for each backend × precision spec (a tier, or one ``graph=tier``) that the
    backend runs on ``device``; what benchmarks iterate over."""
    out = []
    for b in backends:
        for spec in specs:
            parsed = parse(spec)
            tiers = {parsed} if isinstance(parsed, str) else set(parsed.values())
            if tiers <= set(SUPPORTED.get((b, device), ())) | ({"auto"} if parsed == "auto" else set()):
                out.append((b, spec))
    return out
