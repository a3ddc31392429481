"""TensorRT 10 backend: the bundle's ``*.engine`` plans, run with ``execute_async_v3``.

Device memory and streams come from pycuda (imported lazily). An engine is used only when it was
built by this TensorRT version for this GPU's compute capability from the bundle's current ONNX
file; otherwise an :class:`EngineMismatchWarning` is issued and that graph runs through ONNX
Runtime (``Segmenter.build_engines()`` rebuilds the engines). Execution contexts, streams and
buffers are per thread (``threading.local``); the deserialised engines are shared.
"""
from __future__ import annotations

import logging
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from ..bundle import Bundle
from ..errors import BackendError, EngineMismatchWarning
from . import Backend

log = logging.getLogger(__name__)
REBUILD = "call Segmenter.build_engines() (or python -m export ... --tensorrt) on this machine"


def _import_tensorrt():
    try:
        import tensorrt as trt  # noqa: F401
        import pycuda.driver as cuda  # noqa: F401
    except ImportError as e:
        raise BackendError(f"the TensorRT backend needs the 'tensorrt' and 'pycuda' packages ({e}); "
                           "pip install 'zegformer-sdk[tensorrt]', or use backend='onnxruntime'") from e
    return trt, cuda


def _gpu(cuda, index: int) -> Tuple[str, str]:
    """(name, compute capability "M.m") of CUDA device ``index``; BackendError without a GPU."""
    try:
        cuda.init()
        if index >= cuda.Device.count():
            raise BackendError(f"CUDA device {index} not found ({cuda.Device.count()} present)")
        dev = cuda.Device(index)
        major, minor = dev.compute_capability()
        return dev.name(), f"{major}.{minor}"
    except BackendError:
        raise
    except Exception as e:  # pycuda.driver.Error: no driver, no device
        raise BackendError(f"no usable CUDA GPU for TensorRT ({e}); use backend='onnxruntime'") from e


def normalize_cc(cc: Any) -> str:
    """``"8.6"``, ``"sm_86"``, ``[8, 6]``, ``86`` → ``"8.6"``."""
    if isinstance(cc, (list, tuple)):
        return ".".join(str(int(c)) for c in cc[:2])
    s = str(cc).lower().replace("sm_", "").replace("sm", "").strip()
    if "." not in s and s.isdigit() and len(s) >= 2:
        s = f"{s[:-1]}.{s[-1]}"
    return s


def engine_mismatch(entry: Dict[str, Any], bundle: Bundle, graph: str, trt_version: str, cc: str
                    ) -> Optional[str]:
    """Why the engine ``entry`` cannot run here, or ``None`` when it can."""
    built = str(entry.get("tensorrt", "?"))
    if built.split(".")[:3] != trt_version.split(".")[:3]:
        return f"built with TensorRT {built}, this is TensorRT {trt_version}"
    if normalize_cc(entry.get("compute_capability", "?")) != cc:
        return (f"built for compute capability {entry.get('compute_capability')} "
                f"({entry.get('gpu', '?')}), this GPU is {cc}")
    onnx_file = bundle.manifest["graphs"].get(graph, {}).get("file")
    onnx_sha = bundle.manifest["files"].get(onnx_file)
    if entry.get("onnx_sha256") and onnx_sha and entry["onnx_sha256"] != onnx_sha:
        return f"built from another {onnx_file} than the bundle's"
    return None


def tensorrt_unusable_reason(bundle: Bundle, index: int = 0) -> Optional[str]:
    """``None`` when TensorRT can run every engine of the bundle here, else why not (warns on mismatch)."""
    if not bundle.engines:
        return "the bundle has no TensorRT engines"
    try:
        trt, cuda = _import_tensorrt()
        _, cc = _gpu(cuda, index)
    except BackendError as e:
        return str(e)
    reasons = {g: engine_mismatch(e, bundle, g, trt.__version__, cc) for g, e in bundle.engines.items()}
    bad = {g: r for g, r in reasons.items() if r}
    for g, r in bad.items():
        warnings.warn(f"TensorRT engine for {g!r} is not usable: {r}; using ONNX instead — {REBUILD}",
                      EngineMismatchWarning, stacklevel=3)
    return f"engines not usable here: {sorted(bad)}" if bad else None


@dataclass
class EngineInfo:
    engine: Any
    input: str
    input_dtype: Any
    outputs: List[str]
    output_dtypes: List[Any]
    max_shape: Tuple[int, ...]
    min_shape: Tuple[int, ...]


