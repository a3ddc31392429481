"""The TensorRT backend's orchestration, against stand-ins for ``tensorrt`` and ``pycuda``.

No TensorRT or GPU is needed: the fake "engines" run the bundle's ONNX graphs with ONNX Runtime and
the fake device memory is a dict of numpy arrays. What is checked is the SDK's side: engine
selection, verification before deserialisation, optimisation-profile chunking and fallback,
output order, one execution context per thread, and equal results to the ONNX Runtime backend.
"""
from __future__ import annotations

import itertools
import json
import sys
import threading
import types

import numpy as np
import pytest

from tests.sdk_helpers import NAMES, block_image, copy_bundle, random_text_features, shared_bundle

pytest.importorskip("torch")  # the bundle is exported with torch


class FakeCuda:
    """``pycuda.driver``: device memory is a dict of arrays keyed by fake addresses."""

    def __init__(self):
        self.memory, self.counter = {}, itertools.count(4096, 4096)
        self.module = types.ModuleType("pycuda.driver")
        m = self.module
        m.init = lambda: None
        m.Device = self.device_class()
        m.Context = types.SimpleNamespace(pop=lambda: None)
        m.Stream = lambda: types.SimpleNamespace(handle=1, synchronize=lambda: None)
        m.pagelocked_empty = lambda shape, dtype: np.empty(shape, dtype)
        m.mem_alloc = self.mem_alloc
        m.memcpy_htod_async = lambda dst, src, stream=None: self.memory.__setitem__(int(dst), np.array(src))
        m.memcpy_dtoh_async = lambda dst, src, stream=None: np.copyto(dst, self.memory[int(src)])

    @staticmethod
    def device_class():
        class Device:
            def __init__(self, i):
                pass

            count = staticmethod(lambda: 1)
            compute_capability = lambda self: (8, 9)  # noqa: E731
            name = lambda self: "Fake GPU"  # noqa: E731
            retain_primary_context = lambda self: types.SimpleNamespace(push=lambda: None)  # noqa: E731
        return Device

    def mem_alloc(self, nbytes):
        return next(self.counter)


def fake_tensorrt(cuda: FakeCuda, bundle_dir, max_batch):
    """``tensorrt``: an engine file holds a graph name; the engine runs that ONNX graph with ORT."""
    import onnxruntime as ort

    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0"
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=2: None})
    trt.nptype = lambda dtype: dtype
    contexts, executed = [], []

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses, self.thread = engine, {}, {}, threading.get_ident()
            contexts.append(self)

        def set_input_shape(self, name, shape):
            assert self.thread == threading.get_ident(), "execution context shared between threads"
            lo, _, hi = self.engine.get_tensor_profile_shape(name, 0)
            if not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
                return False
            outs = self.engine.session.run(None, {name: np.zeros(shape, self.engine.dtypes[name])})
            self.shapes = {o.name: v.shape for o, v in zip(self.engine.session.get_outputs(), outs)}
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            return self.shapes[name]

        def set_tensor_address(self, name, address):
            self.addresses[name] = address

        def execute_async_v3(self, stream_handle):
            executed.append((self.engine.graph, self.shapes[self.engine.inputs[0]][0]))
            inp = self.engine.inputs[0]
            outs = self.engine.session.run(None, {inp: cuda.memory[self.addresses[inp]]})
            for o, v in zip(self.engine.session.get_outputs(), outs):
                cuda.memory[self.addresses[o.name]] = v
            return True

    class Engine:
        def __init__(self, graph):
            self.graph = graph
            path = bundle_dir / json.loads((bundle_dir / "manifest.json").read_text())["graphs"][graph]["file"]
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            self.inputs = [i.name for i in self.session.get_inputs()]
            outputs = [o.name for o in self.session.get_outputs()]
            self.names = self.inputs + outputs[::-1]  # reversed: the backend must reorder them
            self.num_io_tensors = len(self.names)
            self.dtypes = {i.name: np.int32 if "int" in i.type else np.float32 for i in self.session.get_inputs()}
            self.shape = list(self.session.get_inputs()[0].shape)

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, name):
            return "in" if name in self.inputs else "out"

        def get_tensor_dtype(self, name):
            return self.dtypes.get(name, np.float32)

        def get_tensor_profile_shape(self, name, profile):
            lo = [1 if not isinstance(d, int) else d for d in self.shape]
            hi = [max_batch] + [128 if not isinstance(d, int) else d for d in self.shape[1:]]
            return lo, lo, hi

        def create_execution_context(self):
            return Context(self)

    trt.Runtime = lambda logger: types.SimpleNamespace(
        deserialize_cuda_engine=lambda data: Engine(data.decode()))
    return trt, contexts, executed


