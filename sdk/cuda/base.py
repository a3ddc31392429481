"""The interface every CUDA binding implements, and the device arrays built on it (no binding imported).

A :class:`Binding` is one CUDA device seen through one Python binding. It owns nothing but the
device's *primary* context — the context the CUDA runtime, TensorRT, CuPy and torch use — so a
pointer allocated through one binding is valid for all of them. Memory belongs to whoever
allocated it: :class:`DeviceBuffer` frees its own allocation (making the device current on the
calling thread first, so it can be released from any thread, including a worker that ends).
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np

from ..errors import BackendError

log = logging.getLogger(__name__)


class CudaError(BackendError):
    """A CUDA call failed, or no CUDA device can be used (a :class:`BackendError`)."""


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    gpu: str
    compute_capability: str  # "8.9"
    driver: str  # CUDA version the driver supports, "13.0"
    binding: str  # "cuda-python" or "pycuda"

    def as_dict(self) -> Dict[str, str]:
        return {
            "gpu": self.gpu,
            "compute_capability": self.compute_capability,
            "cuda": self.driver,
            "binding": self.binding,
            "device": str(self.index),
        }


class Binding:
    """One CUDA device through one binding. Stream handles and pointers are plain ints."""

    name = "base"

    def __init__(self, index: int):
        self.index = int(index)

    # -- to implement -------------------------------------------------------------------------
    def info(self) -> DeviceInfo:
        raise NotImplementedError

    @contextmanager
    def activate(self) -> Iterator[None]:
        """Make this device current on the calling thread; restores the previous state (balanced)."""
        raise NotImplementedError
        yield  # pragma: no cover

    def malloc(self, nbytes: int) -> int:
        raise NotImplementedError

    def free(self, ptr: int) -> None:
        raise NotImplementedError

    def stream(self) -> int:
        raise NotImplementedError

    def destroy_stream(self, stream: int) -> None:
        raise NotImplementedError

    def synchronize(self, stream: int) -> None:
        raise NotImplementedError

    def htod(self, dst: int, host: np.ndarray, stream: int) -> None:
        raise NotImplementedError

    def dtoh(self, host: np.ndarray, src: int, stream: int) -> None:
        raise NotImplementedError

    def dtod(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        raise NotImplementedError

    def wait(self, stream: int, producer: int) -> None:
        """Work queued on ``stream`` from now on waits for the work queued so far on ``producer``."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------
    def describe(self) -> str:
        i = self.info()
        return f"{i.gpu} (cuda:{i.index}, sm {i.compute_capability}, driver CUDA {i.driver}, {self.name})"


def _shape_nbytes(shape: Tuple[int, ...], dtype: np.dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


class DeviceBuffer:
    """A device allocation owned by this object; freed by :meth:`free` or when collected."""

    def __init__(self, binding: Binding, nbytes: int):
        self.binding, self.nbytes = binding, int(nbytes)
        with binding.activate():
            self.ptr = binding.malloc(max(self.nbytes, 1))
        self._lock = threading.Lock()

    def free(self) -> None:
        with self._lock:
            ptr, self.ptr = self.ptr, 0
        if ptr:
            with self.binding.activate():
                self.binding.free(ptr)

    def __del__(self) -> None:
        try:
            self.free()
        except Exception as e:  # interpreter shutdown, driver gone: nothing left to release
            log.debug("device buffer not freed: %s", e)


class DeviceArray:
    """A C-contiguous array in device memory (``__cuda_array_interface__`` v3, zero-copy for CuPy,
    torch, numba and the compiled kernels). Keeps its :class:`DeviceBuffer` alive."""

    def __init__(self, buffer: DeviceBuffer, shape: Tuple[int, ...], dtype: Any, offset: int = 0):
        self.buffer, self.shape, self.dtype = buffer, tuple(int(s) for s in shape), np.dtype(dtype)
        self.offset = int(offset)
        if self.offset + self.nbytes > buffer.nbytes:
            raise CudaError(f"array of {self.nbytes} bytes does not fit its {buffer.nbytes}-byte buffer")

    @classmethod
    def empty(cls, binding: Binding, shape: Tuple[int, ...], dtype: Any) -> DeviceArray:
        dtype = np.dtype(dtype)
        return cls(DeviceBuffer(binding, _shape_nbytes(tuple(shape), dtype)), tuple(shape), dtype)

    @classmethod
    def from_host(cls, binding: Binding, host: np.ndarray, stream: int = 0) -> DeviceArray:
        host = np.ascontiguousarray(host)
        arr = cls.empty(binding, host.shape, host.dtype)
        with binding.activate():
            binding.htod(arr.ptr, host, stream)
            binding.synchronize(stream)
        return arr

    @property
    def ptr(self) -> int:
        return self.buffer.ptr + self.offset

    @property
    def nbytes(self) -> int:
        return _shape_nbytes(self.shape, self.dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def __cuda_array_interface__(self) -> Dict[str, Any]:
        return {
            "shape": self.shape,
            "typestr": self.dtype.str,
            "data": (self.ptr, False),
            "strides": None,
            "version": 3,
            "stream": None,
        }  # complete: producers synchronise first

    def copy_to_host(self, stream: int = 0) -> np.ndarray:
        host = np.empty(self.shape, self.dtype)
        with self.buffer.binding.activate():
            self.buffer.binding.dtoh(host, self.ptr, stream)
            self.buffer.binding.synchronize(stream)
        return host

    def __array__(self, dtype=None, copy=None):
        # Deliberately loud: a silent np.asarray() would hide a device→host copy in a device pipeline.
        raise TypeError("DeviceArray is in GPU memory: call .copy_to_host() to download it explicitly")

    def __repr__(self) -> str:
        return f"DeviceArray(shape={self.shape}, dtype={self.dtype}, ptr=0x{self.ptr:x})"


@dataclass(frozen=True)
class ForeignArray:
    """What ``__cuda_array_interface__`` says about someone else's device array."""

    ptr: int
    shape: Tuple[int, ...]
    dtype: np.dtype
    contiguous: bool
    stream: Optional[int]  # the producer's stream to wait for (CAI v3), None when complete


def is_device_array(obj: Any) -> bool:
    return hasattr(obj, "__cuda_array_interface__")


def foreign_array(obj: Any) -> ForeignArray:
    """Parse an object's ``__cuda_array_interface__`` (a :class:`CudaError` when it is malformed)."""
    try:
        cai = obj.__cuda_array_interface__
        shape = tuple(int(s) for s in cai["shape"])
        dtype = np.dtype(cai["typestr"])
        ptr = int(cai["data"][0])
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise CudaError(f"{type(obj).__name__} has no valid __cuda_array_interface__ ({e})") from e
    strides = cai.get("strides")
    contiguous = strides is None or tuple(strides) == tuple(
        int(np.prod(shape[i + 1 :], dtype=np.int64)) * dtype.itemsize for i in range(len(shape))
    )
    if cai.get("mask") is not None:
        raise CudaError(f"masked device arrays ({type(obj).__name__}) are not supported")
    stream = cai.get("stream")
    return ForeignArray(ptr, shape, dtype, contiguous, None if stream is None else int(stream))
