"""Running prompts through the text graph cut to their length (exact, ~5× less work than 77 tokens).

CLIP's text transformer is causal and pools at the end-of-text token, so the positions after a
row's end of text never change that row's embedding. Prompts are therefore sorted by token count,
batched, and each batch runs cut at its longest end-of-text position (``+1``, rounded up to a
multiple of :data:`ROUND_TO`). The bundle's ``clip_text.onnx`` must accept a dynamic length
(manifest ``graphs.clip_text.inputs.tokens == "[T,L]"``); an older bundle's fixed ``[T,77]``
graph gets full rows, as before.

Progress: ``progress=None`` shows a tqdm bar on stderr when it is a terminal and the work lasts
more than :data:`PROGRESS_DELAY` seconds; ``True`` always, ``False`` never; a callable receives
``(prompts done, prompts in all)`` after every batch (e.g. a web page's progress bar).
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np

ROUND_TO = 1  # cut lengths rounded up to a multiple of this (benchmarks/text_embedding.py measures 8)
PROGRESS_DELAY = 1.5  # seconds before a tqdm bar appears
Progress = Union[None, bool, Callable[[int, int], None]]


def dynamic_length(entry: Dict[str, Any]) -> bool:
    """Whether a manifest graph entry declares a dynamic token axis (``"[T,L]"``, not ``"[T,77]"``)."""
    shape = str((entry.get("inputs") or {}).get("tokens", ""))
    dims = [d.strip() for d in shape.strip("[] ").split(",")]
    return len(dims) == 2 and not dims[1].isdigit() and dims[1] != ""


def token_counts(tokens: np.ndarray) -> np.ndarray:
    """Per row, the positions up to and including end of text (the largest id, as the graph's ArgMax)."""
    return np.asarray(tokens).argmax(axis=1).astype(np.int64) + 1


def plan_batches(
    counts: np.ndarray, batch: int, context: int, round_to: int = ROUND_TO
) -> List[Tuple[np.ndarray, int]]:
    """``(row indices, cut length)`` per batch: rows sorted by count (stable), ``batch`` rows each."""
    order = np.argsort(counts, kind="stable")
    step = max(1, int(round_to))
    plan = []
    for i in range(0, len(order), batch):
        rows = order[i : i + batch]
        longest = int(counts[rows].max())
        plan.append((rows, min(context, -(-longest // step) * step)))
    return plan


def _reporter(progress: Progress, total: int) -> Tuple[Callable[[int], None], Callable[[], None]]:
    """``(advance(n), close())`` for the progress option."""
    if callable(progress) and not isinstance(progress, bool):
        done = [0]

        def advance(n: int) -> None:
            done[0] += n
            progress(done[0], total)

        return advance, lambda: None
    from tqdm import tqdm

    bar = tqdm(
        total=total,
        desc="embedding class names",
        unit="prompt",
        file=sys.stderr,
        delay=PROGRESS_DELAY,
        leave=False,
        disable=None if progress is None else not progress,
    )
    return bar.update, bar.close


def encode_cut(
    tokens: np.ndarray,
    encoder: Callable[[np.ndarray], np.ndarray],
    batch: int,
    cut: bool = True,
    progress: Progress = False,
    round_to: int = ROUND_TO,
) -> np.ndarray:
    """Raw text embeddings ``[N,D]`` of ``tokens`` ``[N,C]`` through ``encoder`` (one call per batch),
    in the input order; ``cut=False`` runs full rows in the given order (a fixed-length graph)."""
    tokens = np.ascontiguousarray(tokens, dtype=np.int32)
    n, context = tokens.shape
    if cut:
        plan = plan_batches(token_counts(tokens), batch, context, round_to)
    else:
        plan = [(np.arange(i, min(i + batch, n)), context) for i in range(0, n, batch)]
    advance, close = _reporter(progress, n)
    out: Optional[np.ndarray] = None
    try:
        for rows, length in plan:
            raw = np.asarray(encoder(np.ascontiguousarray(tokens[rows, :length])), dtype=np.float32)
            if out is None:
                out = np.empty((n, raw.shape[1]), np.float32)
            out[rows] = raw
            advance(len(rows))
    finally:
        close()
    if out is None:  # callers validate names first, so there is always a prompt
        raise ValueError("no prompts to embed")
    return out
