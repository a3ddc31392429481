"""cuda-python's runtime API (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.6), as NVIDIA's
TensorRT samples use it. Every call returns ``(error, values...)``; errors become :class:`CudaError`."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from .base import Binding, CudaError, DeviceInfo


def import_runtime():
    try:
        from cuda.bindings import runtime as rt
    except ImportError:
        from cuda import cudart as rt  # cuda-python < 12.6
    return rt


class CudaPython(Binding):
    name = "cuda-python"

    def __init__(self, index: int = 0):
        super().__init__(index)
        self.rt = import_runtime()
        try:
            count = self._call(self.rt.cudaGetDeviceCount(), "cudaGetDeviceCount")
        except CudaError:
            raise
        except Exception as e:  # e.g. cuda.pathfinder: no driver library on this machine
            raise CudaError(f"cuda-python cannot reach the CUDA driver: {type(e).__name__}: {e}") from e
        if self.index >= count:
            raise CudaError(f"CUDA device {self.index} not found ({count} present)")
        self._info = self._read_info()

    # ------------------------------------------------------------------ errors
    def _error_text(self, err: Any) -> str:
        try:
            _, name = self.rt.cudaGetErrorName(err)
            _, text = self.rt.cudaGetErrorString(err)
            name = name.decode() if isinstance(name, bytes) else str(name)
            text = text.decode() if isinstance(text, bytes) else str(text)
            return f"{name}: {text}"
        except Exception:
            return str(err)

    def _call(self, result: Any, what: str):
        """``(err, *values)`` → values; a :class:`CudaError` naming the call when ``err`` is not success."""
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            hint = " (no NVIDIA driver/GPU here?)" if int(err) in (35, 100, 999) else ""
            raise CudaError(f"{what} failed: {self._error_text(err)}{hint}")
        return rest[0] if len(rest) == 1 else (tuple(rest) or None)

    # ------------------------------------------------------------------ device
    def _read_info(self) -> DeviceInfo:
        prop = self._call(self.rt.cudaGetDeviceProperties(self.index), "cudaGetDeviceProperties")
        version = int(self._call(self.rt.cudaDriverGetVersion(), "cudaDriverGetVersion"))
        name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
        return DeviceInfo(
            self.index,
            name.rstrip("\x00").strip(),
            f"{prop.major}.{prop.minor}",
            f"{version // 1000}.{version % 1000 // 10}",
            self.name,
        )

    def info(self) -> DeviceInfo:
        return self._info

    @contextmanager
    def activate(self) -> Iterator[None]:
        previous = int(self._call(self.rt.cudaGetDevice(), "cudaGetDevice"))
        if previous != self.index:
            self._call(self.rt.cudaSetDevice(self.index), f"cudaSetDevice({self.index})")
        try:
            yield
        finally:
            if previous != self.index:
                self._call(self.rt.cudaSetDevice(previous), f"cudaSetDevice({previous})")

    # ------------------------------------------------------------------ memory, streams, copies
    def malloc(self, nbytes: int) -> int:
        return int(self._call(self.rt.cudaMalloc(int(nbytes)), f"cudaMalloc({nbytes})"))

    def free(self, ptr: int) -> None:
        self._call(self.rt.cudaFree(int(ptr)), "cudaFree")

    def stream(self) -> int:
        return int(self._call(self.rt.cudaStreamCreate(), "cudaStreamCreate"))

    def destroy_stream(self, stream: int) -> None:
        self._call(self.rt.cudaStreamDestroy(int(stream)), "cudaStreamDestroy")

    def synchronize(self, stream: int) -> None:
        self._call(self.rt.cudaStreamSynchronize(int(stream)), "cudaStreamSynchronize")

    def htod(self, dst: int, host: np.ndarray, stream: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(
            self.rt.cudaMemcpyAsync(int(dst), host.ctypes.data, host.nbytes, kind, int(stream)),
            "cudaMemcpyAsync (host to device)",
        )

    def dtoh(self, host: np.ndarray, src: int, stream: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call(
            self.rt.cudaMemcpyAsync(host.ctypes.data, int(src), host.nbytes, kind, int(stream)),
            "cudaMemcpyAsync (device to host)",
        )

    def dtod(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        self._call(
            self.rt.cudaMemcpyAsync(int(dst), int(src), int(nbytes), kind, int(stream)),
            "cudaMemcpyAsync (device to device)",
        )

    def wait(self, stream: int, producer: int) -> None:
        if int(producer) == int(stream):
            return
        event = self._call(self.rt.cudaEventCreateWithFlags(self.rt.cudaEventDisableTiming), "cudaEventCreate")
        try:
            self._call(self.rt.cudaEventRecord(event, int(producer)), "cudaEventRecord")
            self._call(self.rt.cudaStreamWaitEvent(int(stream), event, 0), "cudaStreamWaitEvent")
        finally:
            self._call(self.rt.cudaEventDestroy(event), "cudaEventDestroy")
