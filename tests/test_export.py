"""``python -m export`` end to end on a tiny random model: bundle contents, manifest, hashes, and
ONNX Runtime vs the PyTorch modules at sizes that differ from the trace size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from export.__main__ import main
from export.graphs import ClipImageGraph, ClipTextGraph, ProposalGraph
from export.verify import clip_text_cases, compare, padded_block_image
from sdk import bundle_format as bf
from train.checkpoint import load_model, save_checkpoint
from train.config import preset
from train.model import build_model
from train.model.text import expand_prompts, tokenize

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["cat", "dog", "sky, clouds", "grass", "road"]
SEEN = [True, True, True, False, False]
TRACE = ["--image-size", "128x160", "--dense-size", "64x64"]
MANIFEST_KEYS = {
    "format",
    "format_version",
    "created",
    "model",
    "preprocess",
    "inference",
    "classes",
    "default_vocabulary",
    "vocabularies",
    "tokenizer",
    "graphs",
    "background",
    "checkpoint",
    "files",
    "versions",
    "engines",
}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "export", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """``(checkpoint, bundle, model)``: a tiny random checkpoint exported in-process."""
    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    ckpt = root / "tiny.pth"
    save_checkpoint(ckpt, build_model(preset("tiny")), NAMES, SEEN, extra={"source": {"dataset": "toy"}})
    classes = root / "my classes.txt"
    classes.write_text("# my classes\nzebra\n\nred car ,  automobile  # synonyms\n", encoding="utf-8")
    bundle = root / "bundle"
    assert (
        main(
            [
                "--checkpoint",
                str(ckpt),
                "--out",
                str(bundle),
                *TRACE,
                "--no-progress",
                "--vocab",
                "train",
                "--vocab",
                "toy",
                "--vocab",
                str(classes),
                "--vocab",
                "voc",
            ]
        )
        == 0
    )
    model, _ = load_model(ckpt)
    return ckpt, bundle, model


def session(bundle: Path, graph: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(bundle / f"{graph}.onnx"), providers=["CPUExecutionProvider"])


def assert_close(got: np.ndarray, ref: np.ndarray, rel: float = 1e-3) -> None:
    max_abs, r = compare(got, ref)
    assert r <= rel, f"max_abs {max_abs:.3e}, rel {r:.3e} > {rel}"


def test_manifest_follows_the_contract(tiny):
    ckpt, bundle, model = tiny
    m = json.loads((bundle / bf.MANIFEST).read_text())
    assert set(m) == MANIFEST_KEYS
    assert (m["format"], m["format_version"]) == (bf.FORMAT, bf.FORMAT_VERSION)
    assert set(m["graphs"]) == set(bf.GRAPHS)
    assert m["graphs"]["proposal"] == {
        "file": "proposal.onnx",
        "inputs": {"image": "[B,3,H,W]"},
        "outputs": {"mask_logits": "[B,10,H/4,W/4]", "segment_embeddings": "[B,10,32]"},
    }
    assert m["classes"] == {"names": NAMES, "seen": SEEN}
    assert m["vocabularies"] == {
        "train": "vocab/train.npz",
        "toy": "vocab/toy.npz",
        "my_classes": "vocab/my_classes.npz",
        "voc": "vocab/voc.npz",
    }
    assert m["default_vocabulary"] == "train"
    assert m["inference"]["dense_size"] == [64, 64]
    assert m["inference"]["min_size"] == 640 and m["inference"]["max_size"] == 2560
    assert m["inference"]["ensemble_lambda"] == pytest.approx(2 / 3)
    assert m["model"]["segment_logit_scale"] == pytest.approx(100.0, rel=1e-6)
    assert m["model"]["clip_logit_scale"] == pytest.approx(float(model.clip.logit_scale.detach().exp()))
    assert m["model"]["num_queries"] == 10 and m["model"]["embed_dim"] == 32
    assert m["tokenizer"] == {"file": bf.TOKENIZER_VOCAB, "context_length": 77}
    assert m["checkpoint"]["sha256"] == bf.sha256_file(ckpt)
    assert m["versions"]["opset"] == 17 and m["engines"] == {}


def test_every_file_is_hashed(tiny):
    _, bundle, _ = tiny
    m = json.loads((bundle / bf.MANIFEST).read_text())
    on_disk = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} - {bf.MANIFEST}
    assert set(m["files"]) == on_disk
    for rel, digest in m["files"].items():
        assert bf.sha256_file(bundle / rel) == digest, rel
    assert (bundle / bf.TOKENIZER_VOCAB).read_bytes() == (ROOT / "sdk/resources" / bf.TOKENIZER_VOCAB).read_bytes()
    assert not [p for p in bundle.parent.iterdir() if p.name.startswith(".bundle.")]


def test_background_and_vocabularies(tiny):
    _, bundle, model = tiny
    bg = np.load(bundle / bf.BACKGROUND)
    assert bg.shape == (1, 32) and bg.dtype == np.float32
    np.testing.assert_array_equal(bg, model.predictor.bg_feature.detach().numpy())
    train = np.load(bundle / "vocab/train.npz")
    assert list(train["names"]) == ["cat", "dog", "sky, clouds"]
    assert list(train["templates"]) == ["A photo of a {} in the scene"] and len(train["templates_clip"]) == 32
    np.testing.assert_allclose(
        train["text_features"], model.text_embeddings(NAMES[:3], list(train["templates"])).numpy(), atol=1e-6
    )
    np.testing.assert_allclose(
        train["text_features_clip"], model.text_embeddings(NAMES[:3], list(train["templates_clip"])).numpy(), atol=1e-6
    )
    voc = np.load(bundle / "vocab/voc.npz")
    assert len(voc["names"]) == 20 and voc["names"][0] == "aeroplane"
    mine = np.load(bundle / "vocab/my_classes.npz", allow_pickle=False)
    assert list(mine["names"]) == ["zebra", "red car, automobile"]
    assert mine["text_features"].shape == mine["text_features_clip"].shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(mine["text_features_clip"], axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("batch,h,w", [(1, 64, 96), (2, 96, 64), (1, 32, 224)])
def test_proposal_dynamic_sizes(tiny, batch, h, w):
    _, bundle, model = tiny
    image = padded_block_image(h, w, batch, seed=h, mean=model.cfg.pixel_mean, div=32)
    masks, emb = session(bundle, "proposal").run(None, {"image": image})
    with torch.no_grad():
        ref_masks, ref_emb = ProposalGraph(model).eval()(torch.from_numpy(image))
    assert masks.shape == (batch, 10, h // 4, w // 4) and emb.shape == (batch, 10, 32)
    assert_close(masks, ref_masks.numpy())
    assert_close(emb, ref_emb.numpy())
    np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("n", [1, 7])
def test_clip_image_dynamic_count(tiny, n):
    _, bundle, model = tiny
    crops = np.random.default_rng(n).standard_normal((n, 3, 32, 32)).astype(np.float32)
    (emb,) = session(bundle, "clip_image").run(None, {"crops": crops})
    with torch.no_grad():
        ref = ClipImageGraph(model).eval()(torch.from_numpy(crops)).numpy()
    assert emb.shape == (n, 32)
    assert_close(emb, ref)


def test_clip_text_matches_torch_and_vocab(tiny):
    _, bundle, model = tiny
    tokens = clip_text_cases(model)["prompts T=3"][0]
    (raw,) = session(bundle, "clip_text").run(None, {"tokens": tokens})
    with torch.no_grad():
        ref = ClipTextGraph(model).eval()(torch.from_numpy(tokens)).numpy()
    assert raw.shape == (3, 32)
    assert_close(raw, ref)
    # The SDK's recipe: normalise per prompt, average per class, normalise → the stored embeddings.
    vocab = np.load(bundle / "vocab/my_classes.npz")
    prompts, owner = expand_prompts(list(vocab["names"]), list(vocab["templates_clip"]))
    (raw,) = session(bundle, "clip_text").run(None, {"tokens": tokenize(prompts).numpy().astype(np.int32)})
    raw = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    owner = np.asarray(owner)
    pooled = np.stack([raw[owner == k].mean(0) for k in range(len(vocab["names"]))])
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    np.testing.assert_allclose(pooled, vocab["text_features_clip"], atol=1e-5)


def test_clip_dense(tiny):
    _, bundle, model = tiny
    from export.dense_clip import DenseClipGraph

    image = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    (feats,) = session(bundle, "clip_dense").run(None, {"image": image})
    with torch.no_grad():
        ref = DenseClipGraph(model.clip, (64, 64)).eval()(torch.from_numpy(image)).numpy()
    assert feats.shape == (1, 32, 8, 8)
    assert_close(feats, ref)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)


def test_dense_wrapper_reuses_clip_exactly(tiny):
    """At CLIP's own size the wrapper's tokens + the *full* last block reproduce encode_image."""
    _, _, model = tiny
    from export.dense_clip import DenseClipGraph

    dense = DenseClipGraph(model.clip, (32, 32)).eval()
    torch.testing.assert_close(dense.positional_embedding, model.clip.visual.positional_embedding)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = model.clip.visual.transformer.resblocks[-1](dense.tokens_before_last_block(x))
        pooled = model.clip.visual.ln_post(tokens[:, 0]) @ model.clip.visual.proj
        torch.testing.assert_close(pooled, model.clip.encode_image(x), rtol=1e-5, atol=1e-5)


def test_cli_subprocess_default_vocab_and_verify(tiny, tmp_path):
    ckpt, _, _ = tiny
    out = tmp_path / "cli_bundle"
    proc = run_cli("--checkpoint", str(ckpt), "--out", str(out), *TRACE, "--verify", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "verification passed" in proc.stderr
    m = json.loads((out / bf.MANIFEST).read_text())
    assert m["vocabularies"] == {"train": "vocab/train.npz", "toy": "vocab/toy.npz"}
    assert m["default_vocabulary"] == "toy"


def test_cli_help():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for word in ("--checkpoint", "--vocab", "--tensorrt", "--verify", "ade-847", "synonyms"):
        assert word in proc.stdout


def test_force_replaces_a_bundle(tiny, tmp_path):
    ckpt, _, _ = tiny
    out = tmp_path / "b"
    one = tmp_path / "one_class.txt"
    one.write_text("cat\n")
    args = ["--checkpoint", str(ckpt), "--out", str(out), *TRACE, "--no-progress", "--vocab", str(one)]
    assert main(args) == 0
    first = json.loads((out / bf.MANIFEST).read_text())["created"]
    (out / "stale.txt").write_text("from the old bundle")
    assert main(args + ["--force"]) == 0
    assert not (out / "stale.txt").exists()
    assert json.loads((out / bf.MANIFEST).read_text())["created"] >= first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "one_class.txt"]  # no temp dirs left


# ---------------------------------------------------------------------------------------------
# Bad inputs: a one-line "error: ..." on stderr, a non-zero exit, and nothing left behind.


def run_failing(capsys, args, out: Path) -> str:
    before = sorted(p.name for p in out.parent.iterdir())
    rc = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1 and err[-1] == errors[0], err
    assert sorted(p.name for p in out.parent.iterdir()) == before  # no bundle, no temp directory
    return errors[0]


def test_error_missing_checkpoint(tmp_path, capsys):
    msg = run_failing(
        capsys, ["--checkpoint", str(tmp_path / "nope.pth"), "--out", str(tmp_path / "b")], tmp_path / "b"
    )
    assert "not found" in msg


def test_error_corrupt_checkpoint(tiny, tmp_path, capsys):
    ckpt = tmp_path / "corrupt.pth"
    ckpt.write_bytes(tiny[0].read_bytes()[:5000])  # truncated zip
    msg = run_failing(capsys, ["--checkpoint", str(ckpt), "--out", str(tmp_path / "b")], tmp_path / "b")
    assert "cannot read checkpoint" in msg
    ckpt.write_bytes(b"not a checkpoint at all")
    run_failing(capsys, ["--checkpoint", str(ckpt), "--out", str(tmp_path / "b")], tmp_path / "b")


def test_error_foreign_checkpoint(tmp_path, capsys):
    ckpt = tmp_path / "official.pth"
    torch.save({"model": {"backbone.stem.conv1.weight": torch.zeros(1)}}, ckpt)
    msg = run_failing(capsys, ["--checkpoint", str(ckpt), "--out", str(tmp_path / "b")], tmp_path / "b")
    assert "convert_official" in msg


def test_error_unknown_vocabulary(tiny, tmp_path, capsys):
    msg = run_failing(
        capsys, ["--checkpoint", str(tiny[0]), "--out", str(tmp_path / "b"), "--vocab", "imagenet"], tmp_path / "b"
    )
    assert "unknown vocabulary 'imagenet'" in msg and "coco-stuff" in msg


def test_error_empty_class_file(tiny, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing here\n\n   \n")
    msg = run_failing(
        capsys, ["--checkpoint", str(tiny[0]), "--out", str(tmp_path / "b"), "--vocab", str(empty)], tmp_path / "b"
    )
    assert "no classes" in msg


def test_error_output_exists(tiny, tmp_path, capsys):
    out = tmp_path / "b"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    msg = run_failing(capsys, ["--checkpoint", str(tiny[0]), "--out", str(out)], out)
    assert "already exists" in msg and "--force" in msg
    msg = run_failing(capsys, ["--checkpoint", str(tiny[0]), "--out", str(out), "--force"], out)
    assert "not a bundle" in msg  # --force never deletes a directory that is not a bundle
    assert (out / "keep.txt").read_text() == "mine"


def test_error_bad_size(tiny, tmp_path, capsys):
    msg = run_failing(
        capsys, ["--checkpoint", str(tiny[0]), "--out", str(tmp_path / "b"), "--image-size", "100x160"], tmp_path / "b"
    )
    assert "multiples of 32" in msg


def test_failure_midway_leaves_nothing(tiny, tmp_path, capsys, monkeypatch):
    """A crash after the graphs were written: no bundle, no temp directory, an old bundle intact."""
    import export.vocab

    def boom(*args, **kwargs):
        raise export.errors.ExportError("simulated failure while embedding text")

    out = tmp_path / "b"
    monkeypatch.setattr(export.vocab, "embed_vocabularies", boom)
    run_failing(capsys, ["--checkpoint", str(tiny[0]), "--out", str(out), *TRACE], out)
    assert not out.exists()
    monkeypatch.undo()
    assert main(["--checkpoint", str(tiny[0]), "--out", str(out), *TRACE, "--vocab", "train"]) == 0
    capsys.readouterr()
    old = (out / bf.MANIFEST).read_text()
    monkeypatch.setattr(export.vocab, "embed_vocabularies", boom)
    run_failing(capsys, ["--checkpoint", str(tiny[0]), "--out", str(out), *TRACE, "--force"], out)
    assert (out / bf.MANIFEST).read_text() == old


def test_error_tensorrt_unavailable(tiny, tmp_path):
    pytest.importorskip("numpy")
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    out = tmp_path / "b"
    proc = run_cli("--checkpoint", str(tiny[0]), "--out", str(out), "--tensorrt", "--fp16")
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "TensorRT" in lines[0], lines
    assert not out.exists()


def test_tensorrt_module_needs_no_torch():
    code = (
        "import sys, export.tensorrt as t; assert 'torch' not in sys.modules, 'torch imported'; "
        "p = t.parse_profile('proposal:image=1x3x64x64,1x3x640x864,2x3x1344x1344'); "
        "print(p['proposal']['image'][2])"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[2, 3, 1344, 1344]"


def test_tensorrt_profiles(tiny):
    from export.errors import ExportError
    from export.tensorrt import default_profiles, merge_profiles

    m = json.loads((tiny[1] / bf.MANIFEST).read_text())
    base = default_profiles(m)
    assert base["clip_image"]["crops"] == [[1, 3, 32, 32], [10, 3, 32, 32], [10, 3, 32, 32]]
    assert base["clip_dense"]["image"] == [[1, 3, 64, 64]] * 3
    assert base["proposal"]["image"][1] == [1, 3, 640, 864]
    merged = merge_profiles(base, {"clip_text": {"tokens": [[1, 77], [8, 77], [16, 77]]}})
    assert merged["clip_text"]["tokens"][2] == [16, 77] and merged["proposal"] == base["proposal"]
    with pytest.raises(ExportError):
        merge_profiles(base, {"clip_text": {"tokens": [[8, 77], [1, 77], [16, 77]]}})
    with pytest.raises(ExportError):
        merge_profiles(base, {"nope": {"x": [[1], [1], [1]]}})


def test_build_engines_without_tensorrt_says_so(tiny):
    from export.tensorrt import TensorRTUnavailable, build_engines

    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    with pytest.raises(TensorRTUnavailable, match="TensorRT"):
        build_engines(tiny[1], fp16=True)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--trt-contexts", "2"], "only apply with --tensorrt"),
        (["--tensorrt", "--trt-contexts", "0"], "at least 1"),
        (["--tensorrt", "--trt-precision", "int8"], "add --int8"),
    ],
)
def test_tensorrt_options_are_checked_before_any_work(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as e:
        main(["--checkpoint", str(tmp_path / "absent.pth"), "--out", str(tmp_path / "b"), *extra])
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    "extra, precision, contexts",
    [
        ([], "fp32", 1),
        (["--fp16"], "fp16", 1),
        (["--int8"], "int8", 1),
        (["--int8", "--fp16"], "fp16", 1),
        (["--int8", "--fp16", "--trt-precision", "int8", "--trt-contexts", "4"], "int8", 4),
    ],
)
def test_engine_precision_and_contexts_from_the_command_line(extra, precision, contexts):
    from export.__main__ import build_parser, options_from_args
    from export.bundle import engine_precision

    opts = options_from_args(build_parser().parse_args(["--checkpoint", "m.pth", "--out", "b", "--tensorrt", *extra]))
    assert engine_precision(opts) == precision and opts.trt_contexts == contexts
