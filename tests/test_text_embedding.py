"""Text embedding cut to each prompt's length equals the 77-token result (issue 21, item 1).

* the batching rules (``sdk.text_batches``) against a causal numpy reference encoder;
* the exported tiny model's dynamic-length ``clip_text.onnx``: names of every token length up to
  77 and past it (truncated), cut vs full rows, and the SDK's class embeddings vs open_clip's own
  ``encode_text`` on the same weights (an independent reference);
* an older bundle's fixed ``[T,77]`` graph: detected, run with full rows, same embeddings;
* the reference fixture (full R101 + ViT-B/16, slow): the 171 COCO-Stuff classes, both prompt
  sets, against the official text features;
* class names empty once cleaned, and the progress reports.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from sdk.errors import VocabularyError
from sdk.text_batches import dynamic_length, encode_cut, plan_batches, token_counts
from sdk.tokenizer import EOT_ID, SOT_ID, ClipTokenizer
from tests.sdk_helpers import tiny_bundle

CONTEXT = 77
TOL = 1e-5


# ------------------------------------------------------------------ batching rules (no torch)
def causal_reference(tokens: np.ndarray) -> np.ndarray:
    """A causal "encoder": row value = features of the prefix up to the end of text (ArgMax)."""
    tokens = np.asarray(tokens, np.float64)
    prefix = np.cumsum(np.sin(tokens[:, :, None] * np.arange(1, 5)), axis=1)  # [T,L,4]
    return prefix[np.arange(len(tokens)), tokens.argmax(1)].astype(np.float32)


def random_tokens(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros((n, CONTEXT), np.int32)
    for row, length in zip(out, rng.integers(2, CONTEXT + 1, n)):
        row[0], row[1 : length - 1], row[length - 1] = SOT_ID, rng.integers(1, 49000, length - 2), EOT_ID
    return out


@pytest.mark.parametrize(
    "shape, dynamic", [("[T,L]", True), ("[T, L]", True), ("[T,77]", False), ("[T]", False), ("", False)]
)
def test_dynamic_length_is_read_from_the_manifest_shape(shape, dynamic):
    assert dynamic_length({"inputs": {"tokens": shape}}) is dynamic


def test_plan_sorts_by_length_and_cuts_at_the_longest_end_of_text():
    tokens = random_tokens(150)
    counts = token_counts(tokens)
    assert counts.tolist() == [int(np.flatnonzero(r == EOT_ID)[0]) + 1 for r in tokens]
    plan = plan_batches(counts, 64, CONTEXT)
    assert sorted(np.concatenate([rows for rows, _ in plan]).tolist()) == list(range(150))
    assert [len(rows) for rows, _ in plan] == [64, 64, 22]
    for rows, length in plan:
        assert length == counts[rows].max()
    assert [length for _, length in plan] == sorted(length for _, length in plan)
    for rows, length in plan_batches(counts, 10, CONTEXT, round_to=8):
        assert length % 8 == 0 or length == CONTEXT
        assert counts[rows].max() <= length < counts[rows].max() + 8


@pytest.mark.parametrize("batch, round_to", [(1, 1), (7, 1), (64, 8), (500, 1)])
def test_cut_equals_full_rows_in_input_order(batch, round_to):
    tokens = random_tokens(101, seed=batch)
    seen = []

    def encoder(x):
        seen.append(x.shape)
        return causal_reference(x)

    got = encode_cut(tokens, encoder, batch, round_to=round_to)
    np.testing.assert_array_equal(got, causal_reference(tokens))
    assert sum(s[0] for s in seen) == 101 and max(s[1] for s in seen) <= CONTEXT
    work = sum(s[0] * s[1] for s in seen)
    assert token_counts(tokens).sum() <= work < 101 * CONTEXT  # real work saved
    if batch == 1:
        assert work == token_counts(tokens).sum()
    seen.clear()
    np.testing.assert_array_equal(encode_cut(tokens, encoder, batch, cut=False), got)
    assert {s[1] for s in seen} == {CONTEXT}


def test_progress_callback_counts_every_prompt():
    calls = []
    encode_cut(random_tokens(30), causal_reference, 8, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(8, 30), (16, 30), (24, 30), (30, 30)]


def test_progress_bar_on_stderr_only_when_asked(capsys, monkeypatch):
    monkeypatch.setattr("sdk.text_batches.PROGRESS_DELAY", 0)
    encode_cut(random_tokens(20), causal_reference, 8, progress=True)
    assert "embedding class names" in capsys.readouterr().err
    encode_cut(random_tokens(20), causal_reference, 8, progress=False)
    encode_cut(random_tokens(20), causal_reference, 8, progress=None)  # stderr is no terminal here
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------ names that clean to nothing
@pytest.mark.parametrize(
    "name",
    [
        "\ufeff",
        "\u200b",
        "\u200b\u200d\u2060",
        "&nbsp;",
        "\x1b[31m",
        "\u00a0 \u3000",
        "\u0345",
        "\ufe0f",
        "\u3164",
        "cat, \u200b",
    ],
)
def test_names_empty_once_cleaned_are_refused(tmp_path_factory, name):
    from sdk import Segmenter

    seg = Segmenter(tiny_bundle(tmp_path_factory), backend="onnxruntime", cache_dir=False)
    before = seg.text_graph_runs
    with pytest.raises(VocabularyError, match="is empty"):
        seg.set_vocabulary(["cat", name])
    assert seg.text_graph_runs == before  # refused before any work


@pytest.mark.parametrize("name", ["caf\u00e9", "\u4e2d\u6587", "a\u200bb", "\u00ad-", "\u0301", "#1"])
def test_names_with_something_visible_are_kept(name):
    from sdk.classnames import validate_names

    assert validate_names([name]) == [name]


# ------------------------------------------------------------------ the old fixed-length graph (no torch)
def test_checked_in_fixed_length_bundle_runs_full_rows(tmp_path_factory):
    """The checked-in tiny bundle predates the dynamic graph: it is detected, and never cut."""
    from sdk import Segmenter

    bundle = tiny_bundle(tmp_path_factory)
    entry = json.loads((bundle / "manifest.json").read_text())["graphs"]["clip_text"]
    if dynamic_length(entry):
        pytest.skip("the checked-in tiny bundle was re-exported with a dynamic text graph")
    seg = Segmenter(bundle, backend="onnxruntime", cache_dir=False, reuse_builtin=False)
    widths = []
    run = seg._store.text_encoder
    seg._store.text_encoder = lambda t: (widths.append(t.shape[1]), run(t))[1]
    vocab = seg.set_vocabulary(["cat", "traffic light"])
    assert widths and set(widths) == {CONTEXT}
    np.testing.assert_allclose(np.linalg.norm(vocab.text_features_clip, axis=1), 1, atol=1e-5)


# ------------------------------------------------------------------ the exported dynamic graph (torch)
def names_of_every_length(tokenizer: ClipTokenizer) -> list:
    """Names of 1..81 words (one token each): prompts of every token count, and past 77 (truncated)."""
    words = ["red", "car", "of", "blue", "sky", "on", "the", "old", "stone", "bridge"]
    names = [" ".join(words[i % len(words)] for i in range(k)) for k in range(1, 82)]
    assert [len(tokenizer.encode(n)) for n in names] == list(range(1, 82))
    return names


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    pytest.importorskip("torch")
    from tests.sdk_helpers import shared_bundle

    return shared_bundle(tmp_path_factory)


def test_exported_text_graph_has_a_dynamic_length(exported):
    import onnxruntime as ort

    entry = json.loads((exported / "manifest.json").read_text())["graphs"]["clip_text"]
    assert entry["inputs"]["tokens"] == "[T,L]" and dynamic_length(entry)
    sess = ort.InferenceSession(str(exported / "clip_text.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == ["T", "L"]


def test_cut_rows_equal_77_token_rows_at_every_length(exported):
    import onnxruntime as ort

    tokenizer = ClipTokenizer()
    sess = ort.InferenceSession(str(exported / "clip_text.onnx"), providers=["CPUExecutionProvider"])
    run = lambda t: sess.run(None, {"tokens": t})[0]  # noqa: E731
    names = names_of_every_length(tokenizer)
    tokens = tokenizer([t.format(n) for n in names for t in ("A photo of a {} in the scene", "{}")], dtype=np.int32)
    counts = token_counts(tokens)
    assert set(range(3, CONTEXT + 1)) <= set(counts.tolist())  # every length; longer ones truncated to 77
    assert (tokens[counts == CONTEXT, -1] == EOT_ID).all()
    full = run(tokens)
    for round_to in (1, 8):
        np.testing.assert_allclose(encode_cut(tokens, run, 16, round_to=round_to), full, atol=TOL, rtol=0)
    for length in (2, 5, 33, 76):  # every row alone, cut exactly at its end of text
        rows = np.flatnonzero(counts == length)
        if len(rows):
            np.testing.assert_allclose(run(tokens[rows, :length]), full[rows], atol=TOL, rtol=0)


def open_clip_class_embeddings(model, names, templates) -> np.ndarray:
    """Reference: open_clip's tokenizer and ``CLIP.encode_text`` (77 tokens), pooled as the official code."""
    import open_clip
    import torch

    out = []
    with torch.no_grad():
        for name in names:
            parts = name.split(", ")
            emb = model.clip.encode_text(open_clip.tokenize([t.format(p) for t in templates for p in parts]))
            emb = emb / emb.norm(dim=-1, keepdim=True)
            mean = emb.mean(0)
            out.append((mean / mean.norm()).numpy())
    return np.stack(out)


