"""The ``torch`` backend: the PyTorch model from ``train/`` runs the graphs (the reference).

torch, ``train`` and ``export.dense_clip`` are imported here, when the backend is created — never
when ``sdk`` is imported. The checkpoint is ``manifest["checkpoint"]["path"]`` (relative paths are
taken from the bundle directory) unless ``checkpoint=`` is given; a recorded sha256 is verified
before the file is loaded.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np

from ..bundle import REEXPORT, Bundle
from ..bundle_format import sha256_file
from ..errors import BackendError, BundleError
from . import Backend

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
        raise BackendError(f"the bundle's checkpoint {path} is not here; pass checkpoint='MODEL.pth' "
                           "to use backend='torch'")
    if entry.get("sha256") and sha256_file(path) != entry["sha256"]:
        raise BundleError(f"checkpoint {path} does not match the sha256 recorded in the bundle "
                          f"(it changed after export); pass checkpoint= explicitly or {REEXPORT}")
    return path


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, bundle: Bundle, device: str = "auto",
                 checkpoint: Optional[Union[str, os.PathLike]] = None, threads: Optional[int] = None):
        try:
            import torch

            from train.checkpoint import load_model
        except ImportError as e:
            raise BackendError(f"backend='torch' needs torch and the train package ({e}); "
                               "pip install 'zegformer-sdk[train]'") from e
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
        self._dense = None
        self._lock = threading.Lock()

    def _run(self, fn, x: np.ndarray, dtype=None):
        torch = self._torch
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
            out = fn(t.to(dtype) if dtype is not None else t)
        if isinstance(out, tuple):
            return tuple(np.ascontiguousarray(o.float().cpu().numpy()) for o in out)
        return np.ascontiguousarray(out.float().cpu().numpy())

    def proposal(self, image: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        def fn(x):
            out = self.model.proposals(self.model.normalize(x))
            return out["pred_masks"], out["segment_embeddings"]

        return self._run(fn, image.astype(np.float32, copy=False))

    def clip_image(self, crops: np.ndarray) -> np.ndarray:
        return self._run(self.model.encode_crops, crops.astype(np.float32, copy=False))

    def clip_text(self, tokens: np.ndarray) -> np.ndarray:
        from train.model.clip import encode_text

        return self._run(lambda t: encode_text(self.model.clip, t), tokens, self._torch.int32)

    def clip_dense(self, image: np.ndarray) -> np.ndarray:
        with self._lock:
            if self._dense is None:
                from export.dense_clip import DenseClipGraph

                size = self.bundle.inference.get("dense_size") or image.shape[-2:]
                self._dense = DenseClipGraph(self.model.clip, size).to(self.device).eval()
        return self._run(self._dense, image.astype(np.float32, copy=False))
