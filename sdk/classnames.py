"""Class names: the one parser of class files and the name rules (the exporter and the SDK use it).

A class file is UTF-8 (a BOM is ignored, CRLF or LF line ends):

* ``.txt`` — one class per line; ``#`` starts a comment (to the end of the line); blank lines
  are skipped; ``a, b`` (any spaces around the commas) is one class with synonyms ``a`` and
  ``b``, normalised to the official separator ``", "``;
* ``.json`` — a list of names (or of ``{"name": ...}``), or ``{"names": [...]}`` / ``{"classes": [...]}``.

The same name twice (after normalisation) is an error naming both places.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple, Union

from .constants import SYNONYM_SEPARATOR
from .errors import VocabularyError
from .prompts import synonyms
from .tokenizer import visible_text
from .validate.text import check_name_text, read_text_file

MAX_NAMES = 10000


def normalise_name(text: str) -> str:
    """``" red car ,automobile "`` → ``"red car, automobile"`` (the synonym separator the text code splits on)."""
    return SYNONYM_SEPARATOR.join(part.strip() for part in text.split(",") if part.strip())


def validate_names(names: Any) -> List[str]:
    """A list of non-empty strings, 1..MAX_NAMES long, else :class:`VocabularyError` (any input: it validates)."""
    if isinstance(names, (str, bytes)) or not hasattr(names, "__len__"):
        raise VocabularyError(f"a vocabulary is a list of class names, not {type(names).__name__}")
    names = list(names)
    if not names:
        raise VocabularyError("the vocabulary is empty: give at least one class name")
    if len(names) > MAX_NAMES:
        raise VocabularyError(
            f"the vocabulary has {len(names)} names; at most {MAX_NAMES} are supported — "
            "split it, or use a built-in vocabulary"
        )
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise VocabularyError(f"class name #{i} is {type(name).__name__} {name!r}, not a string")
        if not name.strip():
            raise VocabularyError(f"class name #{i} is empty")
        check_name_text(name, i, VocabularyError)
        check_visible(name, i)
    return names


def check_visible(name: str, index: int) -> None:
    """Each synonym of ``name`` keeps a visible character once the tokenizer has cleaned it."""
    for part in synonyms(name):
        if not visible_text(part):
            what = f"its synonym {part!r}" if part != name else "it"
            raise VocabularyError(
                f"class name #{index} {name!r} is empty once cleaned for the text encoder: "
                f"{what} holds only spaces and invisible (control, zero-width, format) "
                "characters; give a readable name"
            )


def split_names(text: str) -> List[str]:
    """``"cat; dog ;sky,  blue sky"`` → ``["cat", "dog", "sky, blue sky"]``: names separated by ``;`` or
    new lines (``--vocab``, the demo's vocabulary box)."""
    return [n for n in (normalise_name(part) for part in re.split(r"[;\n]", text)) if n]


def parse_class_text(text: str, source: str = "<text>") -> List[str]:
    """Names of a ``.txt`` class list (rules in the module docstring); ``source`` names it in errors."""
    entries: List[Tuple[str, str]] = []
    for lineno, raw in enumerate(text.lstrip("\ufeff").splitlines(), 1):
        name = normalise_name(raw.split("#", 1)[0])
        if name:
            entries.append((name, f"line {lineno}"))
    return _unique(entries, source)


def parse_class_json(text: str, source: str = "<json>") -> List[str]:
    """Names of a ``.json`` class list: a list, or ``{"names"|"classes": [...]}``; entries str or ``{"name"}``."""
    try:
        data = json.loads(text.lstrip("\ufeff"))
    except (ValueError, RecursionError) as e:
        raise VocabularyError(f"{source} is not valid JSON: {e}") from e
    if isinstance(data, dict):
        data = data.get("names") or data.get("classes") or []
    if not isinstance(data, list):
        raise VocabularyError(
            f"{source} holds a JSON {type(data).__name__}, not a list of class names "
            '(write ["cat", "dog"] or {"names": [...]})'
        )
    entries = []
    for i, item in enumerate(data):
        name = item.get("name") if isinstance(item, dict) else item
        if not isinstance(name, str):
            raise VocabularyError(f"{source}: entry #{i} is {type(name).__name__} {name!r}, not a string")
        if not normalise_name(name):
            raise VocabularyError(f"{source}: entry #{i} is an empty class name")
        entries.append((normalise_name(name), f"entry #{i}"))
    return _unique(entries, source)


def read_class_file(path: Union[str, os.PathLike]) -> List[str]:
    """Class names of a ``.txt`` or ``.json`` file (:class:`VocabularyError` when unreadable, empty or duplicated)."""
    path = Path(path)
    text = read_text_file(path, VocabularyError, "class file")
    parse = parse_class_json if path.suffix.lower() == ".json" else parse_class_text
    try:
        return parse(text, str(path))
    except VocabularyError as e:
        if str(path) in str(e):
            raise
        raise VocabularyError(f"class file {path}: {e}") from e


def _unique(entries: Sequence[Tuple[str, str]], source: str) -> List[str]:
    first: Dict[str, str] = {}
    for name, where in entries:
        if name in first:
            raise VocabularyError(f"class file {source} lists {name!r} twice ({first[name]} and {where}); remove one")
        first[name] = where
    if not first:
        raise VocabularyError(f"class file {source} lists no classes (blank lines and # comments are ignored)")
    return validate_names(list(first))
