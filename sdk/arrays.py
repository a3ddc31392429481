"""The array-module seam: where the pipeline's arrays live, and the compiled kernels for them.

One pipeline runs on the CPU and on a GPU. Every stage after the graphs is written against an
:class:`ArrayOps`: ``xp`` is the array module (numpy's API), ``upload`` / ``download`` are the only
host↔device copies, and the three compiled kernels take and return arrays of ``xp``.

* :func:`host` — numpy; ``upload``/``download`` are no-ops; the kernels run on the CPU.
* :class:`CupyArrays` — CuPy device arrays; the CUDA kernels of ``sdk.kernels`` read them through
  ``__cuda_array_interface__`` on CuPy's current stream, and their results are wrapped as CuPy
  arrays without a copy.

A backend declares which one its graph calls take and return (``Backend.arrays``). The pipeline
downloads only the label map, ``probs`` when asked, the ``[K]`` segment scores and, in the
``pruned`` mode, the ``[Q]`` keep flags.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import numpy as np

from .errors import BackendError


def load_kernels():
    """``sdk.kernels`` (the compiled post-processing), or a :class:`BackendError` saying how to build it."""
    try:
        from . import kernels
    except ImportError as e:
        raise BackendError(
            f"the compiled kernels (sdk._kernels) are not available: {e}; build them with "
            "`pip install -e .` in the repository (needs a C++ compiler and pybind11)"
        ) from e
    return kernels


class ArrayOps:
    """An array module plus the copies and kernels the pipeline needs (numpy by default)."""

    name = "numpy"
    device = "cpu"

    def __init__(self) -> None:
        self.xp = np

    @property
    def kernels(self):
        """``sdk.kernels`` (a :class:`BackendError` when the compiled module is missing)."""
        return load_kernels()

    # ------------------------------------------------------------------ copies
    def upload(self, host: np.ndarray) -> Any:
        """A host array as an array of ``xp`` (a no-op on the CPU)."""
        return host

    def download(self, array: Any) -> np.ndarray:
        """An array of ``xp`` as a host numpy array (a no-op on the CPU)."""
        return array

    def contiguous(self, array: Any, dtype: Any = np.float32) -> Any:
        return self.xp.ascontiguousarray(array, dtype=dtype)

    # ------------------------------------------------------------------ kernels
    def masked_crops(self, image: Any, mask_logits: Any, crop_size: int) -> Any:
        """``[1,N,3,S,S]`` crops (see :func:`sdk.kernels.masked_crops`); the boxes are not needed."""
        return self._wrap(self.kernels.masked_crops(image, mask_logits, crop_size, **self._stream())[0])

    def mask_pool(self, features: Any, mask_logits: Any) -> Any:
        return self._wrap(self.kernels.mask_pool(features, mask_logits, **self._stream()))

    def semantic_inference(
        self,
        mask_logits: Any,
        class_probs: Any,
        image_size: Sequence[int],
        out_size: Sequence[int],
        padded_size: Sequence[int],
        calibrate_mask: np.ndarray,
        calibrate: float,
        return_scores: bool,
    ) -> Tuple[Any, Optional[Any]]:
        """``(labels [1,oh,ow] int32, scores [1,K,oh,ow] or None)``; ``calibrate_mask`` is a host bool array."""
        out = self.kernels.semantic_inference(
            mask_logits,
            class_probs,
            image_size=image_size,
            out_size=out_size,
            padded_size=padded_size,
            calibrate_mask=calibrate_mask,
            calibrate=calibrate,
            return_scores=return_scores,
            **self._stream(),
        )
        labels, scores = out if isinstance(out, tuple) else (out, None)
        return self._wrap(labels), (None if scores is None else self._wrap(scores))

    def _wrap(self, result: Any) -> Any:
        return np.asarray(result)

    def _stream(self) -> dict:
        return {}


_HOST: Optional[ArrayOps] = None


def host() -> ArrayOps:
    """The numpy :class:`ArrayOps` (one per process, created on first use)."""
    global _HOST
    if _HOST is None:
        _HOST = ArrayOps()
    return _HOST


class CupyArrays(ArrayOps):
    """CuPy device arrays on CUDA device ``device_index``, the CUDA kernels on CuPy's current stream."""

    name = "cupy"

    def __init__(self, device_index: int = 0) -> None:
        try:
            import cupy
        except ImportError as e:
            raise BackendError(f"device arrays need CuPy ({e}); pip install 'zegformer-sdk[gpu]'") from e
        if not self.kernels.cuda_available():
            raise BackendError(
                "sdk._kernels was built without CUDA or sees no GPU; rebuild with nvcc "
                "(pip install -e . on the GPU machine)"
            )
        self.xp = cupy
        self.device_index = int(device_index)
        self.device = f"cuda:{self.device_index}"

    def upload(self, host: np.ndarray) -> Any:
        with self.xp.cuda.Device(self.device_index):
            return self.xp.asarray(host)

    def download(self, array: Any) -> np.ndarray:
        return self.xp.asnumpy(array)

    def _wrap(self, result: Any) -> Any:
        return self.xp.asarray(result)  # zero-copy view that keeps the DeviceArray alive

    def _stream(self) -> dict:
        return {"stream": self.xp.cuda.get_current_stream()}
