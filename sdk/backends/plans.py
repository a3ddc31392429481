"""Precision plans for a backend: the rules of ``sdk.precision`` applied to the registered specs.

Kept beside the registry (not in ``sdk.precision``) so that the precision grammar imports no backend.
"""

from __future__ import annotations

import logging
from typing import Any, List, Sequence, Tuple, Union

from ..precision import AUTO_BAR, PrecisionError, PrecisionPlan, agreement, missing_by_tier, parse
from .base import BackendSpec
from .registry import REGISTRY, spec_of

log = logging.getLogger(__name__)


def choose_auto(bundle, backend: Union[str, BackendSpec], device: str, bar: float = AUTO_BAR) -> PrecisionPlan:
    """The fastest of the backend's candidates on ``device`` whose measured agreement is ≥ ``bar``
    and whose files the bundle has; fp32 when none qualifies."""
    spec = spec_of(backend) if isinstance(backend, str) else backend
    for candidate in spec.auto_precision.get(device, ()):
        if candidate == "fp32":
            break
        measured = agreement(bundle, candidate, spec.name)
        plan = PrecisionPlan.of_request(parse(candidate), "auto")
        if measured is not None and measured >= bar and not missing_by_tier(bundle, plan):
            log.info("precision auto: %s (agreement %.4f ≥ %.3f measured at export)", candidate, measured, bar)
            return plan
        log.info("precision auto: not %s (agreement %s, bar %.3f)", candidate, measured, bar)
    return PrecisionPlan.uniform("fp32", "auto")


def _runs_on(tier: str) -> str:
    """Which backends (and devices) offer ``tier``, from the registered specs (for error messages)."""
    where = [f"{s.name} ({'/'.join(s.devices)})" for s in REGISTRY.values() if s.offers(tier)]
    return ", ".join(where) or "no registered backend"


def resolve(bundle, backend: Union[str, BackendSpec], device: str, spec: Any) -> PrecisionPlan:
    """The plan for ``spec`` on ``backend`` (a name or its spec) and device kind (``"cpu"``/``"cuda"``);
    a malformed, unsupported or missing precision is a :class:`PrecisionError` that says what would work."""
    backend_spec = spec_of(backend) if isinstance(backend, str) else backend
    request = parse(spec)
    if request.default == "auto":
        return choose_auto(bundle, backend_spec, device)
    plan = PrecisionPlan.of_request(request)
    for graph, tier in plan.graphs:
        offered = backend_spec.tiers_of(graph)
        if tier not in offered:
            raise PrecisionError(
                f"precision {tier!r} for {graph} is not available on {backend_spec.name} ({device}), "
                f"which runs {graph} at {offered}; {tier} runs on {_runs_on(tier)}"
            )
    for tier, graphs in missing_by_tier(bundle, plan).items():
        raise PrecisionError(
            f"{bundle.root} has no {tier} graphs for {graphs}; re-export with "
            f"`python -m export ... --{tier}` (it writes <graph>.{tier}.onnx)"
        )
    return plan


def supported_pairs(backends: Sequence[str], specs: Sequence[Any], device: str = "cpu") -> List[Tuple[str, Any]]:
    """``(backend, spec)`` for each backend × precision spec that the backend runs on ``device``
    (read from the registered specs); what benchmarks iterate over."""
    out = []
    for b in backends:
        backend_spec = spec_of(b)
        for spec in specs:
            request = parse(spec)
            if device not in backend_spec.devices:
                continue
            if request.default == "auto":
                out.append((b, spec))
                continue
            plan = PrecisionPlan.of_request(request)
            if all(t in backend_spec.tiers_of(g) for g, t in plan.graphs):
                out.append((b, spec))
    return out
