"""ONNX Runtime backend: CPU, or CUDA when ``onnxruntime-gpu`` is installed.

Sessions are created lazily (a graph the mode does not use is never loaded) and shared by all
threads: ``InferenceSession.run`` is thread-safe. ``precision`` (``sdk.precision``) picks each graph's
file: fp32, ``<graph>.int8.onnx`` (QDQ) or ``<graph>.fp16.onnx``; FP16 graphs are optimised at
``ORT_ENABLE_EXTENDED`` because ONNX Runtime's CPU provider segfaults creating an FP16 session at
``ORT_ENABLE_ALL`` (onnxruntime 1.32).

On the CUDA provider with CuPy installed, graph inputs and outputs are CuPy device arrays bound
through I/O binding (``sdk.backends.ort_binding``): the pipeline's data stays on the GPU between
the graphs. Without CuPy it falls back to host arrays (logged).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union, cast

import numpy as np

from ..arrays import ArrayOps, CupyArrays, host
from ..bundle import Bundle
from ..errors import BackendError
from ..validate.graphs import graph_load_error
from .base import Backend, BackendSpec, Device, as_plan, check_io, every_graph
from .ort_binding import ORT_DTYPES, BoundRunner, cuda_runner, ortvalue_to_numpy

log = logging.getLogger(__name__)


def cuda_provider_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def tensor_io(values: Any) -> List[tuple]:
    """``(name, rank, dtype)`` of ONNX Runtime's ``get_inputs()``/``get_outputs()`` (for ``check_io``)."""
    return [
        (
            v.name,
            len(v.shape) if v.shape is not None else -1,
            np.dtype(ORT_DTYPES[v.type]).name if v.type in ORT_DTYPES else str(v.type),
        )
        for v in values
    ]


