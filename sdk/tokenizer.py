"""CLIP byte-level BPE tokenizer needing neither torch nor ``regex`` (``ftfy`` optional).

Produces the same ids as ``open_clip.tokenize`` (the OpenAI CLIP vocabulary):
text is cleaned (ftfy, HTML unescape, whitespace collapse, lowercase), split
into words, and every word is byte-pair encoded.

Differences from open_clip, all confined to unusual input:

* ``ftfy.fix_text`` is used when ftfy is importable; otherwise a built-in
  equivalent runs that does everything ftfy does except mojibake repair
  (``fix_encoding``). Text such as ``"cafÃ©"`` then stays as it is, where
  ftfy would turn it into ``"café"``. Pass ``use_ftfy`` to pin either choice.
* Word splitting uses Python's ``unicodedata`` in place of the ``regex``
  module's ``\\p{L}``/``\\p{N}``. The two agree on every code point that this
  Python's Unicode database assigns; characters added in later Unicode
  versions may be split differently.
"""

from __future__ import annotations

import gzip
import html
import html.entities
import re
import unicodedata
from functools import cache, lru_cache
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Sequence, cast

import numpy as np
from numpy.typing import DTypeLike

__all__ = ["ClipTokenizer", "DEFAULT_VOCAB_PATH", "SOT_ID", "EOT_ID", "clean_text", "fix_text_builtin", "visible_text"]

DEFAULT_VOCAB_PATH = Path(__file__).resolve().parent / "resources" / "bpe_simple_vocab_16e6.txt.gz"
DEFAULT_CONTEXT_LENGTH = 77
SOT_TOKEN, EOT_TOKEN = "<start_of_text>", "<end_of_text>"
SOT_ID, EOT_ID = 49406, 49407
_NUM_MERGES = 49152 - 256 - 2  # CLIP keeps the first 48894 merges of the file
_END_OF_WORD = "</w>"


# ---------------------------------------------------------------- bytes <-> symbols


@cache
def _byte_symbols() -> tuple[str, ...]:
    """The printable character standing for each byte value 0..255.

    Printable Latin-1 bytes stand for themselves; the rest are moved, in
    order, to U+0100 onwards.
    """
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    symbols = [chr(b) for b in range(256)]
    for n, b in enumerate(b for b in range(256) if b not in printable):
        symbols[b] = chr(256 + n)
    return tuple(symbols)


# ---------------------------------------------------------------- word splitting

# Planes 4-13 are unassigned and 15-16 are private use, so no letter or
# number lives outside these blocks.
_SCANNED_BLOCKS = (range(0x0, 0x40000), range(0xE0000, 0xE1000))


def _class_ranges(major: str) -> str:
    """A character-class body for the Unicode categories starting with ``major``."""
    parts = []
    for block in _SCANNED_BLOCKS:
        majors = "".join([unicodedata.category(chr(c))[0] for c in block])
        for run in re.finditer(f"{major}+", majors):
            first, last = chr(block.start + run.start()), chr(block.start + run.end() - 1)
            parts.append(re.escape(first) + "-" + re.escape(last))
    return "".join(parts)


@cache
def _word_pattern() -> re.Pattern[str]:
    r"""open_clip's ``regex`` pattern with ``\p{L}``/``\p{N}`` spelled out.

    open_clip compiles it with IGNORECASE, which only matters for the
    literals (``'ſ`` matches ``'s``) and for U+0345, whose upper case is a
    letter: no branch matches it, so open_clip drops the character.
    """
    letters, numbers = _class_ranges("L"), _class_ranges("N")
    literals = "|".join(map(re.escape, [SOT_TOKEN, EOT_TOKEN, "'s", "'t", "'re", "'ve", "'m", "'ll", "'d"]))
    return re.compile(f"(?i:{literals})|[{letters}]+|[{numbers}]|[^\\s{letters}{numbers}\u0345]+")


# ---------------------------------------------------------------- ftfy-equivalent cleaning

_MAX_SEGMENT = 1_000_000  # ftfy's max_decode_length
_ENTITY = re.compile(r"&#?[0-9A-Za-z]{1,24};")
_ANSI_ESCAPE = re.compile(r"\x1b\[[\d;]*[a-zA-Z]")
_SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_LIGATURES = str.maketrans(
    {
        "Ĳ": "IJ",
        "ĳ": "ij",
        "ŉ": "ʼn",
        "Ǳ": "DZ",
        "ǲ": "Dz",
        "ǳ": "dz",
        "Ǆ": "DŽ",
        "ǅ": "Dž",
        "ǆ": "dž",
        "Ǉ": "LJ",
        "ǈ": "Lj",
        "ǉ": "lj",
        "Ǌ": "NJ",
        "ǋ": "Nj",
        "ǌ": "nj",
        "ﬀ": "ff",
        "ﬁ": "fi",
        "ﬂ": "fl",
        "ﬃ": "ffi",
        "ﬄ": "ffl",
        "ﬅ": "ſt",
        "ﬆ": "st",
    }
)
_QUOTES = str.maketrans(
    {**dict.fromkeys("\u02bc\u2018\u2019\u201a\u201b", "'"), **dict.fromkeys("\u201c\u201d\u201e\u201f", '"')}
)
_CONTROL_CHARS = dict.fromkeys(
    [*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F, *range(0x206A, 0x2070), 0xFEFF, *range(0xFFF9, 0xFFFD)]
)


