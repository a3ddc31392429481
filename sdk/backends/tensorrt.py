"""TensorRT backend (TensorRT 10 and 11): the bundle's ``*.engine`` plans, run with ``execute_async_v3``.

Device memory, streams and the device itself come from :mod:`sdk.cuda` (cuda-python or pycuda).
An engine is used only when it was built by this TensorRT version for this GPU's compute
capability from the bundle's current ONNX file in the precision the plan gives that graph (the plan
comes from ``create_backend``); otherwise an :class:`EngineMismatchWarning` is issued and that graph
runs through ONNX Runtime with the same plan (``Segmenter.build_engines()`` rebuilds the engines).
An engine whose I/O tensors numpy cannot hold (BF16, FP8: ``trt.nptype`` raises, as NVIDIA's
``common_runtime.py`` guards) is not used either.

Arrays: numpy in → numpy out (staged through per-context device buffers); a device array in
(anything with ``__cuda_array_interface__``: CuPy, torch, :class:`sdk.cuda.DeviceArray`) → device
arrays out, bound with ``set_tensor_address`` (its result is checked) — no host copy. TensorRT wants
device addresses aligned to 256 bytes: an input that is not (a foreign view, or a batch chunk's offset)
is first copied on the device into an aligned buffer, and an output chunk at an unaligned offset is
written to an aligned buffer and copied into place (device to device, on the same stream). Device
outputs are CuPy arrays when CuPy is installed (its memory pool), else :class:`sdk.cuda.DeviceArray`;
they are complete when returned.

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
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from .. import cuda as cudalayer
from ..arrays import ArrayOps, CupyArrays, host
from ..bundle import Bundle
from ..errors import BackendError, EngineMismatchWarning
from .base import Backend, BackendSpec, Device, as_plan, every_graph
from .trt_engine import ALIGNMENT, REBUILD, Engine, Slot, UnusableEngine

log = logging.getLogger(__name__)


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendError(
            f"the TensorRT backend needs the 'tensorrt' package ({e}); "
            "pip install 'zegformer-sdk[tensorrt]', or use backend='onnxruntime'"
        ) from e
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


def engine_mismatch(
    entry: Dict[str, Any], bundle: Bundle, graph: str, trt_version: str, cc: str, precision: Optional[str] = None
) -> Optional[str]:
    """Why the engine ``entry`` cannot run here, or ``None`` when it can."""
    built = str(entry.get("tensorrt", "?"))
    if built.split(".")[:3] != trt_version.split(".")[:3]:
        return f"built with TensorRT {built}, this is TensorRT {trt_version}"
    if normalize_cc(entry.get("compute_capability", "?")) != cc:
        return (
            f"built for compute capability {entry.get('compute_capability')} "
            f"({entry.get('gpu', '?')}), this GPU is {cc}"
        )
    if precision and entry.get("precision", "fp32") != precision:
        return f"built in {entry.get('precision', 'fp32')}, {precision} was asked for"
    onnx_file = entry.get("onnx_file") or bundle.manifest["graphs"].get(graph, {}).get("file")
    onnx_sha = bundle.manifest["files"].get(onnx_file)
    if entry.get("onnx_sha256") and onnx_sha and entry["onnx_sha256"] != onnx_sha:
        return f"built from another {onnx_file} than the bundle's"
    return None


def tensorrt_unusable_reason(bundle: Bundle, index: int = 0, plan: Any = None) -> Optional[str]:
    """``None`` when TensorRT can run every engine of the bundle here in ``plan``'s precision (a
    :class:`~sdk.precision.PrecisionPlan`; ``None``: fp32), else why not (warns on mismatch)."""
    if not bundle.engines:
        return "the bundle has no TensorRT engines"
    try:
        trt = _import_tensorrt()
        cc = _open_gpu(index).info().compute_capability
    except BackendError as e:
        return str(e)
    plan = as_plan(plan)
    reasons = {g: engine_mismatch(e, bundle, g, trt.__version__, cc, plan.of(g)) for g, e in bundle.engines.items()}
    bad = {g: r for g, r in reasons.items() if r}
    for g, r in bad.items():
        warnings.warn(
            f"TensorRT engine for {g!r} is not usable: {r}; using ONNX instead — {REBUILD}",
            EngineMismatchWarning,
            stacklevel=3,
        )
    return f"engines not usable here: {sorted(bad)}" if bad else None


def default_allocator() -> Optional[Callable[[Tuple[int, ...], Any], Any]]:
    """``cupy.empty`` when CuPy is installed (the device pipeline's arrays), else ``None`` (DeviceArray)."""
    try:
        import cupy
    except Exception:  # ImportError, or a CuPy built for another CUDA
        return None
    return cupy.empty


class TensorRTBackend(Backend):
    name = "tensorrt"
    _arrays: Optional[ArrayOps] = None

    def __init__(
        self,
        bundle: Bundle,
        device_index: int = 0,
        threads: Optional[int] = None,
        precision: Any = None,
        allocator: Optional[Callable] = None,
    ):
        """``precision``: a :class:`~sdk.precision.PrecisionPlan` (``None``: fp32); ``create_backend``
        resolves it. Each engine must have been built in its graph's precision."""
        self._trt = _import_tensorrt()
        self.bundle, self.precision = bundle, as_plan(precision)
        self.dev = _open_gpu(device_index)
        info = self.dev.info()
        self.gpu, self.cc = info.gpu, info.compute_capability
        self.device = f"cuda:{device_index}"
        self._allocator = allocator if allocator is not None else default_allocator()
        self._logger = self._trt.Logger(self._trt.Logger.WARNING)
        self._engines: Dict[str, Engine] = {}
        self._threads = threads
        self._fallback_backend = None
        self._lock = threading.Lock()
        with self.dev.activate():
            self._runtime = self._trt.Runtime(self._logger)
            self._load_engines()
        log.info(
            "TensorRT %s on %s: engines for %s",
            self._trt.__version__,
            self.dev.describe(),
            sorted(self._engines) or "no graph",
        )

    # ------------------------------------------------------------------ loading
    def _load_engines(self) -> None:
        for graph, entry in self.bundle.engines.items():
            reason = engine_mismatch(
                entry, self.bundle, graph, self._trt.__version__, self.cc, self.precision.of(graph)
            )
            if reason:
                warnings.warn(
                    f"TensorRT engine for {graph!r} is not usable: {reason}; running it with ONNX Runtime — {REBUILD}",
                    EngineMismatchWarning,
                    stacklevel=4,
                )
                continue
            path = self.bundle.file(entry["file"])  # sha256 verified before deserialising
            engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                warnings.warn(
                    f"TensorRT could not deserialise {path}; running {graph!r} with ONNX Runtime — {REBUILD}",
                    EngineMismatchWarning,
                    stacklevel=4,
                )
                continue
            order = list(self.bundle.graph(graph).get("outputs", {}))  # the manifest's output order
            try:
                self._engines[graph] = Engine(self._trt, graph, engine, order, self.dev)
            except UnusableEngine as e:
                warnings.warn(
                    f"TensorRT engine for {graph!r} is not usable: {e}; running it with ONNX Runtime",
                    EngineMismatchWarning,
                    stacklevel=4,
                )

    def _fallback(self):
        """ONNX Runtime (CUDA when available) for graphs without a usable engine, built by its spec's
        factory with this backend's precision plan."""
        with self._lock:
            if self._fallback_backend is None:
                from .onnxruntime import SPEC, cuda_provider_available

                kind = "cuda" if cuda_provider_available() else "cpu"
                self._fallback_backend = SPEC.factory(
                    self.bundle, Device(kind, self.dev.index), self.precision, SPEC.pick({"threads": self._threads})
                )
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
    def _execute(self, eng: Engine, slot: Slot, in_ptr: int, out_ptrs: Dict[str, int]) -> None:
        """Enqueue one run on the slot's stream (the input shape is already set by :meth:`_out_shapes`)."""
        ctx = slot.context
        for name, ptr in [(eng.input, in_ptr)] + [(n, out_ptrs[n]) for n in eng.outputs]:
            if not ctx.set_tensor_address(name, int(ptr)):
                raise BackendError(
                    f"TensorRT refused the device address 0x{int(ptr):x} of tensor {name!r} of "
                    f"{eng.graph!r} (unknown name, or not {ALIGNMENT}-byte aligned)"
                )
        if not ctx.execute_async_v3(slot.stream):
            raise BackendError(f"TensorRT execution of {eng.graph!r} failed (see the TensorRT log)")

    def _out_shapes(self, eng: Engine, slot: Slot, shape: Tuple[int, ...]) -> Dict[str, Tuple[int, ...]]:
        if not slot.context.set_input_shape(eng.input, tuple(shape)):
            raise BackendError(f"TensorRT rejected input shape {shape} for {eng.graph!r}")
        return {n: tuple(slot.context.get_tensor_shape(n)) for n in eng.outputs}

    def _run_host(self, eng: Engine, x: np.ndarray) -> List[np.ndarray]:
        x = np.ascontiguousarray(x, dtype=eng.dtypes[eng.input])
        step = max(1, int(eng.max_shape[0]))
        parts = []
        with self.dev.activate(), eng.slot() as slot:
            for i in range(0, x.shape[0], step):
                chunk = x[i : i + step]
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

    def _run_device(self, eng: Engine, x: Any) -> List[Any]:
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
                sizes = {n: eng.dtypes[n].itemsize * int(np.prod(s, dtype=np.int64)) for n, s in shapes.items()}
                targets = {
                    n: cudalayer.foreign_array(a).ptr + i * (sizes[n] // max(1, shapes[n][0])) for n, a in outs.items()
                }
                in_ptr = self._aligned_input(eng, slot, src.ptr + i * row, shape[0] * row)
                ptrs = {n: p if p % ALIGNMENT == 0 else eng.staging(slot, n, sizes[n]) for n, p in targets.items()}
                self._execute(eng, slot, in_ptr, ptrs)
                for n, p in ptrs.items():
                    if p != targets[n]:  # an unaligned chunk of the output: copied into place on the stream
                        self.dev.dtod(targets[n], p, sizes[n], slot.stream)
            self.dev.synchronize(slot.stream)
        return [self._as_float32(outs[n]) for n in eng.outputs]

    def _aligned_input(self, eng: Engine, slot: Slot, ptr: int, nbytes: int) -> int:
        """``ptr`` when TensorRT can take it, else an aligned staging copy of its ``nbytes`` (on the device)."""
        if ptr % ALIGNMENT == 0:
            return ptr
        staged = eng.staging(slot, eng.input, nbytes)
        self.dev.dtod(staged, ptr, nbytes, slot.stream)
        return staged

    def _cast(self, x: Any, dtype: np.dtype) -> Any:
        try:
            import cupy
        except Exception as e:
            raise BackendError(
                f"the {self.name} engine takes {dtype} contiguous input, got another device array; "
                f"casting it on the GPU needs CuPy (pip install 'zegformer-sdk[gpu]')"
            ) from e
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
            log.warning(
                "input %s of %r is outside the engine's profile %s..%s; using ONNX Runtime",
                tuple(shape),
                graph,
                eng.min_shape,
                eng.max_shape,
            )
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


def _available(bundle: Bundle, device: Device, plan) -> Optional[str]:
    return tensorrt_unusable_reason(bundle, device.index, plan)


def _create(bundle: Bundle, device: Device, plan, options: Dict[str, Any]) -> Backend:
    return TensorRTBackend(bundle, device.index, precision=plan, **options)


# fp16/int8 run the engines built from <graph>.<tier>.onnx; a graph without an engine runs on ONNX Runtime.
SPEC = BackendSpec(
    name="tensorrt",
    factory=_create,
    aliases=("trt",),
    devices=("cuda",),
    tiers=every_graph("fp32", "fp16", "int8"),
    rank={"cuda": 20},
    available=_available,
    auto_precision={"cuda": ("int8", "fp16", "fp32")},
    options=("threads",),
)
