"""The few CUDA calls TensorRT parity checks need, over cuda-python or pycuda (no torch).

``load_cuda()`` picks ``cuda-python`` (``cuda.bindings.runtime``, or the older ``cuda.cudart``)
and falls back to ``pycuda``; it raises ``ImportError`` when neither is installed and
``RuntimeError`` when no CUDA device can be used.
"""
from __future__ import annotations

from typing import Dict

import numpy as np


class CudaPython:
    """cuda-python runtime API (calls return ``(error, value...)`` tuples)."""

    def __init__(self):
        try:
            from cuda.bindings import runtime as rt
        except ImportError:
            from cuda import cudart as rt  # cuda-python < 12.6
        self.rt = rt
        count = self._check(rt.cudaGetDeviceCount(), "cudaGetDeviceCount")
        if not count:
            raise RuntimeError("no CUDA device found")

    def _check(self, result, what: str):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise RuntimeError(f"{what} failed: {err}")
        return rest[0] if len(rest) == 1 else (rest or None)

    def device_info(self) -> Dict[str, str]:
        prop = self._check(self.rt.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
        version = self._check(self.rt.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")
        name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
        return {"gpu": name.rstrip("\x00").strip(), "compute_capability": f"{prop.major}.{prop.minor}",
                "cuda": f"{version // 1000}.{version % 1000 // 10}"}

    def malloc(self, nbytes: int) -> int:
        return int(self._check(self.rt.cudaMalloc(max(int(nbytes), 1)), "cudaMalloc"))

    def free(self, ptr: int) -> None:
        self.rt.cudaFree(ptr)

    def to_device(self, ptr: int, host: np.ndarray) -> None:
        host = np.ascontiguousarray(host)
        self._check(self.rt.cudaMemcpy(ptr, host.ctypes.data, host.nbytes,
                                       self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice), "cudaMemcpy")

    def to_host(self, host: np.ndarray, ptr: int) -> None:
        self._check(self.rt.cudaMemcpy(host.ctypes.data, ptr, host.nbytes,
                                       self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost), "cudaMemcpy")

    def stream(self) -> int:
        return int(self._check(self.rt.cudaStreamCreate(), "cudaStreamCreate"))

    def synchronize(self, stream: int) -> None:
        self._check(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def destroy_stream(self, stream: int) -> None:
        self.rt.cudaStreamDestroy(stream)


class PyCuda:
    """pycuda driver API with a primary context of device 0."""

    def __init__(self):
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() == 0:
            raise RuntimeError("no CUDA device found")
        self.cuda = cuda
        self.device = cuda.Device(0)
        self.context = self.device.retain_primary_context()
        self.context.push()
        self._buffers: Dict[int, object] = {}
        self._streams: Dict[int, object] = {}

    def device_info(self) -> Dict[str, str]:
        major, minor = self.device.compute_capability()
        v = self.cuda.get_driver_version()
        return {"gpu": self.device.name(), "compute_capability": f"{major}.{minor}",
                "cuda": f"{v // 1000}.{v % 1000 // 10}"}

    def malloc(self, nbytes: int) -> int:
        buf = self.cuda.mem_alloc(max(int(nbytes), 1))
        self._buffers[int(buf)] = buf
        return int(buf)

    def free(self, ptr: int) -> None:
        buf = self._buffers.pop(ptr, None)
        if buf is not None:
            buf.free()

    def to_device(self, ptr: int, host: np.ndarray) -> None:
        self.cuda.memcpy_htod(ptr, np.ascontiguousarray(host))

    def to_host(self, host: np.ndarray, ptr: int) -> None:
        self.cuda.memcpy_dtoh(host, ptr)

    def stream(self) -> int:
        s = self.cuda.Stream()
        self._streams[s.handle] = s
        return s.handle

    def synchronize(self, stream: int) -> None:
        self._streams[stream].synchronize()

    def destroy_stream(self, stream: int) -> None:
        self._streams.pop(stream, None)


def load_cuda():
    """A CUDA helper over whichever binding is installed (cuda-python first, then pycuda)."""
    errors = []
    for cls in (CudaPython, PyCuda):
        try:
            return cls()
        except ImportError as e:
            errors.append(f"{cls.__name__}: {e}")
    raise ImportError("no CUDA Python binding: pip install cuda-python (or pycuda); " + "; ".join(errors))
