"""Predicates on decoded JSON values (the manifest schema and the option checks are built from them)."""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Optional

Check = Callable[[Any], bool]


def is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def int_in(lo: int, hi: int) -> Check:
    return lambda v: is_int(v) and lo <= v <= hi


def is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def is_pos_number(v: Any) -> bool:
    return is_number(v) and v > 0


def is_str(v: Any) -> bool:
    return isinstance(v, str) and bool(v)


def list_of(check: Check, length: Optional[int] = None) -> Check:
    return lambda v: isinstance(v, list) and (length is None or len(v) == length) and all(check(x) for x in v)


def dict_of(check: Check) -> Check:
    return lambda v: isinstance(v, dict) and all(isinstance(k, str) and check(x) for k, x in v.items())


def optional(check: Check) -> Check:
    return lambda v: v is None or check(v)


def is_dict(v: Any) -> bool:
    return isinstance(v, dict)
