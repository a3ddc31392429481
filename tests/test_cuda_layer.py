"""The CUDA layer (``sdk.cuda``): binding selection and fallback, error mapping, balanced contexts.

cuda-python is tested for real: its import works without a GPU and every call returns an error
code, so the layer must turn "no driver/device" into a BackendError that says so, and the argument
types it passes must be accepted by the real binding. pycuda is tested for real where it imports
(building it needs the NVIDIA driver library), and through an API stand-in everywhere.
"""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

from sdk.cuda import CudaError, DeviceArray, binding_order, foreign_array, open_device
from sdk.errors import BackendError
from tests.trt_standins import DriverError, FakeDeviceArray, FakePyCuda, install


def _cuda_python_runtime():
    try:
        from sdk.cuda.cuda_python import import_runtime

        return import_runtime()
    except ImportError:
        return None


def _gpu_present(rt) -> bool:
    err, count = rt.cudaGetDeviceCount()
    return int(err) == 0 and count > 0


rt = _cuda_python_runtime()
needs_cuda_python_no_gpu = pytest.mark.skipif(
    rt is None or _gpu_present(rt), reason="needs cuda-python (cuda-bindings) on a machine without a GPU"
)


@needs_cuda_python_no_gpu
def test_cuda_python_without_a_device_is_a_clear_backend_error():
    with pytest.raises(BackendError) as info:
        open_device(0, binding="cuda-python")
    msg = str(info.value)
    assert isinstance(info.value, CudaError)
    assert "cuda-python" in msg and "cudaGetDeviceCount failed" in msg and "no NVIDIA driver/GPU here" in msg
    assert "pip install" in msg


@needs_cuda_python_no_gpu
def test_cuda_python_calls_take_our_argument_types():
    """Every runtime call the binding makes, with the argument types it passes, against the real
    cuda.bindings: without a driver each returns an error code (mapped to CudaError), not a TypeError."""
    from sdk.cuda.cuda_python import CudaPython

    b = object.__new__(CudaPython)  # the constructor would stop at the missing device
    b.rt, b.index = rt, 0
    host = np.zeros(4, np.float32)
    calls = [
        lambda: b.malloc(16),
        lambda: b.free(4096),
        lambda: b.stream(),
        lambda: b.destroy_stream(7),
        lambda: b.synchronize(7),
        lambda: b.htod(4096, host, 7),
        lambda: b.dtoh(host, 4096, 7),
        lambda: b.dtod(4096, 8192, 16, 0),
        lambda: b.wait(7, 1),
        lambda: b._read_info(),
    ]
    for call in calls:
        with pytest.raises(CudaError, match="failed: cuda"):
            call()
    with pytest.raises(CudaError, match="cudaGetDevice"):
        with b.activate():
            pass


def test_real_pycuda_without_a_device_is_a_backend_error():
    try:
        import pycuda.driver  # noqa: F401
    except ImportError as e:
        pytest.skip(
            f"pycuda does not import here ({e}); it cannot be built without the NVIDIA driver's "
            "libcuda.so — the stand-in tests below cover its API"
        )
    with pytest.raises(BackendError, match="pycuda"):
        open_device(0, binding="pycuda")


def test_pycuda_driver_errors_are_mapped(monkeypatch):
    """pycuda's own exception type (not a RuntimeError) from cuInit surfaces as a BackendError."""
    cuda = FakePyCuda()

    def no_driver(flags=0):
        raise DriverError("cuInit failed: no CUDA-capable device is detected")

    cuda.module.init = no_driver
    install(monkeypatch, cuda)
    assert not issubclass(DriverError, RuntimeError)
    with pytest.raises(BackendError, match="pycuda cuInit/cuDeviceGetCount failed: DriverError: cuInit failed"):
        open_device(0)
    with pytest.raises(BackendError, match="device 3 not found"):
        install(monkeypatch, FakePyCuda(devices=1))
        open_device(3)


def test_fallback_covers_run_time_failures(monkeypatch):
    """cuda-python imports but fails at run time (or is absent): pycuda is used; the order is settable."""
    import sdk.cuda as layer
    from sdk.cuda import cuda_python

    class Broken(cuda_python.CudaPython):
        def __init__(self, index=0):
            raise CudaError("cudaGetDeviceCount failed: cudaErrorNoDevice")

    monkeypatch.setattr(cuda_python, "CudaPython", Broken)
    cuda = FakePyCuda()
    install(monkeypatch, cuda)
    monkeypatch.delenv("ZEGFORMER_CUDA_BINDING")
    assert binding_order() == ["cuda-python", "pycuda"]
    dev = layer.open_device(0)
    assert dev.name == "pycuda" and dev.info().compute_capability == "8.9"
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)  # now neither works: both reasons are given
    with pytest.raises(BackendError) as info:
        layer.open_device(0)
    assert "cuda-python: cudaGetDeviceCount failed" in str(info.value) and "pycuda: not installed" in str(info.value)
    monkeypatch.setenv("ZEGFORMER_CUDA_BINDING", "pycuda")
    assert binding_order() == ["pycuda"]
    with pytest.raises(BackendError, match="unknown CUDA binding 'numba'"):
        binding_order("numba")


def test_memory_is_owned_and_contexts_balanced_across_threads(monkeypatch):
    cuda = FakePyCuda()
    install(monkeypatch, cuda)
    dev = open_device(0)
    host = np.arange(12, dtype=np.float32).reshape(3, 4)
    made = []

    def worker():  # allocate on a worker thread; the worker ends before the memory is freed
        made.append(DeviceArray.from_host(dev, host))

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    arr = made.pop()
    np.testing.assert_array_equal(arr.copy_to_host(), host)
    cai = arr.__cuda_array_interface__
    assert cai["shape"] == (3, 4) and cai["typestr"] == "<f4" and cai["version"] == 3
    assert foreign_array(arr).ptr == arr.ptr and foreign_array(arr).contiguous
    with pytest.raises(TypeError, match="copy_to_host"):
        np.asarray(arr)  # no silent downloads
    del arr  # freed here, on the main thread, with the context pushed for it
    assert cuda.memory == {} and cuda.balanced()
    with pytest.raises(BackendError, match="__cuda_array_interface__"):
        foreign_array(object())
    fake = FakeDeviceArray(cuda, host, stream=5)
    assert foreign_array(fake).stream == 5 and foreign_array(fake).dtype == np.float32
