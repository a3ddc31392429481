"""The ``torch`` backend: the PyTorch model from ``train/`` runs the graphs (the reference).

torch, ``train`` and ``export.graphs`` are imported here, when the backend is created — never
when ``sdk`` is imported. The checkpoint is ``manifest["checkpoint"]["path"]`` (relative paths are
taken from the bundle directory) unless ``checkpoint=`` is given; a recorded sha256 is verified
before the file is loaded.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np

from ..arrays import ArrayOps, CupyArrays, host
from ..bundle import REEXPORT, Bundle
from ..bundle_format import sha256_file
from ..errors import BackendError, BundleError
from .base import Backend, BackendSpec, Device, as_plan

log = logging.getLogger(__name__)


def checkpoint_path(bundle: Bundle, checkpoint: Optional[Union[str, os.PathLike]]) -> Path:
    """The checkpoint to load, verified against the manifest when it is the recorded one."""
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise BackendError(f"checkpoint not found: {path}")
        return path
    entry = bundle.manifest.get("checkpoint") or {}
    if not entry.get("path"):
        raise BackendError("the bundle records no checkpoint; pass checkpoint='MODEL.pth' to use backend='torch'")
    path = Path(entry["path"]).expanduser()
    path = path if path.is_absolute() else bundle.root / path
    if not path.is_file():
        raise BackendError(
            f"the bundle's checkpoint {path} is not here; pass checkpoint='MODEL.pth' to use backend='torch'"
        )
    if entry.get("sha256") and sha256_file(path) != entry["sha256"]:
        raise BundleError(
            f"checkpoint {path} does not match the sha256 recorded in the bundle "
            f"(it changed after export); pass checkpoint= explicitly or {REEXPORT}"
        )
    return path


class TorchBackend(Backend):
    """The exporter's graph modules (``export.graphs``) run by PyTorch.

    On a CUDA device with CuPy installed, the graph calls take and return CuPy device arrays
    (exchanged with torch through DLPack, no copy), so the pipeline stays on the GPU; otherwise numpy.
    """

    name = "torch"

    def __init__(
        self,
        bundle: Bundle,
        device: str = "auto",
        checkpoint: Optional[Union[str, os.PathLike]] = None,
        threads: Optional[int] = None,
        precision: Any = None,
    ):
        """``precision``: a :class:`~sdk.precision.PrecisionPlan` (fp32 only: the reference)."""
        self.precision = as_plan(precision)
        try:
            import torch

            from export.graphs import ClipImageGraph, ClipTextGraph, ProposalGraph
            from train.checkpoint import load_model
        except ImportError as e:
            raise BackendError(
                f"backend='torch' needs torch and the checkout's train/ and export/ ({e}): "
                "in a clone of zegformer-sdk, pip install -e '.[train]' and run from the clone "
                "(pip installs only sdk)"
            ) from e
        self._torch = torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        if threads:
            torch.set_num_threads(int(threads))
        path = checkpoint_path(bundle, checkpoint)
        log.info("torch backend: loading %s on %s", path, device)
        self.model, _ = load_model(path, device)
        self.bundle = bundle
        self._graphs = {
            "proposal": ProposalGraph(self.model),
            "clip_image": ClipImageGraph(self.model),
            "clip_text": ClipTextGraph(self.model),
        }
        self._arrays = self._device_arrays()
        self._lock = threading.Lock()

    def _device_arrays(self) -> ArrayOps:
        if not self.device.startswith("cuda"):
            return host()
        try:
            return CupyArrays(self._torch.device(self.device).index or 0)
        except BackendError as e:
            log.info("torch backend: host arrays between the graphs (%s)", e)
            return host()

    @property
    def arrays(self) -> ArrayOps:
        return self._arrays

    def _module(self, graph: str):
        with self._lock:
            if graph == "clip_dense" and graph not in self._graphs:
                from export.dense_clip import DenseClipGraph

                size = self.bundle.settings.dense_size
                self._graphs[graph] = DenseClipGraph(self.model.clip, size).to(self.device).eval()
            return self._graphs[graph]

    def run(self, graph: str, x: Any) -> List[Any]:
        torch = self._torch
        dtype = torch.int32 if graph == "clip_text" else torch.float32
        with torch.inference_mode():
            if isinstance(x, np.ndarray):
                t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
            else:  # a device array of self.arrays
                t = torch.from_dlpack(x)
            out = self._module(graph)(t.to(dtype))
        outs = out if isinstance(out, tuple) else (out,)
        if self._arrays.name == "numpy":
            return [np.ascontiguousarray(o.float().cpu().numpy()) for o in outs]
        return [self._arrays.xp.from_dlpack(o.float().contiguous()) for o in outs]


def _available(bundle: Bundle, device: Device, plan) -> Optional[str]:
    try:
        import torch
    except ImportError as e:
        return f"torch is not installed ({e}): pip install -e '.[train]' in a clone of zegformer-sdk"
    if device.kind == "cuda" and not torch.cuda.is_available():
        return "torch sees no CUDA GPU"
    return None


def _create(bundle: Bundle, device: Device, plan, options: Dict[str, Any]) -> Backend:
    return TorchBackend(bundle, str(device), precision=plan, **options)


# The reference: fp32 only, and never picked by backend="auto" (no rank).
SPEC = BackendSpec(
    name="torch",
    factory=_create,
    aliases=("pytorch",),
    devices=("cuda", "cpu"),
    available=_available,
    options=("checkpoint", "threads"),
)
