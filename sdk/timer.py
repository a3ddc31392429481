"""Milliseconds per pipeline stage."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Dict, Iterator


class Timer:
    """Milliseconds per stage (``with timer("stage"): ...``); a stage entered twice adds up."""

    def __init__(self) -> None:
        self.ms: Dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.ms[stage] = self.ms.get(stage, 0.0) + (time.perf_counter() - t0) * 1e3
