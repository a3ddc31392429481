"""TensorRT backend (TensorRT 10 and 11): the bundle's ``*.engine`` plans, run with ``execute_async_v3``.

Device memory, streams and the device itself come from :mod:`sdk.cuda` (cuda-python or pycuda).
An engine is used only when it was built by this TensorRT version for this GPU's compute
capability from the bundle's current ONNX file (and, when ``precision`` is given, in that
precision); otherwise an :class:`EngineMismatchWarning` is issued and that graph runs through
ONNX Runtime (``Segmenter.build_engines()`` rebuilds the engines).

Arrays: numpy in → numpy out (staged through per-context device buffers); a device array in
(anything with ``__cuda_array_interface__``: CuPy, torch, :class:`sdk.cuda.DeviceArray`) → device
arrays out, bound with ``set_tensor_address`` — no host copy. Device outputs are CuPy arrays when
CuPy is installed (its memory pool), else :class:`sdk.cuda.DeviceArray`; they are complete when
returned.

Concurrency: an engine built with N optimisation profiles runs at most N execution contexts at
once, context *i* on profile *i* (TensorRT requires a separate profile per concurrently running
context); further calls wait for a free context. With one profile, calls on that engine are
serialised (different engines still run concurrently). Contexts, streams and buffers belong to
the backend, not to threads, so nothing leaks when worker threads end; :meth:`close` frees them.
"""
from __future__ import annotations

import logging
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from .. import cuda as cudalayer
from ..arrays import ArrayOps, CupyArrays, host
from ..bundle import Bundle
from ..errors import BackendError, EngineMismatchWarning
from . import Backend

log = logging.getLogger(__name__)
REBUILD = "call Segmenter.build_engines() (or python -m export ... --tensorrt) on this machine"


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendError(f"the TensorRT backend needs the 'tensorrt' package ({e}); "
                           "pip install 'zegformer-sdk[tensorrt]', or use backend='onnxruntime'") from e
    return trt


def _open_gpu(index: int) -> cudalayer.Binding:
    try:
        return cudalayer.open_device(index)
    except BackendError as e:
        raise BackendError(f"no usable CUDA GPU for TensorRT: {e} Use backend='onnxruntime'.") from e


def normalize_cc(cc: Any) -> str:
    """``"8.6"``, ``"sm_86"``, ``[8, 6]``, ``86`` → ``"8.6"``."""
    if isinstance(cc, (list, tuple)):
        return ".".join(str(int(c)) for c in cc[:2])
    s = str(cc).lower().replace("sm_", "").replace("sm", "").strip()
    if "." not in s and s.isdigit() and len(s) >= 2:
        s = f"{s[:-1]}.{s[-1]}"
    return s


def engine_mismatch(entry: Dict[str, Any], bundle: Bundle, graph: str, trt_version: str, cc: str,
                    precision: Optional[str] = None) -> Optional[str]:
    """Why the engine ``entry`` cannot run here, or ``None`` when it can."""
    built = str(entry.get("tensorrt", "?"))
    if built.split(".")[:3] != trt_version.split(".")[:3]:
        return f"built with TensorRT {built}, this is TensorRT {trt_version}"
    if normalize_cc(entry.get("compute_capability", "?")) != cc:
        return (f"built for compute capability {entry.get('compute_capability')} "
                f"({entry.get('gpu', '?')}), this GPU is {cc}")
    if precision and entry.get("precision", "fp32") != precision:
        return f"built in {entry.get('precision', 'fp32')}, {precision} was asked for"
    onnx_file = entry.get("onnx_file") or bundle.manifest["graphs"].get(graph, {}).get("file")
    onnx_sha = bundle.manifest["files"].get(onnx_file)
    if entry.get("onnx_sha256") and onnx_sha and entry["onnx_sha256"] != onnx_sha:
        return f"built from another {onnx_file} than the bundle's"
    return None


def tensorrt_unusable_reason(bundle: Bundle, index: int = 0, precision: Optional[str] = None) -> Optional[str]:
    """``None`` when TensorRT can run every engine of the bundle here, else why not (warns on mismatch)."""
    if not bundle.engines:
        return "the bundle has no TensorRT engines"
    try:
        trt = _import_tensorrt()
        cc = _open_gpu(index).info().compute_capability
    except BackendError as e:
        return str(e)
    reasons = {g: engine_mismatch(e, bundle, g, trt.__version__, cc, precision) for g, e in bundle.engines.items()}
    bad = {g: r for g, r in reasons.items() if r}
    for g, r in bad.items():
        warnings.warn(f"TensorRT engine for {g!r} is not usable: {r}; using ONNX instead — {REBUILD}",
                      EngineMismatchWarning, stacklevel=3)
    return f"engines not usable here: {sorted(bad)}" if bad else None


