"""OpenVINO backend (CPU, optional: ``pip install 'zegformer-sdk[openvino]'``): fp32, bf16, int8.

* ``fp32`` runs the bundle's graphs with ``INFERENCE_PRECISION_HINT=f32`` — set explicitly: on CPUs
  with bf16 support OpenVINO's *default* is bf16, which would silently leave the faithful path;
* ``bf16`` runs the same graphs with ``INFERENCE_PRECISION_HINT=bf16`` (CPUs whose OpenVINO
  ``OPTIMIZATION_CAPABILITIES`` list ``BF16``: AVX512_BF16 or AMX);
* ``int8`` runs the bundle's QDQ graphs (``<graph>.int8.onnx``), which OpenVINO executes with its
  int8 kernels (VNNI/AMX).

Compiled models are cached on disk under ``<cache>/openvino/<graph sha256[:16]>-<precision>-<cpu>``
(the cache key is the graph's hash, the precision and the CPU), so a second start skips compilation;
the cache root is ``sdk.cache``'s (``cache_dir=False`` or ``ZEGFORMER_CACHE=off`` turn it off).
Each graph's inputs and outputs are checked against the manifest before it runs, as ONNX Runtime's are.
Each thread gets its own infer request (a compiled model is shared, requests are not thread-safe).
"""

from __future__ import annotations

import hashlib
import logging
import platform
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from ..bundle import Bundle
from ..cache import CacheOption
from ..cache import cache_dir as cache_folder
from ..errors import BackendError
from .base import Backend, BackendSpec, Device, as_plan, check_io, every_graph
from .ovguard import openvino_guard

log = logging.getLogger(__name__)

HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: the QDQ graph; the rest of it stays f32


def require_openvino():
    try:
        import openvino
    except ImportError as e:
        raise BackendError(
            f"the OpenVINO backend needs OpenVINO ({e}): pip install 'zegformer-sdk[openvino]' "
            "(or pip install openvino), or use backend='onnxruntime'"
        ) from e
    return openvino


def cpu_key(core) -> str:
    """A short id of this CPU model and its capabilities (part of the compiled-model cache key)."""
    name = str(core.get_property("CPU", "FULL_DEVICE_NAME"))
    caps = ",".join(sorted(map(str, core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))))
    return hashlib.sha256(f"{name}|{caps}|{platform.machine()}".encode()).hexdigest()[:12]


def port_io(ports: Any, declared: Any = ()) -> List[tuple]:
    """``(name, rank, dtype)`` of a model's ports (for ``check_io``; rank -1: dynamic). A port may have
    several names: the one the manifest declares is reported."""
    out = []
    for p in ports:
        shape = p.get_partial_shape()
        rank = shape.rank.get_length() if shape.rank.is_static else -1
        try:
            dtype = np.dtype(p.get_element_type().to_dtype()).name
        except Exception:  # an element type numpy has no name for (e.g. bf16)
            dtype = str(p.get_element_type())
        name = next((n for n in declared if n in p.get_names()), p.get_any_name())
        out.append((name, rank, dtype))
    return out


