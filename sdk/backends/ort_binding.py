"""ONNX Runtime I/O binding: graph inputs and outputs stay where they are (the GPU, on CUDA).

``session.run`` takes and returns numpy arrays, so on the CUDA provider every graph call would copy
the input to the host and back and the outputs likewise. With I/O binding the input is bound by
its device pointer (no copy) and the outputs are allocated by ONNX Runtime on the same device and
handed back as device arrays (CuPy, zero-copy: the array keeps the ``OrtValue`` alive).

Synchronisation: the producer of the input (CuPy kernels on CuPy's current stream) is finished
before binding (the stream is synchronised), and ``run_with_iobinding`` returns after ONNX
Runtime's own CUDA stream has finished (the provider synchronises at the end of ``Run`` unless
told not to), so the outputs are complete when CuPy reads them.

The same code binds host memory on the CPU provider (``device_type="cpu"``), which is how the
tests exercise it on a machine without a GPU.
"""

from __future__ import annotations

from typing import Any, Callable, List, Sequence

import numpy as np

ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


def buffer_pointer(x: Any) -> int:
    """The data pointer of a C-contiguous device (``__cuda_array_interface__``) or numpy array."""
    cai = getattr(x, "__cuda_array_interface__", None)
    return int(cai["data"][0]) if cai is not None else int(x.ctypes.data)


def ortvalue_to_numpy(value: Any) -> np.ndarray:
    return value.numpy()


def ortvalue_to_cupy(value: Any) -> Any:
    """A CuPy array over an ``OrtValue`` on the GPU, without a copy (the array owns the OrtValue)."""
    import cupy

    dtype = _dtype(value.data_type())
    shape = tuple(value.shape())
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    memory = cupy.cuda.UnownedMemory(value.data_ptr(), nbytes, value)
    return cupy.ndarray(shape, dtype, cupy.cuda.MemoryPointer(memory, 0))


def _dtype(onnx_type: str) -> np.dtype:
    if onnx_type not in ORT_DTYPES:
        raise TypeError(f"unexpected ONNX Runtime output type {onnx_type}")
    return np.dtype(ORT_DTYPES[onnx_type])


class BoundRunner:
    """Runs one session through I/O binding on ``device_type`` (``"cuda"`` or ``"cpu"``)."""

    def __init__(
        self,
        session: Any,
        input_name: str,
        outputs: Sequence[str],
        device_type: str,
        device_id: int,
        to_array: Callable[[Any], Any],
        before_bind: Callable[[], None] = lambda: None,
    ):
        self.session = session
        self.input_name = input_name
        self.outputs = list(outputs)
        self.device_type = device_type
        self.device_id = int(device_id)
        self.to_array = to_array
        self.before_bind = before_bind  # e.g. finish the CuPy stream that produced the input

    def __call__(self, x: Any) -> List[Any]:
        """``x``: C-contiguous, of the graph's input dtype, on this runner's device; kept alive by the caller."""
        self.before_bind()
        binding = self.session.io_binding()
        binding.bind_input(
            self.input_name, self.device_type, self.device_id, x.dtype.type, list(x.shape), buffer_pointer(x)
        )
        for name in self.outputs:
            binding.bind_output(name, self.device_type, self.device_id)
        binding.synchronize_inputs()
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return [self.to_array(v) for v in binding.get_outputs()]


def cuda_runner(session: Any, input_name: str, outputs: Sequence[str], device_id: int) -> BoundRunner:
    """A runner whose inputs and outputs are CuPy arrays on GPU ``device_id``."""
    import cupy

    return BoundRunner(
        session,
        input_name,
        outputs,
        "cuda",
        device_id,
        ortvalue_to_cupy,
        before_bind=lambda: cupy.cuda.get_current_stream().synchronize(),
    )