def default_allocator() -> Callable[[Tuple[int, ...], Any], Any]:
    """``cupy.empty`` when CuPy is installed (the device pipeline's arrays), else ``None`` (DeviceArray)."""
    try:
        import cupy
    except Exception:  # ImportError, or a CuPy built for another CUDA
        return None
    return cupy.empty


@dataclass
class _Slot:
    """One execution context on its own optimisation profile, with its stream and staging buffers."""
    context: Any
    profile: int
    stream: int
    staging: Dict[str, cudalayer.DeviceBuffer] = field(default_factory=dict)


class _Engine:
    """A deserialised engine, its I/O description and a pool of at most ``num_profiles`` slots."""

    def __init__(self, trt, graph: str, engine, output_order: List[str], dev: cudalayer.Binding):
        self.graph, self.engine, self.dev = graph, engine, dev
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise BackendError(f"expected one input tensor per engine, found {inputs}; {REBUILD}")
        self.input = inputs[0]
        self.outputs = sorted((n for n in names if n not in inputs),
                              key=lambda n: output_order.index(n) if n in output_order else len(output_order))
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self.num_profiles = max(1, int(getattr(engine, "num_optimization_profiles", 1)))
        lo, _, hi = engine.get_tensor_profile_shape(self.input, 0)
        self.min_shape, self.max_shape = tuple(lo), tuple(hi)
        self._free: List[_Slot] = []
        self._slots: List[_Slot] = []
        self._cond = threading.Condition()

    def fits(self, shape: Tuple[int, ...]) -> bool:
        dims = zip(shape[1:], self.min_shape[1:], self.max_shape[1:])
        return len(shape) == len(self.max_shape) and all(lo <= s <= hi for s, lo, hi in dims)

    def _new_slot(self, profile: int) -> _Slot:
        stream = self.dev.stream()
        context = self.engine.create_execution_context()
        if context is None:
            self.dev.destroy_stream(stream)
            raise BackendError(f"TensorRT could not create an execution context for {self.graph!r} (GPU memory?)")
        if profile:
            context.set_optimization_profile_async(profile, stream)
            self.dev.synchronize(stream)
        return _Slot(context, profile, stream)

    @contextmanager
    def slot(self) -> Iterator[_Slot]:
        """Check out a free context (creating it while fewer than ``num_profiles`` exist), else wait."""
        with self._cond:
            while not self._free and len(self._slots) >= self.num_profiles:
                self._cond.wait()
            if self._free:
                slot = self._free.pop()
            else:
                slot = self._new_slot(len(self._slots))
                self._slots.append(slot)
        try:
            yield slot
        finally:
            with self._cond:
                self._free.append(slot)
                self._cond.notify()

    def staging(self, slot: _Slot, name: str, nbytes: int) -> int:
        buf = slot.staging.get(name)
        if buf is None or buf.nbytes < nbytes:
            if buf is not None:
                buf.free()
            buf = slot.staging[name] = cudalayer.DeviceBuffer(self.dev, max(nbytes, 1))
        return buf.ptr

    def close(self) -> None:
        with self._cond:
            slots, self._slots, self._free = self._slots, [], []
        for s in slots:
            for buf in s.staging.values():
                buf.free()
            s.context = None
            self.dev.destroy_stream(s.stream)
        self.engine = None


