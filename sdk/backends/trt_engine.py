"""A deserialised TensorRT engine and its pool of execution contexts (used by ``sdk.backends.tensorrt``).

An engine built with N optimisation profiles runs at most N execution contexts at once, context *i*
on profile *i* (TensorRT requires a separate profile per concurrently running context); further
callers wait for a free context. Each context has its own stream and staging buffers.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Tuple

import numpy as np

from .. import cuda as cudalayer
from ..errors import BackendError

REBUILD = "call Segmenter.build_engines() (or python -m export ... --tensorrt) on this machine"
ALIGNMENT = 256  # bytes: TensorRT's requirement on the addresses given to set_tensor_address


class UnusableEngine(BackendError):
    """An engine this backend cannot drive (its graph then runs through ONNX Runtime)."""


@dataclass
class Slot:
    """One execution context on its own optimisation profile, with its stream and staging buffers."""

    context: Any
    profile: int
    stream: int
    staging: Dict[str, cudalayer.DeviceBuffer] = field(default_factory=dict)


def _numpy_dtype(trt, engine, name: str) -> np.dtype:
    """The numpy dtype of an engine tensor; BF16/FP8/INT4 have none (``trt.nptype`` raises TypeError)."""
    dtype = engine.get_tensor_dtype(name)
    try:
        return np.dtype(trt.nptype(dtype))
    except TypeError as e:
        raise UnusableEngine(
            f"its tensor {name!r} is {dtype}, which numpy cannot hold ({e}); build it with float32 inputs and outputs"
        ) from e


class Engine:
    """A deserialised engine, its I/O description and a pool of at most ``num_profiles`` slots."""

    def __init__(self, trt, graph: str, engine, output_order: List[str], dev: cudalayer.Binding):
        self.graph, self.engine, self.dev = graph, engine, dev
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise BackendError(f"expected one input tensor per engine, found {inputs}; {REBUILD}")
        self.input = inputs[0]
        self.outputs = sorted(
            (n for n in names if n not in inputs),
            key=lambda n: output_order.index(n) if n in output_order else len(output_order),
        )
        self.dtypes = {n: _numpy_dtype(trt, engine, n) for n in names}
        self.num_profiles = max(1, int(getattr(engine, "num_optimization_profiles", 1)))
        lo, _, hi = engine.get_tensor_profile_shape(self.input, 0)
        self.min_shape, self.max_shape = tuple(lo), tuple(hi)
        self._free: List[Slot] = []
        self._slots: List[Slot] = []
        self._cond = threading.Condition()

    def fits(self, shape: Tuple[int, ...]) -> bool:
        dims = zip(shape[1:], self.min_shape[1:], self.max_shape[1:])
        return len(shape) == len(self.max_shape) and all(lo <= s <= hi for s, lo, hi in dims)

    def _new_slot(self, profile: int) -> Slot:
        stream = self.dev.stream()
        context = self.engine.create_execution_context()
        if context is None:
            self.dev.destroy_stream(stream)
            raise BackendError(f"TensorRT could not create an execution context for {self.graph!r} (GPU memory?)")
        if profile:
            context.set_optimization_profile_async(profile, stream)
            self.dev.synchronize(stream)
        return Slot(context, profile, stream)

    @contextmanager
    def slot(self) -> Iterator[Slot]:
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

    def staging(self, slot: Slot, name: str, nbytes: int) -> int:
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