class Graph:
    """One ONNX Runtime session with its input name/dtype and output order (from the manifest).

    ``arrays`` is where inputs and outputs live (numpy, or CuPy on the CUDA provider); ``bound`` runs
    the session through I/O binding (``sdk.backends.ort_binding``) so device arrays never visit the
    host. Without it, ``session.run`` (numpy in, numpy out).
    """

    path: Union[str, Path] = "the graph"  # the file, for error messages

    def __init__(self, session, output_names: List[str], arrays: Optional[ArrayOps] = None):
        self.session = session
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = ORT_DTYPES.get(inp.type, np.float32)
        batch = inp.shape[0] if inp.shape else None
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None
        available = [o.name for o in session.get_outputs()]
        self.outputs = [n for n in output_names if n in available] or available
        self.arrays = arrays or host()
        self.bound: Optional[Callable[[Any], List[Any]]] = None  # set by the backend when it binds

    def run(self, x: Any) -> List[Any]:
        x = self.arrays.contiguous(x, self.input_dtype)
        if self.fixed_batch is None or x.shape[0] == self.fixed_batch:
            return self._run(x)
        parts = [self._run_padded(x[i : i + self.fixed_batch]) for i in range(0, x.shape[0], self.fixed_batch)]
        return [self.arrays.xp.concatenate(p, 0) for p in zip(*parts)]

    def _run_padded(self, x: Any) -> List[Any]:
        n, xp = x.shape[0], self.arrays.xp
        if n < self.fixed_batch:
            x = xp.concatenate([x, xp.zeros((self.fixed_batch - n,) + x.shape[1:], x.dtype)], 0)
        return [o[:n] for o in self._run(x)]

    def _run(self, x: Any) -> List[Any]:
        try:
            outs = self.bound(x) if self.bound is not None else self.session.run(self.outputs, {self.input_name: x})
        except Exception as e:  # onnxruntime's own exception types (wrong shapes, out of memory, ...)
            raise BackendError(
                f"ONNX Runtime failed running {self.path} on input {tuple(x.shape)}: {' '.join(str(e).split())[:300]}"
            ) from e
        return [o.astype(np.float32, copy=False) if o.dtype == np.float16 else o for o in outs]


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(
        self,
        bundle: Bundle,
        device: str = "cpu",
        device_index: int = 0,
        threads: Optional[int] = None,
        precision=None,
        io_binding: Optional[bool] = None,
    ):
        """``precision``: a :class:`~sdk.precision.PrecisionPlan` (``None``: fp32); ``create_backend`` resolves it."""
        import onnxruntime as ort

        self._ort = ort
        self.bundle = bundle
        self.device = "cpu" if device == "cpu" else f"cuda:{device_index}"
        if device != "cpu" and not cuda_provider_available():
            raise BackendError(
                "ONNX Runtime has no CUDA execution provider here: "
                "pip install onnxruntime-gpu (and a matching CUDA), or use device='cpu'"
            )
        self.providers = (
            ["CPUExecutionProvider"]
            if device == "cpu"
            else [("CUDAExecutionProvider", {"device_id": device_index}), "CPUExecutionProvider"]
        )
        self.threads = threads
        self.precision = as_plan(precision)
        self._arrays = host() if device == "cpu" else _device_arrays(device_index)
        # I/O binding: always with device arrays; on the CPU only when asked (host memory, same results)
        self.io_binding = self._arrays.name != "numpy" or bool(io_binding)
        self._graphs: Dict[str, Graph] = {}
        self._lock = threading.Lock()

    @property
    def arrays(self) -> ArrayOps:
        return self._arrays

    def _options(self, tier: str = "fp32"):
        opts = self._ort.SessionOptions()
        level = "ORT_ENABLE_EXTENDED" if tier == "fp16" else "ORT_ENABLE_ALL"
        opts.graph_optimization_level = getattr(self._ort.GraphOptimizationLevel, level)
        opts.log_severity_level = 3
        if self.threads:
            opts.intra_op_num_threads = int(self.threads)
        return opts

    def graph(self, name: str) -> Graph:
        """The session of graph ``name``, created (after hash verification) on first use."""
        with self._lock:
            graph = self._graphs.get(name)
            if graph is None:
                from ..precision import graph_path

                tier = self.precision.of(name)
                path = graph_path(self.bundle, name, tier)
                log.debug("loading %s with %s", path, self.providers)
                try:
                    session = self._ort.InferenceSession(str(path), self._options(tier), providers=self.providers)
                except Exception as e:  # onnxruntime raises its own, unexported exception types
                    raise graph_load_error(path, e) from e
                check_io(
                    name,
                    self.bundle.graph(name),
                    path,
                    tensor_io(session.get_inputs()),
                    tensor_io(session.get_outputs()),
                )
                outputs = list(self.bundle.graph(name).get("outputs", {}))
                graph = Graph(session, outputs, self._arrays)
                graph.bound = self._bound_runner(session, graph.input_name, graph.outputs)
                graph.path = path
                self._graphs[name] = graph
        return graph

    def _bound_runner(self, session, input_name: str, outputs: List[str]):
        if not self.io_binding:
            return None
        if self._arrays.name == "numpy":
            return BoundRunner(session, input_name, outputs, "cpu", 0, ortvalue_to_numpy)
        return cuda_runner(session, input_name, outputs, cast(CupyArrays, self._arrays).device_index)

    def run(self, graph: str, x: Any) -> List[Any]:
        return self.graph(graph).run(x)


def _device_arrays(device_index: int) -> ArrayOps:
    """CuPy arrays on the GPU when CuPy and the CUDA kernels are here, else host arrays (logged)."""
    try:
        return CupyArrays(device_index)
    except BackendError as e:
        log.info("onnxruntime backend: host arrays between the graphs (%s)", e)
        return host()


def _available(bundle: Bundle, device: Device, plan) -> Optional[str]:
    try:
        import onnxruntime  # noqa: F401
    except ImportError as e:
        return f"onnxruntime is not installed ({e}): pip install onnxruntime"
    if device.kind == "cuda" and not cuda_provider_available():
        return "onnxruntime-gpu is not installed (or sees no GPU): pip install onnxruntime-gpu"
    return None


def _create(bundle: Bundle, device: Device, plan, options: Dict[str, Any]) -> Backend:
    return OnnxRuntimeBackend(bundle, device.kind, device.index, precision=plan, **options)


SPEC = BackendSpec(
    name="onnxruntime",
    factory=_create,
    aliases=("ort", "onnx"),
    devices=("cpu", "cuda"),
    tiers=every_graph("fp32", "int8", "fp16"),
    rank={"cpu": 20, "cuda": 10},
    available=_available,
    # auto's candidates, fastest first. "clip_image=int8": only the CLIP image encoder in int8 — on the
    # zero-shot testbed it kept 99.8 % of the labels where int8 on every graph kept 95.7 % (the proposal
    # network is the sensitive one), and CLIP is most of the faithful mode's time.
    auto_precision={"cpu": ("int8", "clip_image=int8", "fp32"), "cuda": ("int8", "fp16", "fp32")},
    options=("threads", "io_binding"),
)
