"""The array-module seam: with a device-array backend no pipeline stage converts a device array to numpy.

``FakeDevice`` arrays hold numpy data but refuse every host conversion (``__array__``, ``__bool__``,
``__float__``, ``item``, ...) and every numpy function (``__array_function__``); a backend written
here takes and returns them, and its ``ArrayOps`` counts the explicit uploads and downloads. The
pipeline must give the same results as on numpy, and download only the label map, ``probs`` when
asked, the per-class scores and, in the ``pruned`` mode, the per-query keep flags. This checks the
code path the GPU backends run, without a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest

from sdk.arrays import ArrayOps, host
from sdk.backends import REGISTRY, Backend, BackendSpec
from tests.sdk_helpers import NAMES, block_image, random_text_features, tiny_bundle


class HostConversion(AssertionError):
    pass


def unwrap(x):
    if isinstance(x, FakeDevice):
        return x.data
    if isinstance(x, (list, tuple)):
        return type(x)(unwrap(v) for v in x)
    if isinstance(x, dict):
        return {k: unwrap(v) for k, v in x.items()}
    return x


def wrap(x):
    if isinstance(x, (np.ndarray, np.generic)):
        return FakeDevice(np.asarray(x))
    if isinstance(x, tuple):
        return tuple(wrap(v) for v in x)
    if isinstance(x, list):
        return [wrap(v) for v in x]
    return x


def _refuse(name):
    def refuse(self, *args, **kwargs):
        raise HostConversion(f"{name} of a device array (shape {self.data.shape})")

    return refuse


def _binary(name):
    def op(self, other):
        return wrap(getattr(self.data, name)(unwrap(other)))

    return op


class FakeDevice:
    """A device array stand-in: numpy's API, no way to the host except ``ArrayOps.download``."""

    __array_ufunc__ = None  # numpy scalars and arrays defer binary operators to us
    __array__ = _refuse("__array__")
    __array_function__ = _refuse("__array_function__")
    __bool__ = _refuse("__bool__")
    __float__ = _refuse("__float__")
    __int__ = _refuse("__int__")
    __index__ = _refuse("__index__")
    __iter__ = _refuse("__iter__")
    item = _refuse("item")
    tolist = _refuse("tolist")
    __array_interface__ = property(_refuse("__array_interface__"))
    __buffer__ = _refuse("__buffer__")

    def __init__(self, data: np.ndarray):
        self.data = data

    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    T = property(lambda self: FakeDevice(self.data.T))

    def __len__(self):
        return len(self.data)

    def __getitem__(self, key):
        return wrap(self.data[unwrap(key)])

    def __setitem__(self, key, value):
        self.data[unwrap(key)] = unwrap(value)

    def __neg__(self):
        return FakeDevice(-self.data)

    def __invert__(self):
        return FakeDevice(~self.data)

    def __getattr__(self, name):  # methods: reshape, astype, max, sum, mean, any, copy, ravel, ...
        attr = getattr(self.data, name)
        if not callable(attr):
            raise AttributeError(name)
        return lambda *a, **k: wrap(attr(*unwrap(a), **unwrap(k)))


for _name in ("add", "sub", "mul", "truediv", "pow", "matmul", "ge", "gt", "le", "lt", "eq", "ne", "and", "or"):
    for _form in (f"__{_name}__", f"__r{_name}__"):
        if hasattr(np.ndarray, _form):
            setattr(FakeDevice, _form, _binary(_form))


class FakeXP:
    """The array module of :class:`FakeDevice`: numpy's functions on unwrapped data, results wrapped."""

    def __init__(self, module=np):
        self._module = module

    def __getattr__(self, name):
        attr = getattr(self._module, name)
        if name == "linalg":
            return FakeXP(attr)
        if isinstance(attr, type) or not callable(attr):
            return attr  # dtypes and constants
        return lambda *a, **k: wrap(attr(*unwrap(a), **unwrap(k)))


