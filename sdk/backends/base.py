"""The backend contract: :class:`Backend` (runs graphs) and :class:`BackendSpec` (what a backend offers).

A backend module declares one ``SPEC = BackendSpec(...)`` and a :class:`Backend` subclass that
implements :meth:`Backend.run`; ``sdk/backends/__init__.py`` registers the spec with one line.
Loading (the factory) is kept apart from running (``run``), as in Polygraphy's backends.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..arrays import ArrayOps, host
from ..errors import BundleError, OptionError
from ..precision import GRAPHS

if TYPE_CHECKING:
    from ..bundle import Bundle
    from ..precision import PrecisionPlan

DEVICE_WORDS = {"cpu": "the CPU", "cuda": "a CUDA GPU"}


@dataclass(frozen=True)
class Device:
    """A device kind (``"cpu"`` or ``"cuda"``) and its index."""

    kind: str
    index: int = 0

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"cuda:{self.index}"


class Backend(ABC):
    """The graphs of a bundle as functions of arrays (thread-safe).

    A backend implements :meth:`run`; the four graph calls are defined here, once. Its graph calls
    take and return arrays of :attr:`arrays` (numpy by default). A backend that keeps its data on a
    GPU returns a device :class:`~sdk.arrays.ArrayOps` (e.g. ``CupyArrays``) there: it then
    receives device arrays (``__cuda_array_interface__``) and must return device arrays, so that
    the pipeline never copies between the graphs.
    """

    name = "base"
    device = "cpu"
    precision: PrecisionPlan  # what each graph runs at (set by the constructor from the factory's plan)

    @property
    def arrays(self) -> ArrayOps:
        """The array module (with kernels and copies) this backend's graph calls take and return."""
        return host()

    @abstractmethod
    def run(self, graph: str, x: Any) -> List[Any]:
        """Run graph ``graph`` (``proposal``, ``clip_image``, ``clip_text``, ``clip_dense``) → its outputs."""

    def proposal(self, image: Any) -> Tuple[Any, Any]:
        """Padded RGB ``[1,3,H,W]`` → ``(mask_logits [1,Q,H/4,W/4], segment_embeddings [1,Q,D])``."""
        masks, emb = self.run("proposal", image)[:2]
        return masks, emb

    def clip_image(self, crops: Any) -> Any:
        """CLIP-normalised crops ``[N,3,S,S]`` → L2-normalised embeddings ``[N,D]``."""
        return self.run("clip_image", crops)[0]

    def clip_text(self, tokens: np.ndarray) -> np.ndarray:
        """Token ids ``[T,L]`` (host) → raw text embeddings ``[T,D]`` (host; vocabularies live on the host)."""
        return self.arrays.download(self.run("clip_text", self.arrays.upload(tokens))[0])

    def clip_dense(self, image: Any) -> Any:
        """CLIP-normalised ``[1,3,Hd,Wd]`` → L2-normalised dense features ``[1,D,h,w]``."""
        return self.run("clip_dense", image)[0]

    def describe(self) -> str:
        plan = getattr(self, "precision", None)
        return f"{self.name} ({self.device}, {plan.label if plan is not None else 'fp32'})"


# factory(bundle, device, the resolved precision plan, options) → Backend
Factory = Callable[["Bundle", Device, "PrecisionPlan", Dict[str, Any]], Backend]
# available(bundle, device, plan) → None when the backend can run here, else why not (with the install hint)
Availability = Callable[["Bundle", Device, "PrecisionPlan"], Optional[str]]


def _always(bundle: Bundle, device: Device, plan: PrecisionPlan) -> Optional[str]:
    return None


