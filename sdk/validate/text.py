"""User text files (class lists) and class names: UTF-8, sane sizes, encodable names."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

MAX_TEXT_BYTES = 16 << 20
MAX_NAME_CHARS = 1000


def read_text_file(path: Union[str, os.PathLike], error: type, what: str = "file") -> str:
    """A UTF-8 text file (BOM and CRLF tolerated) as ``str``; any problem is ``error`` naming the file."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_TEXT_BYTES:
            raise error(f"{what} {path} is larger than {MAX_TEXT_BYTES >> 20} MiB; is it the right file?")
        data = path.read_bytes()
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror or e}") from e
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise error(f"{what} {path} is not UTF-8 text (byte {e.start}, line {line}); save it as UTF-8") from e
    if "\x00" in text:
        raise error(f"{what} {path} contains NUL characters; it is not a text file")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def check_name_text(name: str, index: int, error: type) -> None:
    """A class name is encodable (no lone surrogates) and of a sane length."""
    if len(name) > MAX_NAME_CHARS:
        raise error(f"class name #{index} has {len(name)} characters; at most {MAX_NAME_CHARS} are supported")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as e:
        raise error(
            f"class name #{index} {name!r} is not valid Unicode text (a lone surrogate at "
            f"character {e.start}); pass real characters"
        ) from e
