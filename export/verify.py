"""ONNX Runtime vs the PyTorch modules, at sizes other than the trace size.

Error measure per output: ``max_abs = max|onnx - torch|`` and ``rel = max_abs / max|torch|``
(relative to the output's scale, which stays meaningful near zeros). A check fails when ``rel``
exceeds the tolerance (float32: 1e-3).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from train.model import ZegFormer

from .errors import ExportError
from .graphs import GraphSpec

log = logging.getLogger(__name__)
TOLERANCE = 1e-3
PROMPTS = ("A photo of a cat in the scene.", "a photo of the large dining table, chairs", "itap of a traffic light")


@dataclass
class Check:
    graph: str
    case: str
    output: str
    max_abs: float
    rel: float
    tol: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.rel)) and self.rel <= self.tol

    def __str__(self) -> str:
        return (
            f"{self.graph:<10} {self.case:<22} {self.output:<18} max_abs {self.max_abs:.3e}  "
            f"rel {self.rel:.3e}  {'ok' if self.ok else 'FAIL'}"
        )


def compare(got: np.ndarray, ref: np.ndarray) -> Tuple[float, float]:
    """``(max_abs, rel)`` of ``got`` against ``ref``; shape mismatches are infinitely wrong."""
    if got.shape != ref.shape:
        return float("inf"), float("inf")
    err = float(np.abs(got.astype(np.float64) - ref.astype(np.float64)).max()) if ref.size else 0.0
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    return err, err / max(scale, 1e-12)


def block_image(h: int, w: int, batch: int, seed: int) -> np.ndarray:
    """A photo-like RGB 0..255 image (colour blocks + noise), like the reference fixture."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (batch, 3, max(1, h // 24), max(1, w // 24))).astype(np.float32)
    rows = np.arange(h) * blocks.shape[2] // h
    cols = np.arange(w) * blocks.shape[3] // w
    img = blocks[:, :, rows][:, :, :, cols] + rng.integers(-16, 16, (batch, 3, h, w))
    return np.clip(img, 0, 255).astype(np.float32)


