"""Type checks of a training config: every value against its dataclass field or its default's type.

``solver.max_iter=ten`` must be a one-line ``ConfigError`` at start-up, not a ``TypeError`` deep
in the scheduler. Types come from ``SolverConfig``/``LossConfig``/``ModelConfig``/``ClipConfig``
annotations and, for the plain sections, from the type of the default value.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, Optional, Tuple

Check = Tuple[Callable[[Any], bool], str]


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _float(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _seq(item: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, (list, tuple)) and all(item(x) for x in v)


CHECKS: Dict[str, Check] = {
    "int": (_int, "an integer"),
    "float": (_float, "a finite number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "tuple": (_seq(_float), "a list of numbers"),
    "Tuple[int, ...]": (_seq(_int), "a list of integers"),
    "Tuple[float, ...]": (_seq(_float), "a list of numbers"),
}
OPTIONAL_STR = (lambda v: v is None or isinstance(v, str), "a string or null")
# Plain-section keys whose type is not the default's type.
SPECIAL: Dict[str, Check] = {
    "init.checkpoint": OPTIONAL_STR,
    "init.backbone": OPTIONAL_STR,
    "init.clip": OPTIONAL_STR,
    "data.root": OPTIONAL_STR,
    "data.val_split": OPTIONAL_STR,
    "train.amp": (lambda v: isinstance(v, bool) or v == "auto", "auto, true or false"),
    "eval.calibrate": (lambda v: v is None or _float(v), "a number or null"),
    "data.scales": (
        lambda v: _seq(_float)(v) and len(v) > 0 and all(x > 0 for x in v),
        "a non-empty list of positive numbers",
    ),
    "train.backbone_norm": (lambda v: v in ("frozen", "train"), "frozen or train"),
    "eval.protocols": (_seq(lambda x: x in ("seen", "gzss")), "a list of: seen, gzss"),
}
NON_NEGATIVE = {
    "solver.max_iter",
    "solver.warmup_iters",
    "train.threads",
    "train.checkpoint_period",
    "train.eval_period",
    "train.max_nonfinite",
    "data.num_workers",
    "eval.max_images",
    "eval.min_size",
    "solver.lr",
    "solver.weight_decay",
    "train.seed",
}
POSITIVE = {
    "solver.batch_size",
    "solver.accumulate",
    "train.log_period",
    "data.crop_size",
    "data.max_size",
    "eval.max_size",
}


def _from_default(value: Any) -> Optional[Check]:
    for kind in (bool, int, float, str):
        if type(value) is kind:
            return CHECKS["float"] if kind is float else CHECKS[kind.__name__]
    if isinstance(value, list):
        return (lambda v: isinstance(v, list), "a list")
    return None


def _dataclass_checks(cls) -> Dict[str, Check]:
    out = {}
    for f in dataclasses.fields(cls):
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if kind in CHECKS:
            out[f.name] = CHECKS[kind]
    return out


def check_types(
    cfg: Dict[str, Any], defaults: Dict[str, Any], dataclasses_by_section: Dict[str, Any], error: type
) -> None:
    """Raise ``error`` (one line) for the first value whose type or range is wrong."""
    for section, values in cfg.items():
        if not isinstance(values, dict):
            raise error(f"config section {section!r} must be a mapping, not {type(values).__name__}")
        cls = dataclasses_by_section.get(section)
        checks = _dataclass_checks(cls) if cls is not None else {}
        for key, value in values.items():
            dotted = f"{section}.{key}"
            if section == "model" and key == "clip" and isinstance(value, dict):
                from .config import ClipConfig

                clip_checks = _dataclass_checks(ClipConfig)
                for k, v in value.items():
                    _check_one(f"model.clip.{k}", v, clip_checks.get(k), error)
                continue
            check = SPECIAL.get(dotted) or checks.get(key)
            if check is None and section in defaults and cls is None:
                check = _from_default(defaults[section].get(key))
            _check_one(dotted, value, check, error)


def _check_one(dotted: str, value: Any, check: Optional[Check], error: type) -> None:
    if check is not None and not check[0](value):
        raise error(f"{dotted}={value!r}: expected {check[1]}, got {type(value).__name__}")
    if dotted in NON_NEGATIVE and _float(value) and value < 0:
        raise error(f"{dotted}={value!r}: must be >= 0")
    if dotted in POSITIVE and _float(value) and value <= 0:
        raise error(f"{dotted}={value!r}: must be > 0")