def _c1_table() -> dict[int, str]:
    """C1 controls read as Windows-1252, leaving its five undefined bytes alone."""
    table = {}
    for code in range(0x80, 0xA0):
        try:
            table[code] = bytes([code]).decode("cp1252")
        except UnicodeDecodeError:
            pass
    return table


def _width_table() -> dict[int, str]:
    """Fullwidth and halfwidth forms to their normal width; U+3000 to a space."""
    table = {0x3000: " "}
    for code in range(0xFF01, 0xFFF0):
        normal = unicodedata.normalize("NFKC", chr(code))
        if normal != chr(code):
            table[code] = normal
    return table


def _entity_table() -> dict[str, str]:
    """Named HTML entities with a semicolon, plus upper-cased forms of lower-case names."""
    table = {}
    for name, char in html.entities.html5.items():
        if not name.endswith(";"):
            continue
        table["&" + name] = char
        upper = "&" + name.upper()
        if name == name.lower() and html.unescape(upper) == upper:
            table[upper] = char.upper()
    return table


_C1, _WIDTH, _ENTITIES = _c1_table(), _width_table(), _entity_table()


def _unescape_entity(match: re.Match[str]) -> str:
    entity = match.group()
    if entity in _ENTITIES:
        return _ENTITIES[entity]
    if entity.startswith("&#"):
        char = html.unescape(entity)
        return entity if ";" in char else char
    return entity


def _join_surrogates(match: re.Match[str]) -> str:
    high, low = (ord(c) for c in match.group())
    return chr(0x10000 + (high - 0xD800) * 0x400 + (low - 0xDC00))


def _fix_line_breaks(text: str) -> str:
    for old in ("\r\n", "\r", "\u2028", "\u2029", "\x85"):
        text = text.replace(old, "\n")
    return text


def _fix_surrogates(text: str) -> str:
    return _SURROGATE.sub("\ufffd", _SURROGATE_PAIR.sub(_join_surrogates, text))


_SEGMENT_FIXES: tuple[Callable[[str], str], ...] = (
    lambda t: t.translate(_C1),
    lambda t: t.translate(_LIGATURES),
    lambda t: t.translate(_WIDTH),
    lambda t: t.translate(_QUOTES),
    _fix_line_breaks,
    _fix_surrogates,
    lambda t: _ANSI_ESCAPE.sub("", t),
    lambda t: t.translate(_CONTROL_CHARS),
    lambda t: unicodedata.normalize("NFC", t),
)


def _fix_segment(text: str, unescape: bool) -> str:
    """Apply the fixes until nothing changes, as ftfy does."""
    while True:
        before = text
        if unescape:
            text = _ENTITY.sub(_unescape_entity, text)
        for fix in _SEGMENT_FIXES:
            text = fix(text)
        if text == before:
            return text


def fix_text_builtin(text: str) -> str:
    """``ftfy.fix_text`` with its default settings except ``fix_encoding=False``.

    ftfy fixes each line on its own and, once a line contains ``<``, stops
    unescaping HTML entities for the rest of the text.
    """
    fixed, unescape, start = [], True, 0
    while start < len(text):
        end = min(text.find("\n", start) + 1 or len(text), start + _MAX_SEGMENT)
        segment = text[start:end]
        unescape = unescape and "<" not in segment
        fixed.append(_fix_segment(segment, unescape))
        start = end
    return "".join(fixed)


@cache
def _text_fixer(use_ftfy: bool | None) -> Callable[[str], str]:
    """ftfy.fix_text when wanted and importable, else the built-in equivalent."""
    if use_ftfy is False:
        return fix_text_builtin
    try:
        import ftfy
    except ImportError:
        if use_ftfy:
            raise
        return fix_text_builtin
    return ftfy.fix_text


def clean_text(text: str, fix: Callable[[str], str]) -> str:
    """CLIP's cleaning: ``fix`` (ftfy), HTML unescaped twice, whitespace collapsed, lower case."""
    text = html.unescape(html.unescape(fix(text)))
    return " ".join(text.split()).lower()


# Default-ignorable characters outside the C and Z categories (fillers, variation selectors, ...)
# and U+0345, which open_clip's word pattern drops.
_INVISIBLE = frozenset(
    map(
        chr,
        (
            0x0345,
            0x034F,
            0x115F,
            0x1160,
            0x17B4,
            0x17B5,
            0x3164,
            0xFFA0,
            *range(0x180B, 0x1810),
            *range(0xFE00, 0xFE10),
            *range(0xE0100, 0xE01F0),
        ),
    )
)


