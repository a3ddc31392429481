"""Backends run the bundle's graphs; everything around them (crops, ensemble, ...) is shared.

``create_backend(bundle, "auto")`` picks TensorRT when usable, else ONNX Runtime with CUDA, else
ONNX Runtime on the CPU, and logs why (with ``precision="bf16"`` on the CPU: OpenVINO). ``"openvino"`` is the
optional OpenVINO CPU backend (``pip install 'zegformer-sdk[openvino]'``). ``"torch"`` runs the PyTorch model from ``train/`` (the
reference); it is imported lazily, like every heavy dependency. Backends are registered by name
(:func:`register_backend`); the command line offers :func:`backend_names`.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..arrays import ArrayOps, host
from ..bundle import Bundle
from ..errors import BackendError

log = logging.getLogger(__name__)


class Backend:
    """The graphs of a bundle as functions of arrays (thread-safe).

    A backend implements :meth:`run`; the four graph calls are defined here, once. Its graph calls
    take and return arrays of :attr:`arrays` (numpy by default). A backend that keeps its data on a
    GPU returns a device :class:`~sdk.arrays.ArrayOps` (e.g. ``CupyArrays``) there: it then
    receives device arrays (``__cuda_array_interface__``) and must return device arrays, so that
    the pipeline never copies between the graphs.
    """

    name = "base"
    device = "cpu"
    precision = None  # a sdk.precision.PrecisionPlan; None = fp32

    @property
    def arrays(self) -> ArrayOps:
        """The array module (with kernels and copies) this backend's graph calls take and return."""
        return host()

    def run(self, graph: str, x: Any) -> List[Any]:
        """Run graph ``graph`` (``proposal``, ``clip_image``, ``clip_text``, ``clip_dense``) → its outputs."""
        raise NotImplementedError

    def proposal(self, image: Any) -> Tuple[Any, Any]:
        """Padded RGB ``[1,3,H,W]`` → ``(mask_logits [1,Q,H/4,W/4], segment_embeddings [1,Q,D])``."""
        masks, emb = self.run("proposal", image)[:2]
        return masks, emb

    def clip_image(self, crops: Any) -> Any:
        """CLIP-normalised crops ``[N,3,S,S]`` → L2-normalised embeddings ``[N,D]``."""
        return self.run("clip_image", crops)[0]

    def clip_text(self, tokens: np.ndarray) -> np.ndarray:
        """Token ids ``[T,77]`` (host) → raw text embeddings ``[T,D]`` (host; vocabularies live on the host)."""
        return self.arrays.download(self.run("clip_text", self.arrays.upload(tokens))[0])

    def clip_dense(self, image: Any) -> Any:
        """CLIP-normalised ``[1,3,Hd,Wd]`` → L2-normalised dense features ``[1,D,h,w]``."""
        return self.run("clip_dense", image)[0]

    def describe(self) -> str:
        label = self.precision.label if self.precision is not None else "fp32"
        return f"{self.name} ({self.device}, {label})"


# name → factory(bundle, kind "cpu"|"cuda", device index, options) → Backend
Factory = Callable[[Bundle, str, int, Dict[str, Any]], Backend]
REGISTRY: Dict[str, Factory] = {}
ALIASES: Dict[str, str] = {}


def register_backend(name: str, factory: Factory, aliases: Sequence[str] = ()) -> None:
    """Make ``backend=name`` (and its aliases) available to ``Segmenter`` and the command line."""
    REGISTRY[name] = factory
    ALIASES.update({a: name for a in aliases})


def backend_names(aliases: bool = True) -> Tuple[str, ...]:
    """Every accepted ``backend=`` value: ``auto``, the registered names and (optionally) their aliases."""
    return ("auto", *REGISTRY, *(ALIASES if aliases else ()))


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
    if name == "auto" and kind != "cuda" and _wants_openvino(options.get("precision")):
        name = "openvino"  # bf16 on the CPU is OpenVINO's
    if name != "auto":
        if name not in REGISTRY:
            raise BackendError(f"unknown backend {backend!r}; choose one of {backend_names()}")
        return REGISTRY[name](bundle, kind, index, options)
    if kind != "cpu":
        chosen = _auto_gpu(bundle, index, options)
        if chosen is not None:
            return chosen
        if kind == "cuda":
            raise BackendError("device='cuda' was asked for, but neither TensorRT nor onnxruntime-gpu can use "
                               "a GPU here (see the log); install onnxruntime-gpu or use device='cpu'")
    log.info("backend: ONNX Runtime on the CPU")
    return REGISTRY["onnxruntime"](bundle, "cpu", 0, options)


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


def _onnxruntime(bundle: Bundle, kind: str, index: int, options: Dict[str, Any]) -> Backend:
    from .onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(bundle, "cuda" if kind == "cuda" else "cpu", index,
                              **_pick(options, "threads", "precision", "io_binding"))


def _openvino(bundle: Bundle, kind: str, index: int, options: Dict[str, Any]) -> Backend:
    from .openvino import OpenVinoBackend

    if kind == "cuda":
        raise BackendError("the OpenVINO backend runs on the CPU; use device='cpu'")
    return OpenVinoBackend(bundle, **_pick(options, "threads", "precision", "cache_dir"))


def _tensorrt(bundle: Bundle, kind: str, index: int, options: Dict[str, Any]) -> Backend:
    from .tensorrt import TensorRTBackend

    if kind == "cpu":
        raise BackendError("the TensorRT backend needs a CUDA GPU; use backend='onnxruntime' for the CPU")
    return TensorRTBackend(bundle, index, **_pick(options, "threads"))


def _torch(bundle: Bundle, kind: str, index: int, options: Dict[str, Any]) -> Backend:
    from .torch import TorchBackend

    device = f"cuda:{index}" if kind == "cuda" else kind
    return TorchBackend(bundle, device, **_pick(options, "checkpoint", "threads"))


register_backend("onnxruntime", _onnxruntime, aliases=("ort", "onnx"))
register_backend("tensorrt", _tensorrt, aliases=("trt",))
register_backend("torch", _torch, aliases=("pytorch",))
register_backend("openvino", _openvino, aliases=("ov",))