def padded_block_image(h: int, w: int, batch: int, seed: int, mean: Sequence[float], div: int) -> np.ndarray:
    """An image of a size that is *not* a multiple of ``div``, padded bottom/right with ``mean``."""
    ih, iw = max(1, h - div // 2 - 3), max(1, w - div // 4 - 5)
    img = np.empty((batch, 3, h, w), np.float32)
    img[:] = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    img[:, :, :ih, :iw] = block_image(ih, iw, batch, seed)
    return img


def default_sizes(trace: Sequence[int], div: int) -> List[Tuple[int, int, int]]:
    """Two ``(batch, H, W)`` cases that differ from the trace size in both height and width."""
    h, w = int(trace[0]), int(trace[1])

    def other(x: int, delta: int) -> int:
        return x - delta if x - delta >= div else x + delta

    return [(2, h + div, other(w, div)), (1, other(h, 2 * div), w + 2 * div)]


def proposal_cases(model: ZegFormer, sizes: Sequence[Tuple[int, int, int]]) -> Dict[str, Tuple[np.ndarray]]:
    cfg = model.cfg
    rng = np.random.default_rng(1)
    cases = {}
    for i, (b, h, w) in enumerate(sizes):
        cases[f"random {b}x{h}x{w}"] = ((rng.random((b, 3, h, w)) * 255).astype(np.float32),)
        cases[f"image {b}x{h}x{w}"] = (padded_block_image(h, w, b, i, cfg.pixel_mean, cfg.size_divisibility),)
    return cases


def clip_image_cases(model: ZegFormer, counts: Sequence[int]) -> Dict[str, Tuple[np.ndarray]]:
    s = model.cfg.crop_size
    mean = np.asarray(model.cfg.clip_pixel_mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(model.cfg.clip_pixel_std, np.float32).reshape(1, 3, 1, 1)
    rng = np.random.default_rng(2)
    cases = {}
    for n in counts:
        cases[f"random N={n}"] = (rng.standard_normal((n, 3, s, s)).astype(np.float32),)
        mask = rng.random((n, 1, s, s)) > 0.3  # masked crops: mean colour (0) outside the mask
        cases[f"masked crops N={n}"] = (((block_image(s, s, n, n) - mean) / std * mask).astype(np.float32),)
    return cases


def clip_text_cases(model: ZegFormer, prompts: Sequence[str] = PROMPTS) -> Dict[str, Tuple[np.ndarray]]:
    from train.model.text import tokenize

    ctx, vocab = model.cfg.clip.context_length, model.cfg.clip.vocab_size
    real = tokenize(list(prompts), ctx).numpy().astype(np.int32)
    rng = np.random.default_rng(3)
    rand = np.zeros((5, ctx), np.int32)
    for i, length in enumerate(rng.integers(3, ctx + 1, 5)):
        rand[i, 0] = vocab - 2  # start of text
        rand[i, 1 : length - 1] = rng.integers(1, vocab - 2, length - 2)
        rand[i, length - 1] = vocab - 1  # end of text: the largest id, found by ArgMax
    return {f"prompts T={len(real)}": (real,), "random T=5": (rand,), "single T=1": (real[:1],)}


def clip_dense_cases(model: ZegFormer, size: Sequence[int]) -> Dict[str, Tuple[np.ndarray]]:
    h, w = int(size[0]), int(size[1])
    mean = np.asarray(model.cfg.clip_pixel_mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(model.cfg.clip_pixel_std, np.float32).reshape(1, 3, 1, 1)
    rng = np.random.default_rng(4)
    return {
        f"random 1x{h}x{w}": (rng.standard_normal((1, 3, h, w)).astype(np.float32),),
        f"image 1x{h}x{w}": (((block_image(h, w, 1, 5) - mean) / std).astype(np.float32),),
    }


def run_torch(module: torch.nn.Module, inputs: Sequence[np.ndarray]) -> List[np.ndarray]:
    with torch.no_grad():
        out = module.eval()(*[torch.from_numpy(x) for x in inputs])
    out = out if isinstance(out, (tuple, list)) else (out,)
    return [o.float().numpy() for o in out]


def check_graph(
    onnx_path: Path, spec: GraphSpec, cases: Dict[str, Tuple[np.ndarray]], tol: float = TOLERANCE
) -> List[Check]:
    """Run ``onnx_path`` with ONNX Runtime (CPU) and ``spec.module`` on every case; compare."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    checks = []
    for case, inputs in cases.items():
        got = sess.run(None, dict(zip(names, inputs)))
        ref = run_torch(spec.module, inputs)
        for out_name, g, r in zip(spec.outputs, got, ref):
            checks.append(Check(spec.name, case, out_name, *compare(g, r), tol))
    return checks


def verify_graphs(
    bundle_dir: Path,
    specs: Sequence[GraphSpec],
    model: ZegFormer,
    trace_size: Sequence[int],
    dense_size: Sequence[int],
    sizes: Optional[Sequence[Tuple[int, int, int]]] = None,
    crop_counts: Sequence[int] = (1, 7),
    tol: float = TOLERANCE,
    progress: bool = True,
) -> List[Check]:
    """Check all graphs of a bundle directory; raises ``ExportError`` listing any failure."""
    from tqdm import tqdm

    sizes = list(sizes or default_sizes(trace_size, model.cfg.size_divisibility))
    cases = {
        "proposal": proposal_cases(model, sizes),
        "clip_image": clip_image_cases(model, crop_counts),
        "clip_text": clip_text_cases(model),
        "clip_dense": clip_dense_cases(model, dense_size),
    }
    checks: List[Check] = []
    for spec in tqdm(specs, desc="verify", unit="graph", disable=not progress):
        checks += check_graph(Path(bundle_dir) / spec.file, spec, cases[spec.name], tol)
    for c in checks:
        log.info("verify %s", c)
    failed = [c for c in checks if not c.ok]
    if failed:
        raise ExportError(
            f"verification failed for {len(failed)} of {len(checks)} checks, worst: {max(failed, key=lambda c: c.rel)}"
        )
    worst = max(checks, key=lambda c: c.rel)
    log.info(
        "verification passed: %d checks, worst rel %.2e (%s %s %s)",
        len(checks),
        worst.rel,
        worst.graph,
        worst.case,
        worst.output,
    )
    return checks