class OvGraph:
    """One compiled model: thread-local infer requests, outputs in the manifest's order, float32 out."""

    path: Union[str, Path] = "the graph"  # the file it was compiled from (diagnostics)

    def __init__(self, compiled, output_names: List[str]):
        self.compiled = compiled
        self.input = compiled.inputs[0]
        available = {n for o in compiled.outputs for n in o.get_names()}
        names = [n for n in output_names if n in available] or [o.get_any_name() for o in compiled.outputs]
        self.outputs = [compiled.output(n) for n in names]
        self.dtype = np.dtype(self.input.get_element_type().to_dtype())  # checked against the manifest
        self._local = threading.local()

    def run(self, x: np.ndarray) -> List[np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        result = request.infer({0: np.ascontiguousarray(x, dtype=self.dtype)})
        return [np.array(result[o], dtype=np.float32) for o in self.outputs]  # copies: buffers are reused


class OpenVinoBackend(Backend):
    name = "openvino"
    device = "cpu"

    def __init__(
        self, bundle: Bundle, threads: Optional[int] = None, precision: Any = None, cache_dir: CacheOption = None
    ):
        """``precision``: a :class:`~sdk.precision.PrecisionPlan` (``None``: fp32); ``create_backend`` resolves it.
        ``cache_dir``: the cache root (``sdk.cache``; ``False``: no compiled-model cache)."""
        ov = require_openvino()

        self.bundle = bundle
        with openvino_guard():  # the CPU plugin loads here (get_property below loads it)
            self.core = ov.Core()
            self._cpu = cpu_key(self.core)
        self.threads = threads
        self.precision = as_plan(precision)
        if "bf16" in self.precision.uses and "BF16" not in self.capabilities:
            from ..precision import PrecisionError

            raise PrecisionError(
                f"precision 'bf16' needs a CPU with bf16 support (AVX512_BF16 or AMX); "
                f"OpenVINO reports {self.capabilities} here. Use precision='int8' or 'fp32'"
            )
        self.cache_root = cache_folder("openvino", cache_dir)
        self._graphs: Dict[str, OvGraph] = {}
        self._lock = threading.Lock()

    @property
    def capabilities(self) -> Tuple[str, ...]:
        return tuple(map(str, self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")))

    def _config(self, tier: str, cache: Optional[Path]) -> Dict[str, Any]:
        config: Dict[str, Any] = {"INFERENCE_PRECISION_HINT": HINTS.get(tier, "f32"), "PERFORMANCE_HINT": "LATENCY"}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        if cache is not None:
            config["CACHE_DIR"] = str(cache)
        return config

    def cache_dir_for(self, name: str, tier: str) -> Optional[Path]:
        """``<cache>/openvino/<graph sha256[:16]>-<tier>-<cpu>`` (None when caching is off)."""
        if self.cache_root is None:
            return None
        from ..precision import FILE_TIERS

        entry = self.bundle.graph(name)
        variant = (entry.get("variants") or {}).get(tier) if tier in FILE_TIERS else None
        rel = variant["file"] if variant else entry["file"]  # the file it compiles, as the manifest names it
        sha = self.bundle.manifest["files"].get(rel, "unknown")
        return self.cache_root / f"{sha[:16]}-{tier}-{self._cpu}"

    def graph(self, name: str) -> OvGraph:
        """The compiled model of graph ``name`` at its precision, compiled (or loaded from the cache) once."""
        with self._lock:
            graph = self._graphs.get(name)
            if graph is None:
                from ..precision import graph_path

                tier = self.precision.of(name)
                path = graph_path(self.bundle, name, tier)
                cache = self.cache_dir_for(name, tier)
                if cache is not None:
                    try:
                        cache.mkdir(parents=True, exist_ok=True)
                    except OSError as e:
                        log.warning("OpenVINO cache %s not writable (%s); compiling without a cache", cache, e)
                        cache = None
                try:
                    with openvino_guard():
                        compiled = self.core.compile_model(str(path), "CPU", self._config(tier, cache))
                except Exception as e:  # OpenVINO raises its own RuntimeError subclasses
                    raise BackendError(f"OpenVINO cannot compile {path} ({tier}): {e}") from e
                entry = self.bundle.graph(name)
                check_io(
                    name,
                    entry,
                    path,
                    port_io(compiled.inputs, entry.get("inputs") or {}),
                    port_io(compiled.outputs, entry.get("outputs") or {}),
                )
                graph = OvGraph(compiled, list(entry.get("outputs", {})))
                graph.path = path
                self._graphs[name] = graph
        return graph

    def run(self, graph: str, x: Any) -> List[Any]:
        return self.graph(graph).run(x)


def _available(bundle: Bundle, device: Device, plan) -> Optional[str]:
    try:
        require_openvino()
    except BackendError as e:
        return str(e)
    return None


def _create(bundle: Bundle, device: Device, plan, options: Dict[str, Any]) -> Backend:
    return OpenVinoBackend(bundle, precision=plan, **options)


# bf16 is OpenVINO's inference-precision hint, so it applies to any graph; int8 needs the graph's QDQ variant.
SPEC = BackendSpec(
    name="openvino",
    factory=_create,
    aliases=("ov",),
    devices=("cpu",),
    tiers=every_graph("fp32", "bf16", "int8"),
    rank={"cpu": 10},
    available=_available,
    auto_precision={"cpu": ("int8", "clip_image=int8", "bf16", "fp32")},
    options=("threads", "cache_dir"),
)
