"""Backends run the bundle's graphs; everything around them (crops, ensemble, ...) is shared.

Each backend module declares one :class:`~sdk.backends.base.BackendSpec` (name, aliases, devices,
precision tiers per graph, rank for ``auto``, availability with its install hint, factory) and a
:class:`Backend` that implements ``run``; it is registered below with one line. :func:`create_backend`
resolves the precision plan once, for the chosen backend, and passes it to the factory.

``backend="auto"`` tries, on a GPU (``device="cuda"`` or ``"auto"``) and then on the CPU, the
registered backends by their rank on that device — TensorRT, then ONNX Runtime with CUDA; ONNX
Runtime, then OpenVINO on the CPU — skipping those that do not run the precision asked for (so
``precision="bf16"`` on the CPU is OpenVINO's) or are not usable here, and logs why.
``"torch"`` runs the PyTorch model from ``train/`` (the reference) and is never chosen by ``auto``.
Heavy dependencies are imported when a backend is created, never when ``sdk`` is imported.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Tuple

from ..bundle import Bundle
from ..errors import BackendError
from .base import DEVICE_WORDS, Backend, BackendSpec, Device
from .plans import choose_auto, resolve, supported_pairs
from .registry import ALIASES, REGISTRY, backend_names, register_backend, spec_of

__all__ = [
    "Backend",
    "BackendSpec",
    "Device",
    "REGISTRY",
    "ALIASES",
    "register_backend",
    "backend_names",
    "spec_of",
    "parse_device",
    "create_backend",
    "resolve",
    "choose_auto",
    "supported_pairs",
]
log = logging.getLogger(__name__)


def parse_device(device: str) -> Tuple[str, int]:
    """``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` → (kind, index)."""
    d = (device or "auto").strip().lower()
    if d in ("auto", "cpu", "cuda", "gpu"):
        return ("cuda" if d == "gpu" else d), 0
    if d.startswith("cuda:") and d[5:].isdigit():
        return "cuda", int(d[5:])
    raise BackendError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")


def create_backend(
    bundle: Bundle, backend: str = "auto", device: str = "auto", options: Optional[Dict[str, Any]] = None
) -> Backend:
    """The backend called ``backend`` on ``device`` (see the module docstring for ``"auto"``).

    ``options["precision"]`` (see ``sdk.precision``) is parsed first (a malformed one is an
    ``OptionError`` before any work), resolved once for the chosen backend and device, and the
    plan is passed to its factory; an unsupported combination raises ``PrecisionError``.
    """
    from ..precision import parse

    options = dict(options or {})
    request = parse(options.get("precision"))
    kind, index = parse_device(device)
    name = (backend or "auto").strip().lower()
    if name == "auto":
        return _auto(bundle, kind, index, request, options)
    spec = spec_of(name)
    if kind == "auto":
        kind = _first_device(bundle, spec, index)
    if kind not in spec.devices:
        where = " or ".join(DEVICE_WORDS.get(d, d) for d in spec.devices)
        raise BackendError(
            f"backend {spec.name!r} runs on {where}, not on {kind}; use device="
            f"{'cpu' if 'cpu' in spec.devices else 'cuda'!r} or another backend"
        )
    return _build(bundle, spec, Device(kind, index), resolve(bundle, spec, kind, request), options)


def _build(bundle: Bundle, spec: BackendSpec, device: Device, plan: Any, options: Dict[str, Any]) -> Backend:
    """The factory's backend, which must keep the plan it was given."""
    backend = spec.factory(bundle, device, plan, spec.pick(options))
    if getattr(backend, "precision", None) != plan:
        raise BackendError(f"backend {spec.name!r} did not keep the precision plan it was given ({plan.label})")
    return backend


def _first_device(bundle: Bundle, spec: BackendSpec, index: int) -> str:
    """``device="auto"`` with a named backend: its first device that is usable here (else its first)."""
    if len(spec.devices) == 1:
        return spec.devices[0]
    from ..precision import FP32

    for kind in spec.devices:
        if spec.available(bundle, Device(kind, index), FP32) is None:
            return kind
    return spec.devices[0]


def _candidates(kind: str) -> List[Tuple[BackendSpec, str]]:
    """``(spec, device kind)`` in ``auto``'s order: a GPU first (when allowed), then the CPU; by rank."""
    kinds = ["cuda", "cpu"] if kind == "auto" else [kind]
    out = []
    for k in kinds:
        ranked = sorted((s for s in REGISTRY.values() if k in s.rank), key=lambda s: -s.rank[k])
        out += [(s, k) for s in ranked]
    return out


def _auto(bundle: Bundle, kind: str, index: int, request: Any, options: Dict[str, Any]) -> Backend:
    """The first candidate that runs the requested tiers and is usable here (the reasons are logged)."""
    reasons = []
    for spec, k in _candidates(kind):
        device = Device(k, index)
        unoffered = [t for t in request.tiers() if not spec.offers(t)]
        if unoffered:
            reasons.append(f"{spec.name} ({k}) does not run {unoffered}")
            continue
        plan = resolve(bundle, spec, k, request)
        reason = spec.available(bundle, device, plan)
        if reason is None:
            log.info("backend: %s on %s", spec.name, device)
            return _build(bundle, spec, device, plan, options)
        reasons.append(f"{spec.name} ({k}): {reason}")
        log.info("backend: not %s on %s: %s", spec.name, k, reason)
    wanted = f" with precision {request.text!r}" if request.tiers() not in ((), ("fp32",)) else ""
    raise BackendError(f"no backend can run this bundle on device {kind!r}{wanted} here: " + "; ".join(reasons))


# Registration: one line per backend module (its SPEC); ``auto`` and the precision plans read them.
from . import onnxruntime, openvino, tensorrt, torch  # noqa: E402

register_backend(onnxruntime.SPEC)
register_backend(tensorrt.SPEC)
register_backend(torch.SPEC)
register_backend(openvino.SPEC)
