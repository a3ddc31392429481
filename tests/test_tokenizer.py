"""sdk.tokenizer: id-for-id parity with open_clip, the reference fixture, and no torch."""

from __future__ import annotations

import importlib.util
import json
import random
import shutil
import string
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from sdk import tokenizer as tokenizer_module
from sdk.tokenizer import EOT_ID, SOT_ID, ClipTokenizer, fix_text_builtin

REPO = Path(__file__).resolve().parents[1]
RESOURCES = REPO / "train" / "resources"
DATASETS = ("cocostuff_171_classes", "pascal_voc_classes", "ade20k_847_classes")
TEMPLATE_KEYS = ("single", "IMAGENET_TEMPLATES_SELECT", "IMAGENET_TEMPLATES_SELECT_CLIP")
OPEN_CLIP_PATTERN = r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"


@pytest.fixture(scope="module")
def tok() -> ClipTokenizer:
    return ClipTokenizer()


@pytest.fixture(scope="module")
def builtin_tok() -> ClipTokenizer:
    return ClipTokenizer(use_ftfy=False)


@pytest.fixture(scope="module")
def open_clip_tokenizer():
    """open_clip's SimpleTokenizer instance (imports torch; tests only)."""
    pytest.importorskip("open_clip")
    from open_clip.tokenizer import _tokenizer

    return _tokenizer


def open_clip_ids(oc, texts: list[str]) -> np.ndarray:
    return oc(texts).numpy()


def load_templates() -> dict[str, list[str]]:
    templates = json.loads((RESOURCES / "prompt_templates.json").read_text())
    return {key: templates[key] for key in TEMPLATE_KEYS}


def class_prompts() -> list[str]:
    """Every class name and each of its synonyms in every template."""
    names = set()
    for dataset in DATASETS:
        for entry in json.loads((RESOURCES / f"{dataset}.json").read_text())["classes"]:
            names.add(entry["name"])
            names.update(entry["name"].split(", "))
    templates = [t for group in load_templates().values() for t in group]
    return sorted({t.format(name) for t in templates for name in names})


# ---------------------------------------------------------------- random text

SCRIPT_RANGES = [
    (0x21, 0x7E),
    (0xA0, 0x24F),
    (0x300, 0x36F),
    (0x370, 0x3FF),
    (0x400, 0x4FF),
    (0x590, 0x5FF),
    (0x600, 0x6FF),
    (0x900, 0x97F),
    (0xE00, 0xE7F),
    (0x1E00, 0x1FFF),
    (0x2000, 0x206F),
    (0x2150, 0x218B),
    (0x2460, 0x24FF),
    (0x3000, 0x30FF),
    (0x4E00, 0x9FFF),
    (0xAC00, 0xD7A3),
    (0xFB00, 0xFB06),
    (0xFF01, 0xFFEE),
    (0x1D400, 0x1D7FF),
    (0x1F300, 0x1FAFF),
    (0x80, 0x9F),
    (0x0, 0x1F),
]
SPECIAL_PIECES = [
    "&amp;",
    "&amp;amp;amp;",
    "&lt;b&gt;",
    "&quot;",
    "&#39;",
    "&#x27;",
    "&nbsp;",
    "&eacute;",
    "&EACUTE;",
    "&SZLIG;",
    "&amp",
    "&#59;",
    "&#128512;",
    "&notit;",
    "&hellip;",
    "<",
    "<start_of_text>",
    "<end_of_text>",
    "<ſtart_of_text>",
    "'s",
    "'S",
    "'ll",
    "'ſ",
    "’re",
    "don't",
    "\x1b[31m",
    "Ã©",
    "â€™",
    "cafÃ©",
    "ÃƒÂ©",
    "\ud83d\ude00",
    "\ud83d",
    "ﬁ",
    "ﬅ",
    "a\u0345",
    "\u0345",
    "İ",
    "e\u0301",
    "ＬＯＵＤ",
    "ｶﾀｶﾅ",
    "…",
    "😀👍🏽",
]
WHITESPACE = [" ", "  ", "\t", "\n", "\r\n", "\u3000", "\xa0", "\u2028", "\x1c", "\x85", " \n\n "]


def random_chars(rng: random.Random, count: int) -> str:
    """``count`` assigned characters from one randomly chosen range."""
    low, high = rng.choice(SCRIPT_RANGES)
    chars = []
    while len(chars) < count:
        char = chr(rng.randint(low, high))
        if unicodedata.category(char) != "Cn":
            chars.append(char)
    return "".join(chars)