@dataclass(frozen=True)
class BackendSpec:
    """What a backend offers, declared once in its module and read by the registry and ``sdk.precision``.

    ``tiers[graph]``: the precision tiers it runs that graph at (a graph not named: fp32 only).
    ``rank[device kind]``: its place in ``backend="auto"`` on that kind (higher first; absent: never
    chosen by auto). ``auto_precision[device kind]``: ``precision="auto"``'s candidates, fastest first.
    ``options``: the ``Segmenter`` options the factory reads.
    """

    name: str
    factory: Factory
    devices: Tuple[str, ...] = ("cpu",)
    tiers: Mapping[str, Tuple[str, ...]] = field(default_factory=lambda: {g: ("fp32",) for g in GRAPHS})
    rank: Mapping[str, int] = field(default_factory=dict)
    available: Availability = _always
    aliases: Tuple[str, ...] = ()
    auto_precision: Mapping[str, Tuple[str, ...]] = field(default_factory=dict)
    options: Tuple[str, ...] = ("threads",)

    def tiers_of(self, graph: str) -> Tuple[str, ...]:
        return tuple(self.tiers.get(graph, ("fp32",)))

    def offers(self, tier: str) -> bool:
        """Whether some graph runs at ``tier`` on this backend."""
        return any(tier in t for t in self.tiers.values())

    def pick(self, options: Mapping[str, Any]) -> Dict[str, Any]:
        """The options this backend's factory reads (those given)."""
        return {k: options[k] for k in self.options if options.get(k) is not None}


def every_graph(*tiers: str) -> Dict[str, Tuple[str, ...]]:
    """The same tiers on every graph (what most backends declare)."""
    return {g: tuple(tiers) for g in GRAPHS}


def as_plan(precision: Any) -> PrecisionPlan:
    """A backend constructor's ``precision``: a :class:`~sdk.precision.PrecisionPlan` (``None``: fp32)."""
    from ..precision import FP32, PrecisionPlan

    if precision is None:
        return FP32
    if not isinstance(precision, PrecisionPlan):
        raise OptionError(
            f"a backend takes a PrecisionPlan, not {precision!r}: use "
            f"create_backend(bundle, name, device, {{'precision': {precision!r}}}) "
            "or sdk.backends.resolve"
        )
    return precision


# ---------------------------------------------------------------- graph I/O against the manifest
def declared_rank(shape: Any) -> Optional[int]:
    """``"[B,3,H,W]"`` (the manifest's shape string) or a list → 4; ``None`` when not declared."""
    if isinstance(shape, (list, tuple)):
        return len(shape)
    text = str(shape or "").strip()
    if not (text.startswith("[") and text.endswith("]")):
        return None
    return len([d for d in text[1:-1].split(",") if d.strip()])


def expected_dtype(graph: str, io: str) -> Tuple[str, ...]:
    """The element types a graph's tensor may have: token ids are integers, everything else float32."""
    return ("int32", "int64") if (graph, io) == ("clip_text", "input") else ("float32",)


def check_io(
    graph: str,
    entry: Mapping[str, Any],
    path: Any,
    inputs: Sequence[Tuple[str, int, str]],
    outputs: Sequence[Tuple[str, int, str]],
) -> None:
    """The graph file's inputs/outputs — ``(name, rank, dtype)`` as the runtime reports them — are the
    ones the manifest declares for ``graph`` (else the file is another graph: :class:`BundleError`)."""
    want_in, want_out = dict(entry.get("inputs") or {}), dict(entry.get("outputs") or {})
    have_out = {n: (r, t) for n, r, t in outputs}
    problems = []
    if len(inputs) != 1 or (want_in and [n for n, _, _ in inputs] != list(want_in)):
        problems.append(f"inputs {[n for n, _, _ in inputs]}, expected {list(want_in)}")
    missing = [n for n in want_out if n not in have_out]
    if missing:
        problems.append(f"outputs {sorted(have_out)} lack {missing}")
    for (name, rank, dtype), io, want in [(i, "input", want_in) for i in inputs[:1]] + [
        ((n, *have_out[n]), "output", want_out) for n in want_out if n in have_out
    ]:
        declared = declared_rank(want.get(name))
        if declared is not None and rank >= 0 and rank != declared:
            problems.append(f"{io} {name!r} has rank {rank}, the manifest declares {want[name]}")
        if dtype not in expected_dtype(graph, io):
            problems.append(f"{io} {name!r} is {dtype}, expected {' or '.join(expected_dtype(graph, io))}")
    if problems:
        from ..bundle import REEXPORT

        raise BundleError(
            f"bundle file {path} is not the {graph} graph the manifest describes ({'; '.join(problems)}); {REEXPORT}"
        )
