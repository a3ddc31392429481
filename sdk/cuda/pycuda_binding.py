"""pycuda's driver API with the device's primary context, pushed and popped around every use.

pycuda's exceptions (``pycuda._driver.Error`` and its ``LogicError``/``RuntimeError``/``MemoryError``)
do not derive from Python's ``RuntimeError``; every call here is wrapped so that they surface as
:class:`CudaError`. The context is retained lazily (probing a device creates nothing) and never left
on a thread's context stack (pycuda aborts at exit when the stack is not empty).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator

import numpy as np

from .base import Binding, CudaError, DeviceInfo


class PyCuda(Binding):
    name = "pycuda"

    def __init__(self, index: int = 0):
        super().__init__(index)
        import pycuda.driver as drv  # ImportError: let the selector try the next binding

        self.drv = drv
        count = self._guard(lambda: (drv.init(), drv.Device.count())[1], "cuInit/cuDeviceGetCount")
        if self.index >= count:
            raise CudaError(f"CUDA device {self.index} not found ({count} present)")
        self.device = self._guard(lambda: drv.Device(self.index), "cuDeviceGet")
        self._info = self._read_info()
        self._context: Any = None  # the retained primary context, on first activate()
        self._lock = threading.Lock()
        self._allocations: Dict[int, Any] = {}  # ptr → pycuda DeviceAllocation (owned here)
        self._streams: Dict[int, Any] = {}  # handle → pycuda Stream

    def _guard(self, fn: Callable[[], Any], what: str) -> Any:
        try:
            return fn()
        except CudaError:
            raise
        except Exception as e:  # pycuda._driver.Error is not a Python RuntimeError
            raise CudaError(f"pycuda {what} failed: {type(e).__name__}: {e}".rstrip(": ")) from e

    def _read_info(self) -> DeviceInfo:
        def read():
            major, minor = self.device.compute_capability()
            v = int(self.drv.get_driver_version())
            return DeviceInfo(
                self.index, str(self.device.name()), f"{major}.{minor}", f"{v // 1000}.{v % 1000 // 10}", self.name
            )

        return self._guard(read, "device query")

    def info(self) -> DeviceInfo:
        return self._info

    @contextmanager
    def activate(self) -> Iterator[None]:
        with self._lock:
            if self._context is None:
                self._context = self._guard(self.device.retain_primary_context, "retain_primary_context")
            context = self._context
        self._guard(context.push, "context push")
        try:
            yield
        finally:
            self._guard(self.drv.Context.pop, "context pop")

    # ------------------------------------------------------------------ memory, streams, copies
    def malloc(self, nbytes: int) -> int:
        alloc = self._guard(lambda: self.drv.mem_alloc(int(nbytes)), f"mem_alloc({nbytes})")
        with self._lock:
            self._allocations[int(alloc)] = alloc
        return int(alloc)

    def free(self, ptr: int) -> None:
        with self._lock:
            alloc = self._allocations.pop(int(ptr), None)
        if alloc is None:
            raise CudaError(f"pointer 0x{int(ptr):x} was not allocated by this binding")
        self._guard(alloc.free, "free")

    def stream(self) -> int:
        s = self._guard(self.drv.Stream, "Stream")
        with self._lock:
            self._streams[int(s.handle)] = s
        return int(s.handle)

    def _stream(self, handle: int):
        """Our pycuda Stream for ``handle``; ``None`` for the legacy default stream (0 or 1)."""
        if int(handle) in (0, 1):
            return None
        with self._lock:
            s = self._streams.get(int(handle))
        if s is None:
            raise CudaError(
                f"stream 0x{int(handle):x} was not created by this binding (pycuda cannot use foreign stream handles)"
            )
        return s

    def destroy_stream(self, stream: int) -> None:
        with self._lock:
            s = self._streams.pop(int(stream), None)
        if s is not None:
            del s  # pycuda destroys the stream in its destructor, here, with the context current

    def synchronize(self, stream: int) -> None:
        s = self._stream(stream)
        self._guard(s.synchronize if s is not None else self.drv.Context.synchronize, "synchronize")

    def htod(self, dst: int, host: np.ndarray, stream: int) -> None:
        self._guard(lambda: self.drv.memcpy_htod_async(int(dst), host, self._stream(stream)), "memcpy_htod_async")

    def dtoh(self, host: np.ndarray, src: int, stream: int) -> None:
        self._guard(lambda: self.drv.memcpy_dtoh_async(host, int(src), self._stream(stream)), "memcpy_dtoh_async")

    def dtod(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        self._guard(
            lambda: self.drv.memcpy_dtod_async(int(dst), int(src), int(nbytes), self._stream(stream)),
            "memcpy_dtod_async",
        )

    def wait(self, stream: int, producer: int) -> None:
        if int(producer) == int(stream):
            return
        with self._lock:
            ours = self._streams.get(int(producer))
        if ours is None:  # a foreign stream (CuPy, torch): pycuda cannot record on it; wait for the device
            self._guard(self.drv.Context.synchronize, "Context.synchronize")
            return
        event = self._guard(lambda: self.drv.Event(self.drv.event_flags.DISABLE_TIMING), "Event")
        self._guard(lambda: event.record(ours), "Event.record")
        target = self._stream(stream)
        if target is None:
            self._guard(event.synchronize, "Event.synchronize")
        else:
            self._guard(lambda: target.wait_for_event(event), "Stream.wait_for_event")