def random_piece(rng: random.Random) -> str:
    kind = rng.randrange(6)
    if kind == 0:
        return "".join(rng.choices(string.ascii_letters, k=rng.randint(1, 12)))
    if kind == 1:
        return "".join(rng.choices(string.digits, k=rng.randint(1, 6)))
    if kind == 2:
        return "".join(rng.choices(string.punctuation, k=rng.randint(1, 4)))
    if kind == 3:
        return random_chars(rng, rng.randint(1, 8))
    if kind == 4:
        return rng.choice(SPECIAL_PIECES)
    return rng.choice(WHITESPACE)


def random_texts(seed: int = 0, count: int = 3000) -> list[str]:
    """Seeded mixed-script strings; about one in ten is longer than 77 tokens."""
    rng = random.Random(seed)
    texts = ["", " ", "\n\t ", "&amp;" * 40]
    while len(texts) < count:
        pieces = rng.randint(60, 150) if rng.random() < 0.1 else rng.randint(1, 12)
        texts.append("".join(random_piece(rng) for _ in range(pieces)))
    return texts


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return random_texts()


# ---------------------------------------------------------------- parity with open_clip


def test_class_prompts_match_open_clip(tok, open_clip_tokenizer):
    prompts = class_prompts()
    assert len(prompts) > 50_000
    np.testing.assert_array_equal(tok(prompts), open_clip_ids(open_clip_tokenizer, prompts))


def test_random_texts_match_open_clip(tok, open_clip_tokenizer, texts):
    pytest.importorskip("ftfy")
    expected = open_clip_ids(open_clip_tokenizer, texts)
    assert (expected[:, -1] == EOT_ID).sum() > 200, "the corpus should include texts longer than 77 tokens"
    np.testing.assert_array_equal(tok(texts), expected)


def test_decode_matches_open_clip(tok, open_clip_tokenizer, texts):
    for text in texts[:500]:
        ids = tok.encode(text)
        assert tok.decode(ids) == open_clip_tokenizer.decode(ids)


def test_builtin_cleaner_equals_ftfy_without_mojibake_repair(texts):
    ftfy = pytest.importorskip("ftfy")
    for text in texts:
        assert fix_text_builtin(text) == ftfy.fix_text(text, fix_encoding=False), repr(text)


def test_builtin_tokenizer_matches_open_clip_except_mojibake(builtin_tok, open_clip_tokenizer, texts):
    ftfy = pytest.importorskip("ftfy")
    plain = [t for t in texts if ftfy.fix_text(t) == ftfy.fix_text(t, fix_encoding=False)]
    assert len(plain) > 0.6 * len(texts)
    np.testing.assert_array_equal(builtin_tok(plain), open_clip_ids(open_clip_tokenizer, plain))


def test_mojibake_is_only_repaired_by_ftfy(builtin_tok):
    mojibake = "cafÃ© â€œokâ€\x9d"
    assert fix_text_builtin(mojibake) == mojibake
    assert builtin_tok.encode(mojibake) != builtin_tok.encode('café "ok"')
    if importlib.util.find_spec("ftfy") is not None:
        assert ClipTokenizer(use_ftfy=True).encode(mojibake) == builtin_tok.encode('café "ok"')


def _first_difference(a: list[str], b: list[str]) -> str:
    index = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"token {index}: {a[index : index + 3]!r} != {b[index : index + 3]!r}"


def test_word_split_matches_regex_module_on_every_assigned_code_point():
    regex = pytest.importorskip("regex")
    reference = regex.compile(OPEN_CLIP_PATTERN, regex.IGNORECASE)
    # Cleaning leaves no whitespace but " ", so other isspace() characters never reach the pattern.
    assigned = [
        chr(c)
        for c in range(sys.maxunicode + 1)
        if unicodedata.category(chr(c)) not in ("Cn", "Cs") and not chr(c).isspace()
    ]
    probes = ["a".join(assigned), "!".join(assigned), "1".join(assigned), " ".join("'" + c for c in assigned)]
    for probe in probes:
        mine, theirs = tokenizer_module._word_pattern().findall(probe), reference.findall(probe)
        assert mine == theirs, _first_difference(mine, theirs)


def test_no_letters_or_numbers_outside_scanned_blocks():
    scanned = set().union(*map(set, tokenizer_module._SCANNED_BLOCKS))
    for code in range(0x40000, sys.maxunicode + 1):
        if code not in scanned:
            assert unicodedata.category(chr(code))[0] not in "LN", hex(code)


# ---------------------------------------------------------------- reference fixture


