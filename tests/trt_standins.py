"""Stand-ins for ``pycuda.driver`` and ``tensorrt`` (10.x and 11.x) that model only their API surface.

Device memory is host bytes behind fake addresses; an "engine" is a JSON plan naming an ONNX file
and its profile shapes, run with ONNX Runtime on the bytes at the addresses bound with ``set_tensor_address``. They also
record what real drivers would punish: context pushes/pops per thread, unfreed allocations, two
contexts of one engine running on the same optimisation profile at once. As the real API does,
``set_tensor_address`` returns False for an unknown tensor or an address that is not 256-byte
aligned, and ``nptype`` raises TypeError for BF16/FP8 (``log.tensor_dtypes`` gives a tensor such a type).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import types
from collections import Counter
from typing import Dict

import numpy as np


class DriverError(Exception):
    """Like ``pycuda._driver.Error``: NOT a subclass of Python's RuntimeError."""


class FakePyCuda:
    """``pycuda.driver`` over a dict of bytearrays; ``devices=0`` models a driver without a GPU."""

    def __init__(self, devices: int = 1, cc=(8, 9)):
        self.memory: Dict[int, bytearray] = {}
        self.counter = itertools.count(1 << 20, 1 << 20)
        self.depth: Counter = Counter()  # context stack depth per thread
        self.syncs = 0
        self.lock = threading.Lock()
        fake = self
        m = self.module = types.ModuleType("pycuda.driver")
        m.Error = DriverError
        m.init = lambda flags=0: None
        m.get_driver_version = lambda: 13000

        class Device:
            def __init__(self, i):
                if i >= devices:
                    raise DriverError("cuDeviceGet failed: invalid device ordinal")

            count = staticmethod(lambda: devices)
            compute_capability = lambda self: cc  # noqa: E731
            name = lambda self: "Fake GPU"  # noqa: E731
            retain_primary_context = lambda self: types.SimpleNamespace(push=fake.push)  # noqa: E731

        m.Device = Device
        m.Context = types.SimpleNamespace(pop=self.pop, synchronize=self.synchronize)

        class Stream:
            handles = itertools.count(7)

            def __init__(self):
                fake.require_context()
                self.handle = next(Stream.handles)

            def synchronize(self):
                fake.require_context()

            def wait_for_event(self, event):
                fake.require_context()

        m.Stream = Stream
        m.event_flags = types.SimpleNamespace(DISABLE_TIMING=2)
        m.Event = lambda flags=0: types.SimpleNamespace(record=lambda s=None: None, synchronize=lambda: None)
        m.mem_alloc = self.mem_alloc
        m.memcpy_htod_async = lambda dst, src, stream=None: self.write(int(dst), np.ascontiguousarray(src))
        m.memcpy_dtoh_async = lambda dst, src, stream=None: self.read_into(dst, int(src))
        m.memcpy_dtod_async = lambda dst, src, n, stream=None: self.write(int(dst), self.read(int(src), n))
        self.pycuda = types.ModuleType("pycuda")
        self.pycuda.driver = m

    # -- contexts
    def push(self):
        with self.lock:
            self.depth[threading.get_ident()] += 1

    def pop(self):
        with self.lock:
            assert self.depth[threading.get_ident()] > 0, "Context.pop with an empty context stack"
            self.depth[threading.get_ident()] -= 1

    def require_context(self):
        assert self.depth[threading.get_ident()] > 0, "CUDA call without a current context"

    def synchronize(self):
        self.require_context()
        self.syncs += 1

    def balanced(self) -> bool:
        return all(v == 0 for v in self.depth.values())

    # -- memory
    def mem_alloc(self, nbytes):
        self.require_context()
        ptr = next(self.counter)
        self.memory[ptr] = bytearray(int(nbytes))
        fake = self

        class Allocation:
            def __int__(self):
                return ptr

            def free(self):
                fake.require_context()
                del fake.memory[ptr]

        return Allocation()

    def _locate(self, ptr, n):
        for base, buf in self.memory.items():
            if base <= ptr and ptr + n <= base + len(buf):
                return buf, ptr - base
        raise AssertionError(f"access of {n} bytes at 0x{ptr:x} outside every allocation")

    def write(self, ptr, data: np.ndarray):
        self.require_context()
        raw = np.ascontiguousarray(data).view(np.uint8).ravel()
        buf, off = self._locate(ptr, raw.size)
        buf[off : off + raw.size] = raw.tobytes()

    def read(self, ptr, n) -> np.ndarray:
        buf, off = self._locate(ptr, n)
        return np.frombuffer(bytes(buf[off : off + n]), np.uint8)

    def read_into(self, host: np.ndarray, ptr):
        self.require_context()
        host.view(np.uint8).ravel()[:] = self.read(ptr, host.nbytes)

    def array(self, ptr, shape, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        n = int(np.prod(shape)) * dtype.itemsize
        return self.read(ptr, n).view(dtype).reshape(shape).copy()


class FakeDeviceArray:
    """A producer's device array: ``__cuda_array_interface__`` only; converting it to numpy fails."""

    def __init__(self, cuda: FakePyCuda, host: np.ndarray, stream=None, offset: int = 0):
        """``offset``: bytes between the allocation and the data (a view that is not 256-byte aligned)."""
        cuda.push()
        try:
            self.alloc = cuda.mem_alloc(host.nbytes + offset)
            cuda.write(int(self.alloc) + offset, host)
        finally:
            cuda.pop()
        self.shape, self.dtype, self.stream, self.offset = host.shape, host.dtype, stream, offset

    @property
    def __cuda_array_interface__(self):
        return {
            "shape": self.shape,
            "typestr": self.dtype.str,
            "data": (int(self.alloc) + self.offset, False),
            "version": 3,
            "strides": None,
            "stream": self.stream,
        }

    def __array__(self, *a, **k):
        raise AssertionError("a device array was converted to numpy")


def fake_tensorrt(cuda: FakePyCuda, version: str = "10.16.1.11"):
    """``tensorrt`` 10.x (STRONGLY_TYPED flag, FP16 builder flag present) or 11.x (neither)."""
    import onnxruntime as ort

    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    major = int(version.split(".")[0])
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=2: None})
    trt.DataType = types.SimpleNamespace(BF16="DataType.BF16", FP8="DataType.FP8")

    def nptype(dtype):
        if dtype in (trt.DataType.BF16, trt.DataType.FP8):
            raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
        return dtype

    trt.nptype = nptype
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
    flags = {"TF32": 6}
    if major < 11:
        flags.update(FP16=0, INT8=1, OBEY_PRECISION_CONSTRAINTS=9)
        trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=0)
    trt.BuilderFlag = types.SimpleNamespace(**flags)
    log = types.SimpleNamespace(
        networks=[],
        executed=[],
        contexts=[],
        running=Counter(),
        max_running=0,
        lock=threading.Lock(),
        tensor_dtypes={},
        refused=[],
    )

    class Network:
        def __init__(self, flags):
            self.flags, self.onnx = flags, None

    class Parser:
        def __init__(self, network, logger):
            self.network, self.num_errors = network, 0

        def parse_from_file(self, path):
            self.network.onnx = path
            return True

    class Config:
        def __init__(self):
            self.profiles, self.cleared = [], []

        def set_memory_pool_limit(self, pool, size):
            pass

        def clear_flag(self, flag):
            self.cleared.append(flag)

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)

        def create_timing_cache(self, blob):
            return blob

        def set_timing_cache(self, cache, ignore_mismatch):
            pass

        def get_timing_cache(self):
            return types.SimpleNamespace(serialize=lambda: b"cache")

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            net = Network(flags)
            log.networks.append(net)
            return net

        create_builder_config = staticmethod(Config)

        @staticmethod
        def create_optimization_profile():
            shapes = {}
            return types.SimpleNamespace(shapes=shapes, set_shape=lambda name, *mom: shapes.__setitem__(name, mom))

        def build_serialized_network(self, network, config):
            assert all(p.shapes == config.profiles[0].shapes for p in config.profiles)
            return json.dumps(
                {"onnx": network.onnx, "profiles": len(config.profiles), "shapes": config.profiles[0].shapes}
            ).encode()

    trt.Builder, trt.OnnxParser = Builder, Parser

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses, self.profile = engine, {}, {}, 0
            log.contexts.append(self)

        def set_optimization_profile_async(self, index, stream):
            assert 0 <= index < self.engine.num_optimization_profiles
            self.profile = index

        def set_input_shape(self, name, shape):
            lo, _, hi = self.engine.get_tensor_profile_shape(name, self.profile)
            if not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
                return False
            outs = self.engine.session.run(None, {name: np.zeros(shape, self.engine.dtypes[name])})
            self.shapes = {o.name: v.shape for o, v in zip(self.engine.session.get_outputs(), outs)}
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            return self.shapes[name]

        def set_tensor_address(self, name, address):
            if name not in self.engine.names or int(address) % 256:
                log.refused.append((name, int(address)))
                return False
            self.addresses[name] = int(address)
            return True

        def execute_async_v3(self, stream_handle):
            cuda.require_context()
            key = (id(self.engine), self.profile)
            with log.lock:
                assert log.running[key] == 0, "two contexts run on one optimisation profile at once"
                log.running[key] += 1
                log.max_running = max(log.max_running, sum(log.running.values()))
            try:
                e, inp = self.engine, self.engine.inputs[0]
                x = cuda.array(self.addresses[inp], self.shapes[inp], e.dtypes[inp])
                log.executed.append((e.graph, x.shape[0], self.profile))
                time.sleep(0.01)  # long enough for concurrent callers to overlap
                for o, v in zip(e.session.get_outputs(), e.session.run(None, {inp: x})):
                    cuda.write(self.addresses[o.name], v)
            finally:
                with log.lock:
                    log.running[key] -= 1
            return True

    class Engine:
        def __init__(self, plan):
            self.graph = plan["onnx"].rsplit("/", 1)[-1].split(".")[0]
            self.num_optimization_profiles, self.shapes = plan["profiles"], plan["shapes"]
            self.session = ort.InferenceSession(plan["onnx"], providers=["CPUExecutionProvider"])
            self.inputs = [i.name for i in self.session.get_inputs()]
            outputs = [o.name for o in self.session.get_outputs()]
            self.names = self.inputs + outputs[::-1]  # reversed: the backend must reorder them
            self.num_io_tensors = len(self.names)
            self.dtypes = {i.name: np.int32 if "int" in i.type else np.float32 for i in self.session.get_inputs()}

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, name):
            return "in" if name in self.inputs else "out"

        def get_tensor_dtype(self, name):
            return log.tensor_dtypes.get(name, self.dtypes.get(name, np.float32))

        def get_tensor_profile_shape(self, name, profile):
            assert 0 <= profile < self.num_optimization_profiles
            return tuple(tuple(s) for s in self.shapes[name])

        def create_execution_context(self):
            cuda.require_context()
            return Context(self)

    trt.Runtime = lambda logger: types.SimpleNamespace(
        deserialize_cuda_engine=lambda data: Engine(json.loads(bytes(data).decode()))
    )
    return trt, log


def install(monkeypatch, cuda: FakePyCuda, trt=None):
    """Put the stand-ins in ``sys.modules`` and make the CUDA layer use pycuda."""
    import sys

    monkeypatch.setenv("ZEGFORMER_CUDA_BINDING", "pycuda")
    monkeypatch.setitem(sys.modules, "pycuda", cuda.pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", cuda.module)
    if trt is not None:
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
