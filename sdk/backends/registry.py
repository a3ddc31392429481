"""The registry of backend specs: one entry per backend module, filled by ``sdk.backends``."""

from __future__ import annotations

from typing import Dict, Tuple

from ..errors import BackendError
from .base import BackendSpec

REGISTRY: Dict[str, BackendSpec] = {}
ALIASES: Dict[str, str] = {}


def register_backend(spec: BackendSpec) -> None:
    """Make ``backend=spec.name`` (and its aliases) available to ``Segmenter`` and the command line."""
    REGISTRY[spec.name] = spec
    ALIASES.update({a: spec.name for a in spec.aliases})


def backend_names(aliases: bool = True) -> Tuple[str, ...]:
    """Every accepted ``backend=`` value: ``auto``, the registered names and (optionally) their aliases."""
    return ("auto", *REGISTRY, *(ALIASES if aliases else ()))


def spec_of(backend: str) -> BackendSpec:
    """The spec of a registered backend name or alias."""
    name = (backend or "").strip().lower()
    spec = REGISTRY.get(ALIASES.get(name, name))
    if spec is None:
        raise BackendError(f"unknown backend {backend!r}; choose one of {backend_names()}")
    return spec