def test_reference_fixture_tokens(tok, reference_dir):
    reference = np.load(reference_dir / "reference_r101_vit16_cocostuff.npz")
    names = json.loads((reference_dir / "cocostuff_all_classnames.json").read_text())
    templates = load_templates()
    single = tok([templates["single"][0].format(n) for n in names], dtype=np.int32)
    np.testing.assert_array_equal(single, reference["text_tokens_test_single"])
    assert templates["single"][0] == "A photo of a {} in the scene"
    clip_templates = templates["IMAGENET_TEMPLATES_SELECT_CLIP"]
    clip = tok([t.format(n) for n in names for t in clip_templates], dtype=np.int32)
    expected = reference["text_tokens_test_clip"]
    assert expected.shape == (len(names), len(clip_templates), 77)
    np.testing.assert_array_equal(clip.reshape(expected.shape), expected)


# ---------------------------------------------------------------- API


def test_call_layout(tok):
    out = tok("a photo of a cat.")
    assert out.dtype == np.int64 and out.shape == (1, 77)
    assert out[0, :8].tolist() == [SOT_ID, 320, 1125, 539, 320, 2368, 269, EOT_ID]
    assert not out[0, 8:].any()
    assert tok.encode("a photo of a cat.") == [320, 1125, 539, 320, 2368, 269]
    assert tok([]).shape == (0, 77)
    assert tok(["a", "b"], context_length=5, dtype=np.int32).dtype == np.int32
    assert tok("").tolist()[0][:3] == [SOT_ID, EOT_ID, 0]


def test_truncation(tok):
    text = "cat " * 100
    out = tok(text)
    assert out[0, 0] == SOT_ID and out[0, 76] == EOT_ID and (out[0, 1:76] == 2368).all()
    assert tok(text, context_length=10)[0].tolist() == [SOT_ID, *[2368] * 8, EOT_ID]
    with pytest.raises(ValueError, match="longer than context length"):
        tok(text, truncate=False)
    assert tok("cat " * 75, truncate=False)[0, 76] == EOT_ID  # exactly 77 ids fit


def test_decode(tok):
    assert tok.decode(tok.encode("Hello,  World! naïve 東京 😀")) == "hello , world ! naïve 東京 😀 "
    assert tok.decode(np.array([SOT_ID, 2368, EOT_ID])) == "<start_of_text>cat <end_of_text>"


def test_custom_vocab_path(tmp_path, tok):
    vocab = tmp_path / "bundle_vocab.txt.gz"
    shutil.copy(tokenizer_module.DEFAULT_VOCAB_PATH, vocab)
    assert ClipTokenizer(vocab, context_length=16)("a diagram").tolist() == tok("a diagram", 16).tolist()
    broken = tmp_path / "broken.txt.gz"
    import gzip

    broken.write_bytes(gzip.compress(b"header\na b\n"))
    with pytest.raises(ValueError, match="not a CLIP BPE merges file"):
        ClipTokenizer(broken)


def test_loads_fast():
    tokenizer_module._word_pattern.cache_clear()
    start = time.perf_counter()
    ClipTokenizer(use_ftfy=False)("warm up")
    assert time.perf_counter() - start < 1.0  # typically ~0.2 s; generous for busy CI machines


def test_imports_without_torch_regex_or_ftfy():
    code = (
        "import sys\n"
        "for name in ('torch', 'regex', 'ftfy', 'open_clip'): sys.modules[name] = None\n"
        "from sdk.tokenizer import ClipTokenizer\n"
        "print(ClipTokenizer()('a photo of a cat.')[0, :8].tolist())\n"
        "assert 'torch' not in [m for m, v in sys.modules.items() if v is not None]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str([SOT_ID, 320, 1125, 539, 320, 2368, 269, EOT_ID])


@pytest.mark.parametrize("use_ftfy", [None, False])
@pytest.mark.parametrize(
    "text, visible",
    [
        ("\ufeff", ""),
        ("\u200b\u200c\u200d\u2060", ""),
        ("\x1b[31m", ""),
        ("&nbsp;&#8203;", ""),
        ("\u3164\u115f", ""),
        ("\ufe0f\u034f", ""),
        ("\U000e0041", ""),
        (" \t\u3000 ", ""),
        ("\u0345", ""),
        ("Red\u200bCar", "redcar"),
        ("caf\u00e9", "caf\u00e9"),
        ("\ufb01sh", "fish"),
        ("&amp;", "&"),
    ],
)
def test_visible_text_is_what_the_tokenizer_can_read(use_ftfy, text, visible):
    """Empty = the class name says nothing once cleaned (sdk.classnames refuses it)."""
    assert tokenizer_module.visible_text(text, use_ftfy) == visible
