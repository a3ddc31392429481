"""The one small CUDA layer of the SDK and the exporter: device selection, streams, memory, copies.

Two bindings behind one interface (:class:`Binding`): cuda-python's runtime API
(``cuda.bindings``, what NVIDIA's TensorRT samples use) and pycuda. :func:`open_device` tries
them in order — ``binding=``, else ``ZEGFORMER_CUDA_BINDING`` (``cuda-python`` or ``pycuda``),
else cuda-python then pycuda — and moves to the next one on *any* failure, at import or at run
time (no driver, no device, a call that errors). When none works it raises :class:`CudaError`
(a :class:`sdk.errors.BackendError`) that gives each binding's reason.

Both bindings work in the device's primary context, shared with the CUDA runtime, TensorRT, CuPy
and torch, so device pointers pass freely between them (:class:`DeviceArray` exposes
``__cuda_array_interface__``; :func:`foreign_array` reads anyone else's).
"""

from __future__ import annotations

import logging
import os
from typing import List, Optional, Sequence

from .base import (
    Binding,
    CudaError,
    DeviceArray,
    DeviceBuffer,
    DeviceInfo,
    ForeignArray,
    foreign_array,
    is_device_array,
)

log = logging.getLogger(__name__)
__all__ = [
    "open_device",
    "Binding",
    "CudaError",
    "DeviceArray",
    "DeviceBuffer",
    "DeviceInfo",
    "ForeignArray",
    "foreign_array",
    "is_device_array",
    "BINDINGS",
    "binding_order",
]
BINDINGS = ("cuda-python", "pycuda")
ENV = "ZEGFORMER_CUDA_BINDING"
INSTALL = "pip install 'zegformer-sdk[tensorrt]' (cuda-python, pycuda)"


def binding_order(binding: Optional[str] = None) -> List[str]:
    """The bindings to try, in order (``binding`` > ``$ZEGFORMER_CUDA_BINDING`` > both)."""
    choice = (binding or os.environ.get(ENV) or "").strip().lower().replace("_", "-")
    if not choice or choice == "auto":
        return list(BINDINGS)
    if choice not in BINDINGS:
        raise CudaError(
            f"unknown CUDA binding {choice!r} (from {'binding=' if binding else ENV}); use one of {BINDINGS} or 'auto'"
        )
    return [choice]


def _open(name: str, index: int) -> Binding:
    if name == "cuda-python":
        from .cuda_python import CudaPython

        return CudaPython(index)
    from .pycuda_binding import PyCuda

    return PyCuda(index)


def open_device(index: int = 0, binding: Optional[str] = None, order: Optional[Sequence[str]] = None) -> Binding:
    """CUDA device ``index`` through the first binding that works here; :class:`CudaError` if none does."""
    reasons = []
    for name in order or binding_order(binding):
        try:
            dev = _open(name, index)
        except ImportError as e:
            reasons.append(f"{name}: not installed ({e})")
        except CudaError as e:
            reasons.append(f"{name}: {e}")
        except Exception as e:  # a binding failing in a way we did not foresee must not hide the others
            reasons.append(f"{name}: {type(e).__name__}: {e}")
        else:
            log.debug("CUDA through %s: %s", name, dev.describe())
            return dev
    raise CudaError(
        f"no usable CUDA device {index} — "
        + "; ".join(reasons)
        + f". Needs an NVIDIA GPU with its driver and a CUDA binding ({INSTALL})."
    )
