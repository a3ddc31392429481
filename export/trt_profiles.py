"""TensorRT optimisation profiles (min/opt/max input shapes) per graph; no torch, no TensorRT."""

from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Optional

from .errors import ExportError

Shapes = Dict[str, List[List[int]]]  # input name → [min, opt, max]


def default_profiles(manifest: Dict[str, Any]) -> Dict[str, Shapes]:
    """min/opt/max shapes: proposal up to 2×1344² (opt 640×864), crops up to Q, prompts up to 256
    (cut to 1..77 tokens, opt 16, when the text graph's length is dynamic)."""
    from sdk.text_batches import dynamic_length

    m, inf = manifest["model"], manifest["inference"]
    s, q, div = m["crop_size"], m["num_queries"], m["size_divisibility"]
    ctx = manifest["tokenizer"]["context_length"]
    short = inf["min_size"]
    long = math.ceil(short * 4 / 3 / div) * div  # a 4:3 landscape photo, padded
    hd, wd = inf["dense_size"]
    return {
        "proposal": {"image": [[1, 3, 2 * div, 2 * div], [1, 3, short, long], [2, 3, 1344, 1344]]},
        "clip_image": {"crops": [[1, 3, s, s], [q, 3, s, s], [q, 3, s, s]]},
        "clip_text": {
            "tokens": [[1, 1], [64, min(16, ctx)], [256, ctx]]
            if dynamic_length(manifest["graphs"].get("clip_text", {}))
            else [[1, ctx], [64, ctx], [256, ctx]]
        },
        "clip_dense": {"image": [[1, 3, hd, wd]] * 3},
    }


def parse_profile(text: str) -> Dict[str, Shapes]:
    """``GRAPH:INPUT=MIN,OPT,MAX`` with shapes like ``1x3x64x64`` → ``{graph: {input: [...]}}``."""
    m = re.fullmatch(r"(\w+):(\w+)=([\dx]+),([\dx]+),([\dx]+)", text.strip())
    if not m:
        raise ExportError(
            f"bad --profile {text!r}; expected GRAPH:INPUT=MIN,OPT,MAX, "
            "e.g. proposal:image=1x3x64x64,1x3x640x864,2x3x1344x1344"
        )
    shapes = [[int(v) for v in s.split("x")] for s in m.groups()[2:]]
    return {m.group(1): {m.group(2): shapes}}


def merge_profiles(base: Dict[str, Shapes], override: Optional[Dict[str, Shapes]]) -> Dict[str, Shapes]:
    out = {g: dict(v) for g, v in base.items()}
    for graph, shapes in (override or {}).items():
        if graph not in out:
            raise ExportError(f"profile for unknown graph {graph!r}; graphs: {sorted(out)}")
        for name, mom in shapes.items():
            if name not in out[graph]:
                raise ExportError(f"graph {graph} has no input {name!r}; inputs: {sorted(out[graph])}")
            if (
                len(mom) != 3
                or any(len(s) != len(mom[0]) for s in mom)
                or any(not (a <= b <= c) for a, b, c in zip(*mom))
            ):
                raise ExportError(f"profile {graph}:{name} must be min <= opt <= max, got {mom}")
            out[graph][name] = [list(map(int, s)) for s in mom]
    return out