class TensorRTBackend(Backend):
    name = "tensorrt"
    _arrays: Optional[ArrayOps] = None

    def __init__(self, bundle: Bundle, device_index: int = 0, threads: Optional[int] = None,
                 precision: Optional[str] = None, allocator: Optional[Callable] = None):
        self._trt = _import_tensorrt()
        self.bundle, self.precision = bundle, precision
        self.dev = _open_gpu(device_index)
        info = self.dev.info()
        self.gpu, self.cc = info.gpu, info.compute_capability
        self.device = f"cuda:{device_index}"
        self._allocator = allocator if allocator is not None else default_allocator()
        self._logger = self._trt.Logger(self._trt.Logger.WARNING)
        self._engines: Dict[str, _Engine] = {}
        self._threads = threads
        self._fallback_backend = None
        self._lock = threading.Lock()
        with self.dev.activate():
            self._runtime = self._trt.Runtime(self._logger)
            self._load_engines()
        log.info("TensorRT %s on %s: engines for %s", self._trt.__version__, self.dev.describe(),
                 sorted(self._engines) or "no graph")

    # ------------------------------------------------------------------ loading
    def _load_engines(self) -> None:
        for graph, entry in self.bundle.engines.items():
            reason = engine_mismatch(entry, self.bundle, graph, self._trt.__version__, self.cc, self.precision)
            if reason:
                warnings.warn(f"TensorRT engine for {graph!r} is not usable: {reason}; running it with "
                              f"ONNX Runtime — {REBUILD}", EngineMismatchWarning, stacklevel=4)
                continue
            path = self.bundle.file(entry["file"])  # sha256 verified before deserialising
            engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                warnings.warn(f"TensorRT could not deserialise {path}; running {graph!r} with ONNX Runtime "
                              f"— {REBUILD}", EngineMismatchWarning, stacklevel=4)
                continue
            order = list(self.bundle.graph(graph).get("outputs", {}))  # the manifest's output order
            self._engines[graph] = _Engine(self._trt, graph, engine, order, self.dev)

    def _fallback(self):
        """ONNX Runtime (CUDA when available) for graphs without a usable engine."""
        with self._lock:
            if self._fallback_backend is None:
                from .onnxruntime import OnnxRuntimeBackend, cuda_provider_available

                kind = "cuda" if cuda_provider_available() else "cpu"
                self._fallback_backend = OnnxRuntimeBackend(self.bundle, kind, self.dev.index, self._threads)
            return self._fallback_backend

    @property
    def arrays(self) -> ArrayOps:
        """CuPy device arrays between the graphs when CuPy is installed (the pipeline stays on the GPU),
        else host arrays (each graph call then copies in and out)."""
        if self._arrays is None:
            try:
                self._arrays = CupyArrays(self.dev.index)
            except BackendError as e:
                log.info("TensorRT backend: host arrays between the graphs (%s)", e)
                self._arrays = host()
        return self._arrays

    def close(self) -> None:
        """Free every context, stream and buffer (also done when the backend is collected)."""
        engines, self._engines = getattr(self, "_engines", {}), {}
        if engines:
            with self.dev.activate():
                for e in engines.values():
                    e.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception as e:  # interpreter shutdown
            log.debug("TensorRT backend not closed: %s", e)

    # ------------------------------------------------------------------ running
    def _execute(self, eng: _Engine, slot: _Slot, in_ptr: int, out_ptrs: Dict[str, int]) -> None:
        """Enqueue one run on the slot's stream (the input shape is already set by :meth:`_out_shapes`)."""
        ctx = slot.context
        ctx.set_tensor_address(eng.input, int(in_ptr))
        for name in eng.outputs:
            ctx.set_tensor_address(name, int(out_ptrs[name]))
        if not ctx.execute_async_v3(slot.stream):
            raise BackendError(f"TensorRT execution of {eng.graph!r} failed (see the TensorRT log)")

    def _out_shapes(self, eng: _Engine, slot: _Slot, shape: Tuple[int, ...]) -> Dict[str, Tuple[int, ...]]:
        if not slot.context.set_input_shape(eng.input, tuple(shape)):
            raise BackendError(f"TensorRT rejected input shape {shape} for {eng.graph!r}")
        return {n: tuple(slot.context.get_tensor_shape(n)) for n in eng.outputs}

    def _run_host(self, eng: _Engine, x: np.ndarray) -> List[np.ndarray]:
        x = np.ascontiguousarray(x, dtype=eng.dtypes[eng.input])
        step = max(1, int(eng.max_shape[0]))
        parts = []
        with self.dev.activate(), eng.slot() as slot:
            for i in range(0, x.shape[0], step):
                chunk = x[i:i + step]
                shapes = self._out_shapes(eng, slot, chunk.shape)
                hosts = {n: np.empty(s, eng.dtypes[n]) for n, s in shapes.items()}
                in_ptr = eng.staging(slot, eng.input, chunk.nbytes)
                self.dev.htod(in_ptr, chunk, slot.stream)
                outs = {n: eng.staging(slot, n, h.nbytes) for n, h in hosts.items()}
                self._execute(eng, slot, in_ptr, outs)
                for n, h in hosts.items():
                    self.dev.dtoh(h, outs[n], slot.stream)
                self.dev.synchronize(slot.stream)
                parts.append([hosts[n].astype(np.float32, copy=False) for n in eng.outputs])
        return [p[0] if len(p) == 1 else np.concatenate(p, 0) for p in zip(*parts)]

    def _empty(self, shape: Tuple[int, ...], dtype: np.dtype):
        if self._allocator is not None:
            return self._allocator(shape, dtype)
        return cudalayer.DeviceArray.empty(self.dev, shape, dtype)

    def _run_device(self, eng: _Engine, x: Any) -> List[Any]:
        src = cudalayer.foreign_array(x)
        want = eng.dtypes[eng.input]
        if src.dtype != want or not src.contiguous:
            x = self._cast(x, want)  # a device-side cast (CuPy), never a host round trip
            src = cudalayer.foreign_array(x)
        step = max(1, int(eng.max_shape[0]))
        row = src.dtype.itemsize * int(np.prod(src.shape[1:], dtype=np.int64))
        outs: Dict[str, Any] = {}
        with self.dev.activate(), eng.slot() as slot:
            if src.stream is not None:
                self.dev.wait(slot.stream, src.stream)  # the producer's work on x comes first
            for i in range(0, src.shape[0], step):
                shape = (min(step, src.shape[0] - i),) + src.shape[1:]
                shapes = self._out_shapes(eng, slot, shape)
                if not outs:
                    outs = {n: self._empty((src.shape[0],) + s[1:], eng.dtypes[n]) for n, s in shapes.items()}
                ptrs = {n: cudalayer.foreign_array(a).ptr + i * eng.dtypes[n].itemsize *
                        int(np.prod(shapes[n][1:], dtype=np.int64)) for n, a in outs.items()}
                self._execute(eng, slot, src.ptr + i * row, ptrs)
            self.dev.synchronize(slot.stream)
        return [self._as_float32(outs[n]) for n in eng.outputs]

    def _cast(self, x: Any, dtype: np.dtype) -> Any:
        try:
            import cupy
        except Exception as e:
            raise BackendError(f"the {self.name} engine takes {dtype} contiguous input, got another device array; "
                               f"casting it on the GPU needs CuPy (pip install 'zegformer-sdk[gpu]')") from e
        with cupy.cuda.Device(self.dev.index):
            return cupy.ascontiguousarray(cupy.asarray(x), dtype=dtype)

    def _as_float32(self, a: Any) -> Any:
        dtype = np.dtype(cudalayer.foreign_array(a).dtype)
        if dtype == np.float32 or dtype.kind != "f" or not hasattr(a, "astype"):
            return a  # DeviceArray outputs keep the engine's dtype when CuPy is absent
        return a.astype(np.float32)

    def run(self, graph: str, x: Any) -> List[Any]:
        """Run ``graph`` on a numpy array (→ numpy) or a device array (→ device arrays)."""
        on_device = cudalayer.is_device_array(x)
        shape = cudalayer.foreign_array(x).shape if on_device else np.shape(x)
        eng = self._engines.get(graph)
        if eng is not None and eng.fits(tuple(shape)):
            return self._run_device(eng, x) if on_device else self._run_host(eng, x)
        if eng is not None:
            log.warning("input %s of %r is outside the engine's profile %s..%s; using ONNX Runtime",
                        tuple(shape), graph, eng.min_shape, eng.max_shape)
        if not on_device:
            return self._fallback().graph(graph).run(x)
        log.warning("%r has no usable engine: its device input goes through ONNX Runtime on the host", graph)
        host = self._download(x)
        return [self._upload(o) for o in self._fallback().graph(graph).run(host)]

    def _download(self, x: Any) -> np.ndarray:
        src = cudalayer.foreign_array(x)
        if not src.contiguous:
            x = self._cast(x, src.dtype)
            src = cudalayer.foreign_array(x)
        host = np.empty(src.shape, src.dtype)
        with self.dev.activate():
            if src.stream is not None:
                self.dev.wait(0, src.stream)
            self.dev.dtoh(host, src.ptr, 0)
            self.dev.synchronize(0)
        return host

    def _upload(self, host: np.ndarray) -> Any:
        out = self._empty(host.shape, host.dtype)
        with self.dev.activate():
            self.dev.htod(cudalayer.foreign_array(out).ptr, np.ascontiguousarray(host), 0)
            self.dev.synchronize(0)
        return out

