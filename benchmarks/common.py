"""Shared benchmark plumbing: machine description, synthetic inputs, statistics, result files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> Dict[str, Any]:
    """CPU/GPU and library versions, recorded with every result."""
    info: Dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    for name in ("numpy", "onnxruntime", "torch", "tensorrt"):
        try:
            info[name] = __import__(name).__version__
        except Exception:
            continue
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except Exception:
        pass
    return info


def synthetic_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A blocky colour image with noise (the reference fixture's recipe, at any size)."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    blocks = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
    rows = (np.arange(height) * 8) // height
    cols = (np.arange(width) * 10) // width
    img = blocks[rows][:, cols].astype(np.int16) + (noise.astype(np.int16) - 128) // 8
    return np.clip(img, 0, 255).astype(np.uint8)


def summarize(samples: Sequence[float]) -> Dict[str, float]:
    s = sorted(samples)
    return {
        "median_ms": statistics.median(s),
        "p90_ms": s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))],
        "min_ms": s[0],
        "n": len(s),
    }


class PeakRSS:
    """Samples this process's resident memory in a thread; ``peak_mb`` is the increase over the start."""

    def __init__(self, interval: float = 0.01):
        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.start_mb = self.peak_mb = 0.0

    def __enter__(self) -> PeakRSS:
        self.start_mb = self._proc.memory_info().rss / 2**20
        self._peak = self.start_mb
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._proc.memory_info().rss / 2**20)
            time.sleep(self._interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._proc.memory_info().rss / 2**20)
        self.peak_mb = self._peak - self.start_mb


def time_calls(fn: Callable[[], Dict[str, float]], warmup: int, iters: int) -> Dict[str, List[float]]:
    """Runs ``fn`` (which returns per-stage ms); collects every stage and the wall-clock ``total``."""
    for _ in range(warmup):
        fn()
    samples: Dict[str, List[float]] = {}
    for _ in range(iters):
        t0 = time.perf_counter()
        stages = fn()
        stages = {k: v for k, v in stages.items() if k != "total"}
        stages["total"] = (time.perf_counter() - t0) * 1e3
        for k, v in stages.items():
            samples.setdefault(k, []).append(v)
    return samples


def label_agreement(a: np.ndarray, b: np.ndarray) -> Dict[str, float]:
    """Pixel agreement and the mean IoU between two label maps (classes present in either)."""
    ious = []
    for c in np.union1d(np.unique(a), np.unique(b)):
        inter = np.logical_and(a == c, b == c).sum()
        union = np.logical_or(a == c, b == c).sum()
        ious.append(inter / union)
    return {"pixel_agreement": float(np.mean(a == b)), "miou": float(np.mean(ious))}


def write_results(
    stem: str,
    records: List[Dict[str, Any]],
    markdown: str,
    out_dir: Optional[Path] = None,
    json_path: Optional[Path] = None,
) -> Path:
    """JSON (records + machine) and markdown side by side; returns the JSON path."""
    out_dir = Path(out_dir or RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = Path(json_path or out_dir / f"{stem}.json")
    payload = {"machine": machine(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "records": records}
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, json_path)
    json_path.with_suffix(".md").write_text(markdown)
    return json_path