def test_sdk_class_embeddings_equal_open_clip(exported):
    from sdk import Segmenter
    from train.checkpoint import load_model

    manifest = json.loads((exported / "manifest.json").read_text())
    model, _ = load_model(manifest["checkpoint"]["path"])
    seg = Segmenter(exported, backend="onnxruntime", cache_dir=False, reuse_builtin=False)
    names = names_of_every_length(ClipTokenizer())[::4] + ["dog, puppy", "traffic light"]
    vocab = seg.set_vocabulary(names)
    templates, templates_clip = seg._store.templates()
    np.testing.assert_allclose(
        vocab.text_features, open_clip_class_embeddings(model, names, templates), atol=TOL, rtol=0
    )
    np.testing.assert_allclose(
        vocab.text_features_clip, open_clip_class_embeddings(model, names, templates_clip), atol=TOL, rtol=0
    )


def fixed_length_copy(bundle, dest):
    """A copy of ``bundle`` whose text graph is the older fixed ``[T,77]`` one."""
    import torch

    from export.graphs import export_graph, text_spec
    from export.manifest import read_manifest, write_manifest
    from train.checkpoint import load_model

    shutil.copytree(bundle, dest)
    manifest = read_manifest(dest)
    model, _ = load_model(manifest["checkpoint"]["path"])
    tokens = torch.from_numpy(ClipTokenizer()(["a photo of a cat.", "a dog"], dtype=np.int32))
    spec = text_spec(model, tokens, dynamic_length=False)
    export_graph(spec, dest, manifest["versions"]["opset"])
    manifest["graphs"]["clip_text"] = spec.manifest_entry()
    write_manifest(dest, manifest)
    return dest