class FakeKernels:
    """``sdk.kernels`` for fake device arrays (the CPU kernels run on the data behind them)."""

    def __getattr__(self, name):
        fn = getattr(host().kernels, name)
        return lambda *a, **k: fn(*unwrap(a), **unwrap(k))


class FakeDeviceArrays(ArrayOps):
    name = "fake-device"
    device = "fake:0"

    def __init__(self):
        self.xp = FakeXP()
        self.uploads, self.downloads = [], []

    @property
    def kernels(self):
        return FakeKernels()

    def upload(self, host_array):
        assert isinstance(host_array, np.ndarray), type(host_array)
        self.uploads.append(host_array.shape)
        return FakeDevice(host_array.copy())

    def download(self, array):
        assert isinstance(array, FakeDevice), f"download of a {type(array).__name__}, not a device array"
        self.downloads.append((array.shape, array.dtype))
        return array.data.copy()

    def _wrap(self, result):
        return wrap(np.asarray(result))


class FakeDeviceBackend(Backend):
    """ONNX Runtime behind a device-array interface: takes and returns only ``FakeDevice`` arrays."""

    name = "fake-device"
    device = "fake:0"

    def __init__(self, bundle, plan):
        from sdk.backends.onnxruntime import OnnxRuntimeBackend

        self._arrays = FakeDeviceArrays()
        self._ort = OnnxRuntimeBackend(bundle, "cpu", precision=plan)
        self.precision = plan

    @property
    def arrays(self):
        return self._arrays

    def run(self, graph, x):
        assert isinstance(x, FakeDevice), f"{graph} got a {type(x).__name__}, not a device array"
        return [FakeDevice(o) for o in self._ort.run(graph, x.data)]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


@pytest.fixture
def segmenters(bundle, monkeypatch):
    from sdk import Segmenter

    monkeypatch.setitem(
        REGISTRY,
        "fake-device",
        BackendSpec("fake-device", lambda b, device, plan, options: FakeDeviceBackend(b, plan), devices=("cpu",)),
    )
    features = random_text_features(len(NAMES), 32)
    made = []
    for backend in ("onnxruntime", "fake-device"):
        seg = Segmenter(bundle, backend=backend, cache_dir=False, min_size=64, clip_batch=4)
        seg.set_vocabulary(NAMES, text_features=features[0], text_features_clip=features[1])
        made.append(seg)
    return made


@pytest.mark.parametrize("mode", ["cropmask", "pruned", "maskpool", "proposal"])
@pytest.mark.parametrize("return_probs", [False, True])
def test_pipeline_keeps_device_arrays_on_the_device(segmenters, mode, return_probs):
    cpu, device = segmenters
    image = block_image(90, 120, seed=7)
    arrays = device.backend.arrays
    arrays.downloads.clear()
    ref = cpu(image, mode=mode, return_probs=return_probs)
    out = device(image, mode=mode, return_probs=return_probs)
    np.testing.assert_array_equal(out.label_map, ref.label_map)
    assert [(s.index, s.area, s.score) for s in out.segments] == [(s.index, s.area, s.score) for s in ref.segments]
    if return_probs:
        np.testing.assert_array_equal(out.probs, ref.probs)
    k, q = len(NAMES), out.info["queries"]
    expected = [((90, 120), np.int32)]
    expected += [((k, 90, 120), np.float32)] if return_probs else []
    expected += [((k,), np.float32)]
    expected += [((q,), np.bool_)] if mode == "pruned" else []
    assert sorted(arrays.downloads, key=str) == sorted(expected, key=str)
    assert out.info["backend"] == "fake-device"


def test_the_fake_device_array_refuses_host_conversions():
    a = FakeDevice(np.ones(3, np.float32))
    for convert in (np.asarray, bool, float, list, lambda x: x.item(), lambda x: np.concatenate([x, x])):
        with pytest.raises(HostConversion):
            convert(a[:1] if convert in (bool, float) else a)
    assert isinstance(np.float32(2) * a, FakeDevice) and isinstance(FakeXP().exp(a), FakeDevice)
