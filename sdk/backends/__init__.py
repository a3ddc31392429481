"""Backends run the bundle's graphs; everything around them (crops, ensemble, ...) is shared.

``create_backend(bundle, "auto")`` picks TensorRT when usable, else ONNX Runtime with CUDA, else
ONNX Runtime on the CPU, and logs why (with ``precision="bf16"`` on the CPU: OpenVINO). ``"openvino"``
is the optional OpenVINO CPU backend (``pip install 'zegformer-sdk[openvino]'``). ``"torch"`` runs the PyTorch model from ``train/`` (the
reference); it is imported lazily, like every heavy dependency.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..bundle import Bundle
from ..errors import BackendError

log = logging.getLogger(__name__)
BACKENDS = ("auto", "onnxruntime", "openvino", "tensorrt", "torch")
ALIASES = {"ort": "onnxruntime", "onnx": "onnxruntime", "trt": "tensorrt", "pytorch": "torch", "ov": "openvino"}


class Backend:
    """The four graphs of a bundle, as numpy-in/numpy-out functions (thread-safe)."""

    name = "base"
    device = "cpu"
    precision = None  # a sdk.precision.PrecisionPlan; None = fp32

    def proposal(self, image: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Padded RGB ``[1,3,H,W]`` → ``(mask_logits [1,Q,H/4,W/4], segment_embeddings [1,Q,D])``."""
        raise NotImplementedError

    def clip_image(self, crops: np.ndarray) -> np.ndarray:
        """CLIP-normalised crops ``[N,3,S,S]`` → L2-normalised embeddings ``[N,D]``."""
        raise NotImplementedError

    def clip_text(self, tokens: np.ndarray) -> np.ndarray:
        """Token ids ``[T,77]`` → raw text embeddings ``[T,D]``."""
        raise NotImplementedError

    def clip_dense(self, image: np.ndarray) -> np.ndarray:
        """CLIP-normalised ``[1,3,Hd,Wd]`` → L2-normalised dense features ``[1,D,h,w]``."""
        raise NotImplementedError

    def describe(self) -> str:
        label = self.precision.label if self.precision is not None else "fp32"
        return f"{self.name} ({self.device}, {label})"


def parse_device(device: str) -> Tuple[str, int]:
    """``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` → (kind, index)."""
    d = (device or "auto").strip().lower()
    if d in ("auto", "cpu", "cuda", "gpu"):
        return ("cuda" if d == "gpu" else d), 0
    if d.startswith("cuda:") and d[5:].isdigit():
        return "cuda", int(d[5:])
    raise BackendError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")


def create_backend(bundle: Bundle, backend: str = "auto", device: str = "auto",
                   options: Optional[Dict[str, Any]] = None) -> Backend:
    """The backend called ``backend`` on ``device`` (see the module docstring for ``"auto"``).

    ``options["precision"]`` (see ``sdk.precision``) is resolved for the chosen backend and passed
    to it; an unsupported combination raises ``PrecisionError``.
    """
    backend_obj = _create(bundle, backend, device, dict(options or {}))
    if backend_obj.precision is None:
        from ..precision import resolve

        kind = "cpu" if backend_obj.device == "cpu" else "cuda"
        backend_obj.precision = resolve(bundle, backend_obj.name, kind, (options or {}).get("precision"))
    return backend_obj


def _create(bundle: Bundle, backend: str, device: str, options: Dict[str, Any]) -> Backend:
    kind, index = parse_device(device)
    name = (backend or "auto").strip().lower()
    name = ALIASES.get(name, name)
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if name == "auto" and kind != "cuda" and _wants_openvino(options.get("precision")):
        name = "openvino"  # bf16 on the CPU is OpenVINO's
    if name == "openvino":
        from .openvino import OpenVinoBackend

        if kind == "cuda":
            raise BackendError("the OpenVINO backend runs on the CPU; use device='cpu'")
        return OpenVinoBackend(bundle, **_pick(options, "threads", "precision", "cache_dir"))
    if name == "torch":
        from .torch import TorchBackend

        torch_device = f"cuda:{index}" if kind == "cuda" else kind
        return TorchBackend(bundle, torch_device, **_pick(options, "checkpoint", "threads"))
    if name == "tensorrt":
        from .tensorrt import TensorRTBackend

        if kind == "cpu":
            raise BackendError("the TensorRT backend needs a CUDA GPU; use backend='onnxruntime' for the CPU")
        return TensorRTBackend(bundle, index, **_pick(options, "threads"))
    if name == "auto" and kind != "cpu":
        chosen = _auto_gpu(bundle, index, options)
        if chosen is not None:
            return chosen
    from .onnxruntime import OnnxRuntimeBackend

    if kind == "cuda" and name != "auto":
        return OnnxRuntimeBackend(bundle, "cuda", index, **_pick(options, "threads", "precision"))
    if kind == "cuda":
        raise BackendError("device='cuda' was asked for, but neither TensorRT nor onnxruntime-gpu can use "
                           "a GPU here (see the log); install onnxruntime-gpu or use device='cpu'")
    log.info("backend: ONNX Runtime on the CPU")
    return OnnxRuntimeBackend(bundle, "cpu", 0, **_pick(options, "threads", "precision"))


def _auto_gpu(bundle: Bundle, index: int, options: Dict[str, Any]) -> Optional[Backend]:
    """TensorRT if usable, else ONNX Runtime CUDA if available, else ``None`` (with the reasons logged)."""
    from .onnxruntime import OnnxRuntimeBackend, cuda_provider_available
    from .tensorrt import TensorRTBackend, tensorrt_unusable_reason

    reason = tensorrt_unusable_reason(bundle, index)
    if reason is None:
        log.info("backend: TensorRT on cuda:%d", index)
        return TensorRTBackend(bundle, index, **_pick(options, "threads"))
    log.info("backend: not TensorRT: %s", reason)
    if cuda_provider_available():
        log.info("backend: ONNX Runtime with the CUDA execution provider on cuda:%d", index)
        return OnnxRuntimeBackend(bundle, "cuda", index, **_pick(options, "threads", "precision"))
    log.info("backend: not ONNX Runtime CUDA: onnxruntime-gpu is not installed (or sees no GPU)")
    return None


def _wants_openvino(spec: Any) -> bool:
    from ..precision import parse

    parsed = parse(spec)
    return "bf16" in ((parsed,) if isinstance(parsed, str) else tuple(parsed.values()))


def _pick(options: Dict[str, Any], *keys: str) -> Dict[str, Any]:
    return {k: options[k] for k in keys if options.get(k) is not None}