def test_older_fixed_length_graph_keeps_working(exported, tmp_path):
    import onnxruntime as ort

    from sdk import Segmenter

    old = fixed_length_copy(exported, tmp_path / "old")
    assert json.loads((old / "manifest.json").read_text())["graphs"]["clip_text"]["inputs"]["tokens"] == "[T,77]"
    sess = ort.InferenceSession(str(old / "clip_text.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == ["T", 77]
    names = ["cat", "a very long name " * 20, "dog, puppy"]
    vocabs = {}
    for label, bundle in (("old", old), ("new", exported)):
        seg = Segmenter(bundle, backend="onnxruntime", cache_dir=False, reuse_builtin=False)
        widths = []
        run = seg._store.text_encoder
        seg._store.text_encoder = lambda t, run=run, widths=widths: (widths.append(t.shape[1]), run(t))[1]
        vocabs[label] = seg.set_vocabulary(names)
        assert (set(widths) == {CONTEXT}) if label == "old" else (min(widths) < CONTEXT)
    for field in ("text_features", "text_features_clip"):
        np.testing.assert_allclose(getattr(vocabs["old"], field), getattr(vocabs["new"], field), atol=TOL, rtol=0)


# ------------------------------------------------------------------ the reference fixture (full size, slow)
@pytest.mark.slow
def test_fixture_171_classes_cut_equal_official_text_features(fixture_bundle, reference_dir, fixture_arrays):
    """All 171 COCO-Stuff classes × 33 prompts through the cut text path = the official features."""
    from sdk import Segmenter

    names = json.loads((reference_dir / "cocostuff_all_classnames.json").read_text())
    seg = Segmenter(fixture_bundle, backend="onnxruntime", cache_dir=False, reuse_builtin=False)
    vocab = seg.set_vocabulary(names)
    np.testing.assert_allclose(vocab.text_features, fixture_arrays["text_features_test"], atol=TOL, rtol=0)
    np.testing.assert_allclose(vocab.text_features_clip, fixture_arrays["text_features_test_clip"], atol=TOL, rtol=0)


@pytest.mark.slow
def test_fixture_official_tokens_cut_equal_full(fixture_bundle, fixture_arrays):
    """The official CLIP-template tokens of 40 classes: cut batches = 77-token rows of the full-size graph."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(fixture_bundle / "clip_text.onnx"), providers=["CPUExecutionProvider"])
    run = lambda t: sess.run(None, {"tokens": t})[0]  # noqa: E731
    tokens = fixture_arrays["text_tokens_test_clip"][::4].reshape(-1, CONTEXT).astype(np.int32)[::4]
    np.testing.assert_allclose(encode_cut(tokens, run, 64), run(tokens), atol=TOL, rtol=0)


def test_int8_text_graph_cuts_exactly_and_stays_close(exported, tmp_path):
    """``clip_text.int8.onnx`` (calibrated on prompts): recorded as a variant, dynamic length, cut =
    77 tokens, pooled class embeddings close to fp32."""
    import onnxruntime as ort

    from export.manifest import read_manifest, write_manifest
    from export.text_int8 import add_text_int8
    from sdk.prompts import expand_prompts, pool_class_embeddings

    bundle = shutil.copytree(exported, tmp_path / "b")
    manifest = add_text_int8(bundle, read_manifest(bundle))
    write_manifest(bundle, manifest)
    variant = read_manifest(bundle)["graphs"]["clip_text"]["variants"]["int8"]
    assert variant["file"] == "clip_text.int8.onnx" and variant["precision"] == "int8"
    sessions = {
        p: ort.InferenceSession(str(bundle / f), providers=["CPUExecutionProvider"])
        for p, f in (("fp32", "clip_text.onnx"), ("int8", variant["file"]))
    }
    assert sessions["int8"].get_inputs()[0].shape == ["T", "L"]
    assert any(n.op_type == "QuantizeLinear" for n in __import__("onnx").load(str(bundle / variant["file"])).graph.node)
    names = ["cat", "traffic light", "wooden garden fence", "sky"]
    prompts, owner = expand_prompts(names, ["a photo of a {}.", "a bad photo of the {}.", "{}"])
    tokens = ClipTokenizer()(prompts, dtype=np.int32)
    pooled = {}
    for p, sess in sessions.items():
        run = lambda t, sess=sess: sess.run(None, {"tokens": t})[0]  # noqa: E731
        cut = encode_cut(tokens, run, 5)
        np.testing.assert_allclose(cut, run(tokens), atol=1e-4, rtol=0)
        pooled[p] = pool_class_embeddings(cut, owner, len(names))
    assert (pooled["int8"] * pooled["fp32"]).sum(1).min() > 0.99


def test_benchmark_runs_and_reports(exported, tmp_path):
    """benchmarks/text_embedding.py on the tiny bundle: every path timed, cut = 77 tokens."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "te.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(root / "benchmarks" / "text_embedding.py"),
            "--bundle",
            str(exported),
            "--configs",
            "onnxruntime:fp32",
            "--after-classes",
            "3",
            "--before-classes",
            "2",
            "--repeats",
            "1",
            "--no-fixture",
            "--json",
            str(out),
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = json.loads(out.read_text())["records"]
    assert {(r["classes"], r["path"]) for r in records} == {
        (171, "before"),
        (171, "after"),
        (4, "before"),
        (4, "after"),
    }
    assert all(r["wall_s"] > 0 for r in records)
    assert max(r["max_abs_vs_fp32_77"] for r in records if r["path"] == "after") <= TOL
    assert "| 171 | onnxruntime:fp32 |" in out.with_suffix(".md").read_text()


def test_openvino_bf16_text_tier_stays_close_to_fp32(exported):
    """``precision="clip_text=bf16"``: the text graph at OpenVINO's bf16 hint, cut like fp32, class
    embeddings within cosine 0.999 of fp32 (benchmarks measure 0.99992 at full size)."""
    pytest.importorskip("openvino")
    from sdk import Segmenter
    from sdk.precision import PrecisionError

    names = ["cat", "traffic light", "wooden garden fence", "dog, puppy"]
    fp32 = Segmenter(exported, backend="openvino", cache_dir=False, reuse_builtin=False).set_vocabulary(names)
    try:
        seg = Segmenter(exported, backend="openvino", precision="clip_text=bf16", cache_dir=False, reuse_builtin=False)
    except PrecisionError as e:  # a CPU without bf16
        pytest.skip(str(e))
    assert "clip_text=bf16" in seg.precision
    bf16 = seg.set_vocabulary(names)
    for field in ("text_features", "text_features_clip"):
        cos = (getattr(bf16, field) * getattr(fp32, field)).sum(1)
        assert cos.min() >= 0.999
    assert not np.array_equal(bf16.text_features_clip, fp32.text_features_clip)  # the tier did run


def test_int8_calibration_batches_follow_the_graph_length(exported, tmp_path_factory):
    """Calibration prompts are cut for a dynamic text graph and full 77-token rows for an older fixed one."""
    from export.manifest import read_manifest
    from export.text_int8 import calibration_tokens

    cut = calibration_tokens(exported, read_manifest(exported))
    fixed_bundle = tiny_bundle(tmp_path_factory)
    fixed = calibration_tokens(fixed_bundle, read_manifest(fixed_bundle))
    assert max(b.shape[1] for b in cut) < CONTEXT and all(b.dtype == np.int32 for b in cut)
    assert {b.shape[1] for b in fixed} == {CONTEXT} and len(fixed) == len(cut)