def visible_text(text: str, use_ftfy: bool | None = None) -> str:
    """What is left to see of ``text`` once the tokenizer has cleaned it: no controls, format
    characters (zero-width, BOM, ...), separators, private-use or other invisible characters.
    Empty means the text names nothing (its prompts would read "a photo of a .")."""
    cleaned = clean_text(text, _text_fixer(use_ftfy))
    return "".join(c for c in cleaned if unicodedata.category(c)[0] not in "CZ" and c not in _INVISIBLE)


# ---------------------------------------------------------------- tokenizer


def _read_merges(vocab_path: Path) -> list[tuple[str, str]]:
    """The merge rules CLIP uses: lines 2..48895 of the vocab file."""
    with gzip.open(vocab_path, "rt", encoding="utf-8", newline="\n") as f:
        lines = list(islice(f, 1, _NUM_MERGES + 1))
    merges = [tuple(line.split()) for line in lines]
    if len(merges) != _NUM_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"{vocab_path} is not a CLIP BPE merges file")
    return cast("list[tuple[str, str]]", merges)  # every rule was checked to be a pair


def _merge_pair(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    """Merge every non-overlapping occurrence of ``pair``, left to right."""
    merged, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            merged.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return merged


class ClipTokenizer:
    """OpenAI CLIP BPE tokenizer, id-for-id equal to ``open_clip.tokenize``.

    Args:
        vocab_path: gzipped BPE merges file; defaults to the packaged copy.
        context_length: row length produced by ``__call__``.
        use_ftfy: ``None`` uses ftfy if installed, ``True`` requires it,
            ``False`` always uses the built-in cleaner (no mojibake repair).
    """

    sot_id = SOT_ID
    eot_id = EOT_ID

    def __init__(
        self,
        vocab_path: str | Path | None = None,
        context_length: int = DEFAULT_CONTEXT_LENGTH,
        use_ftfy: bool | None = None,
    ) -> None:
        merges = _read_merges(Path(vocab_path or DEFAULT_VOCAB_PATH))
        symbols = sorted(_byte_symbols())  # CLIP numbers them by code point
        vocab = [*symbols, *(s + _END_OF_WORD for s in symbols), *("".join(m) for m in merges), SOT_TOKEN, EOT_TOKEN]
        self._encoder = {token: i for i, token in enumerate(vocab)}
        self._decoder = dict(enumerate(vocab))
        self._ranks = {merge: rank for rank, merge in enumerate(merges)}
        self._byte_decoder = {s: b for b, s in enumerate(_byte_symbols())}
        self._fix_text = _text_fixer(use_ftfy)
        self._pattern = _word_pattern()
        self._word_ids = lru_cache(maxsize=1 << 16)(self._bpe_word_ids)
        self.context_length = context_length
        self.vocab_size = len(vocab)

    def _clean(self, text: str) -> str:
        return clean_text(text, self._fix_text)

    def _bpe(self, word: str) -> list[str]:
        """Apply merges by rank, lowest first, until none applies."""
        symbols = [*word[:-1], word[-1] + _END_OF_WORD]
        while len(symbols) > 1:
            pair = min(zip(symbols, symbols[1:]), key=lambda p: self._ranks.get(p, _NUM_MERGES))
            if pair not in self._ranks:
                break
            symbols = _merge_pair(symbols, pair)
        return symbols

    def _bpe_word_ids(self, word: str) -> tuple[int, ...]:
        if word in (SOT_TOKEN, EOT_TOKEN):
            return (self._encoder[word],)
        byte_symbols = _byte_symbols()
        encoded = "".join(byte_symbols[b] for b in word.encode("utf-8"))
        return tuple(self._encoder[s] for s in self._bpe(encoded))

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without start/end tokens or padding."""
        return [i for word in self._pattern.findall(self._clean(text)) for i in self._word_ids(word)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text for ``ids``; each word ends with a space. Pass no padding zeros (id 0 is ``!``)."""
        symbols = "".join(self._decoder[int(i)] for i in ids)
        data = bytes(self._byte_decoder[s] for s in symbols)
        return data.decode("utf-8", errors="replace").replace(_END_OF_WORD, " ")

    def __call__(
        self,
        texts: str | Sequence[str],
        context_length: int | None = None,
        truncate: bool = True,
        dtype: DTypeLike = np.int64,
    ) -> np.ndarray:
        """Ids of ``texts`` as a zero-padded ``[N, context_length]`` array.

        Each row is ``<start_of_text> ids... <end_of_text>``. A row longer than
        ``context_length`` is cut to that length with ``<end_of_text>`` as its
        last id (open_clip's behaviour), or raises ``ValueError`` when
        ``truncate`` is False (OpenAI ``clip.tokenize``'s default).
        """
        if isinstance(texts, str):
            texts = [texts]
        length = context_length or self.context_length
        if length < 1:
            raise ValueError(f"context_length must be positive, got {length}")
        out = np.zeros((len(texts), length), dtype=dtype)
        for row, text in zip(out, texts):
            ids = [SOT_ID, *self.encode(text), EOT_ID]
            if len(ids) > length:
                if not truncate:
                    raise ValueError(f"{text!r} is {len(ids)} tokens, longer than context length {length}")
                ids = [*ids[: length - 1], EOT_ID]
            row[: len(ids)] = ids
        return out