@pytest.fixture()
def trt_bundle(tmp_path_factory, tmp_path, monkeypatch):
    """A bundle copy with fake engines for every graph, and the fake modules installed."""
    from sdk.bundle_format import sha256_file

    path = copy_bundle(shared_bundle(tmp_path_factory), tmp_path / "b")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["engines"] = {}
    for graph in ("proposal", "clip_image", "clip_dense"):  # no clip_text engine: ORT runs it
        (path / f"{graph}.engine").write_text(graph)
        manifest["files"][f"{graph}.engine"] = sha256_file(path / f"{graph}.engine")
        manifest["engines"][graph] = {"file": f"{graph}.engine", "tensorrt": "10.3.0", "gpu": "Fake GPU",
                                      "compute_capability": "8.9", "precision": "fp32",
                                      "onnx_sha256": manifest["files"][f"{graph}.onnx"]}
    (path / "manifest.json").write_text(json.dumps(manifest))
    cuda = FakeCuda()
    trt, contexts, executed = fake_tensorrt(cuda, path, max_batch=4)
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = cuda.module
    for name, mod in (("tensorrt", trt), ("pycuda", pycuda), ("pycuda.driver", cuda.module)):
        monkeypatch.setitem(sys.modules, name, mod)
    return path, contexts, executed


def test_tensorrt_backend_matches_onnxruntime(trt_bundle):
    from sdk import Segmenter

    path, contexts, executed = trt_bundle
    features = random_text_features(len(NAMES), 32)
    results = {}
    for backend in ("auto", "onnxruntime"):
        seg = Segmenter(path, backend=backend, device="auto", min_size=None, cache_dir=False)
        seg.set_vocabulary(NAMES, text_features=features[0], text_features_clip=features[1])
        results[seg.backend.name] = seg
    trt_seg = results["tensorrt"]
    assert sorted(trt_seg.backend._engines) == ["clip_dense", "clip_image", "proposal"]
    image = block_image()
    for mode in ("cropmask", "maskpool"):
        a = trt_seg(image, mode=mode, return_probs=True)  # 10 crops in batches of the profile's 4
        b = results["onnxruntime"](image, mode=mode, return_probs=True)
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)
    assert [n for g, n in executed if g == "clip_image"] == [4, 4, 2]  # 10 crops, profile max 4
    assert {g for g, _ in executed} == {"proposal", "clip_image", "clip_dense"}
    runs = len(executed)
    big = block_image(130, 100)  # 160 rows > the proposal profile's 128: ONNX Runtime fallback
    np.testing.assert_array_equal(trt_seg(big).label_map, results["onnxruntime"](big).label_map)
    assert [g for g, _ in executed[runs:]] == ["clip_image"] * 3  # the proposal ran in ONNX Runtime
    trt_seg.set_vocabulary(["zebra"])  # clip_text has no engine: ONNX Runtime
    assert trt_seg.text_graph_runs == 2  # the segment-classifier and the CLIP template sets
    threads = [threading.Thread(target=trt_seg, args=(image,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({c.thread for c in contexts}) >= 3  # main thread + one context per worker thread


def test_tampered_engine_is_refused(trt_bundle):
    from sdk import BundleError, Segmenter

    path = trt_bundle[0]
    (path / "clip_image.engine").write_text("proposal")
    with pytest.raises(BundleError, match="clip_image.engine"):
        Segmenter(path, backend="tensorrt", device="cuda", cache_dir=False)