class _ThreadState(threading.local):
    def __init__(self) -> None:
        self.contexts: Dict[str, Any] = {}
        self.buffers: Dict[Tuple[str, str], Any] = {}
        self.stream = None


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, bundle: Bundle, device_index: int = 0, threads: Optional[int] = None):
        trt, cuda = _import_tensorrt()
        self._trt, self._cuda = trt, cuda
        self.bundle = bundle
        self.gpu, self.cc = _gpu(cuda, device_index)
        self.device = f"cuda:{device_index}"
        self._context = cuda.Device(device_index).retain_primary_context()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._engines: Dict[str, EngineInfo] = {}
        self._local = _ThreadState()
        self._threads = threads
        self._fallback_backend = None
        self._lock = threading.Lock()
        with self._cuda_context():
            self._load_engines()
        log.info("TensorRT %s on %s (sm %s): engines for %s", trt.__version__, self.gpu, self.cc,
                 sorted(self._engines) or "no graph")

    # ------------------------------------------------------------------ loading
    def _load_engines(self) -> None:
        runtime = self._trt.Runtime(self._logger)
        for graph, entry in self.bundle.engines.items():
            reason = engine_mismatch(entry, self.bundle, graph, self._trt.__version__, self.cc)
            if reason:
                warnings.warn(f"TensorRT engine for {graph!r} is not usable: {reason}; running it with "
                              f"ONNX Runtime — {REBUILD}", EngineMismatchWarning, stacklevel=4)
                continue
            path = self.bundle.file(entry["file"])  # sha256 verified before deserialising
            engine = runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                warnings.warn(f"TensorRT could not deserialise {path}; running {graph!r} with ONNX Runtime "
                              f"— {REBUILD}", EngineMismatchWarning, stacklevel=4)
                continue
            self._engines[graph] = self._describe(graph, engine)

    def _describe(self, graph: str, engine) -> EngineInfo:
        trt = self._trt
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        order = list(self.bundle.graph(graph).get("outputs", {}))  # the manifest's output order
        outputs.sort(key=lambda n: order.index(n) if n in order else len(order))
        if len(inputs) != 1:
            raise BackendError(f"expected one input tensor per engine, found {inputs}; {REBUILD}")
        lo, _, hi = engine.get_tensor_profile_shape(inputs[0], 0)
        return EngineInfo(engine, inputs[0], trt.nptype(engine.get_tensor_dtype(inputs[0])), outputs,
                          [trt.nptype(engine.get_tensor_dtype(o)) for o in outputs], tuple(hi), tuple(lo))

    def _fallback(self):
        """ONNX Runtime (CUDA when available) for graphs without a usable engine."""
        with self._lock:
            if self._fallback_backend is None:
                from .onnxruntime import OnnxRuntimeBackend, cuda_provider_available

                kind = "cuda" if cuda_provider_available() else "cpu"
                index = int(self.device.split(":")[1])
                self._fallback_backend = OnnxRuntimeBackend(self.bundle, kind, index, self._threads)
            return self._fallback_backend

    # ------------------------------------------------------------------ running
    @contextmanager
    def _cuda_context(self) -> Iterator[None]:
        self._context.push()
        try:
            yield
        finally:
            self._cuda.Context.pop()

    def _buffer(self, key: Tuple[str, str], nbytes: int):
        buf = self._local.buffers.get(key)
        if buf is None or buf[1] < nbytes:
            buf = (self._cuda.mem_alloc(max(nbytes, 1)), nbytes)
            self._local.buffers[key] = buf
        return buf[0]

    def _execute(self, graph: str, info: EngineInfo, x: np.ndarray) -> List[np.ndarray]:
        cuda, st = self._cuda, self._local
        if st.stream is None:
            st.stream = cuda.Stream()
        ctx = st.contexts.get(graph)
        if ctx is None:
            ctx = st.contexts[graph] = info.engine.create_execution_context()
        host_in = cuda.pagelocked_empty(x.shape, info.input_dtype)
        host_in[...] = x
        if not ctx.set_input_shape(info.input, tuple(x.shape)):
            raise BackendError(f"TensorRT rejected input shape {x.shape} for {graph!r}")
        d_in = self._buffer((graph, info.input), host_in.nbytes)
        cuda.memcpy_htod_async(d_in, host_in, st.stream)
        ctx.set_tensor_address(info.input, int(d_in))
        outs = []
        for name, dtype in zip(info.outputs, info.output_dtypes):
            host = cuda.pagelocked_empty(tuple(ctx.get_tensor_shape(name)), dtype)
            dev = self._buffer((graph, name), host.nbytes)
            ctx.set_tensor_address(name, int(dev))
            outs.append((host, dev))
        if not ctx.execute_async_v3(stream_handle=st.stream.handle):
            raise BackendError(f"TensorRT execution of {graph!r} failed (see the TensorRT log)")
        for host, dev in outs:
            cuda.memcpy_dtoh_async(host, dev, st.stream)
        st.stream.synchronize()
        return [np.array(h, dtype=np.float32) for h, _ in outs]

    def _fits(self, info: EngineInfo, shape: Tuple[int, ...]) -> bool:
        dims = zip(shape[1:], info.min_shape[1:], info.max_shape[1:])
        return len(shape) == len(info.max_shape) and all(lo <= s <= hi for s, lo, hi in dims)

    def run(self, graph: str, x: np.ndarray) -> List[np.ndarray]:
        info = self._engines.get(graph)
        if info is None or not self._fits(info, x.shape):
            if info is not None:
                log.warning("input %s of %r is outside the engine's profile %s..%s; using ONNX Runtime",
                            x.shape, graph, info.min_shape, info.max_shape)
            return self._fallback().graph(graph).run(x)
        step = max(1, int(info.max_shape[0]))
        with self._cuda_context():
            parts = [self._execute(graph, info, x[i:i + step]) for i in range(0, x.shape[0], step)]
        return [np.concatenate(p, 0) for p in zip(*parts)]
