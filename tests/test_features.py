"""Image features: ``seg.classify(seg.encode(img), v)`` is ``seg(img, v)``, before and after save/load.

On the checked-in tiny bundle (no torch) in every mode, on numpy and on device arrays (the fake
device of ``tests/test_sdk_seam.py``), and on the full R101 + ViT-B/16 fixture bundle (slow). The
file format refuses what is not its own: another bundle, another mode, another version, broken or
pickled files, each with one line.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from sdk.features import FORMAT_VERSION, UINT8_SCALE, ImageFeatures, bundle_identity, decode_masks, encode_masks
from tests.sdk_helpers import NAMES, block_image, copy_bundle, random_text_features, tiny_bundle
from tests.test_sdk_seam import segmenters  # noqa: F401 - the fixture: a CPU and a device-array Segmenter

MODES = ("cropmask", "pruned", "maskpool", "proposal")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


def make(bundle, **kw):
    from sdk import Segmenter

    seg = Segmenter(bundle, backend="onnxruntime", cache_dir=False, min_size=64, clip_batch=4, **kw)
    features = random_text_features(len(NAMES), 32)
    seg.set_vocabulary(NAMES, text_features=features[0], text_features_clip=features[1])
    return seg


@pytest.fixture(scope="module")
def seg(bundle):
    return make(bundle)


def other_vocabulary(seg, seed=5):
    """Another vocabulary (random embeddings), leaving the segmenter's own as it was."""
    names = ["cat", "sky", "tree", "water"]
    a, b = random_text_features(len(names), 32, seed=seed)
    before = seg.vocabulary
    vocab = seg.set_vocabulary(names, text_features=a, text_features_clip=b)
    seg.set_vocabulary(before)
    return vocab


def assert_same(a, b, probs=True):
    np.testing.assert_array_equal(a.label_map, b.label_map)
    assert a.class_names == b.class_names
    assert [(s.index, s.area, s.score) for s in a.segments] == [(s.index, s.area, s.score) for s in b.segments]
    if probs:
        assert float(np.abs(a.probs - b.probs).max()) <= 1e-6


# ---------------------------------------------------------------------------- identical results
@pytest.mark.parametrize("mode", MODES)
def test_classify_of_encode_is_the_call_in_every_mode(seg, mode, tmp_path):
    image = block_image(90, 120, seed=7)
    vocab = seg.vocabulary
    ref = seg(image, vocabulary=vocab, mode=mode, return_probs=True)
    features = seg.encode(image, mode=mode)
    assert features.mode == mode and features.original == (90, 120)
    assert "proposal" in features.timings and "semantic" not in features.timings
    out = seg.classify(features, vocab, return_probs=True)
    assert_same(out, ref)
    assert seg(features, vocab, return_probs=True).label_map.tobytes() == ref.label_map.tobytes()
    assert "proposal" not in out.timings and "clip" not in out.timings and "semantic" in out.timings
    assert out.info == ref.info

    path = features.save(tmp_path / "image.features.npz")
    loaded = seg.load_features(path)
    assert_same(seg.classify(loaded, vocab, return_probs=True), ref)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary file was left behind"

    for name in (vocab, other_vocabulary(seg)):  # any vocabulary, as often as asked
        assert_same(seg.classify(features, name, return_probs=True), seg(image, name, mode=mode, return_probs=True))


def test_pruned_features_keep_every_query_unless_encoded_for_a_vocabulary(bundle):
    seg = make(bundle, mode="pruned", prune_threshold=0.5)
    image = block_image(90, 120, seed=11)
    vocab = seg.vocabulary
    ref = seg(image, return_probs=True)
    q = ref.info["queries"]
    assert 0 < ref.info["clip_queries"] < q, "the threshold must select some queries, not all"

    full = seg.encode(image)  # no vocabulary: every query through CLIP, exact for any vocabulary
    assert full.clip_queries is None and full.clip.shape[0] == q
    assert_same(seg.classify(full, vocab, return_probs=True), ref)

    subset = seg.encode(image, vocabulary=vocab)  # what seg(image, vocab) does: only vocab's queries
    assert subset.clip_queries.size == ref.info["clip_queries"]
    assert_same(seg.classify(subset, vocab, return_probs=True), ref)
    other = other_vocabulary(seg)
    exact = seg(image, other, return_probs=True)
    approx = seg.classify(subset, other, return_probs=True)  # selections differ: missing rows are counted
    wanted = exact.info["clip_queries"]
    assert approx.info["clip_queries"] + approx.info.get("clip_missing", 0) == wanted
    if "clip_missing" not in approx.info:
        assert_same(approx, exact)


def test_device_arrays_stay_on_the_device_until_save(segmenters, tmp_path):
    from tests.test_sdk_seam import FakeDevice

    cpu, device = segmenters  # the same bundle and vocabulary on numpy and on fake device arrays
    arrays = device.backend.arrays
    image = block_image(90, 120, seed=3)
    for mode in MODES:
        ref = cpu(image, mode=mode)
        arrays.downloads.clear()
        features = device.encode(image, mode=mode)
        assert isinstance(features.masks, FakeDevice) and isinstance(features.embeddings, FakeDevice)
        assert arrays.downloads == []
        assert_same(device.classify(features), ref, probs=False)
        arrays.downloads.clear()
        path = features.save(tmp_path / f"{mode}.npz")
        assert len(arrays.downloads) == (2 if mode == "proposal" else 3)  # masks, embeddings, CLIP rows
        loaded = device.load_features(path)
        assert isinstance(loaded.masks, FakeDevice)
        assert_same(device.classify(loaded), ref, probs=False)
        assert_same(cpu.classify(loaded), ref, probs=False)  # device features on a CPU segmenter


# ---------------------------------------------------------------------------- compact storage
def test_compact_mask_storage(seg, tmp_path):
    image = block_image(90, 120, seed=7)
    features = seg.encode(image, mode="cropmask")
    ref = seg.classify(features)
    sizes = {}
    for storage in ("fp32", "fp16", "uint8"):
        path = features.save(tmp_path / f"{storage}.npz", storage=storage)
        sizes[storage] = path.stat().st_size
        loaded = seg.load_features(path)
        assert loaded.storage == storage
        agree = float((seg.classify(loaded).label_map == ref.label_map).mean())
        assert agree >= {"fp32": 1.0, "fp16": 0.995, "uint8": 0.98}[storage], (storage, agree)
    assert sizes["uint8"] < sizes["fp16"] < sizes["fp32"]


@pytest.mark.parametrize("scale", [1.0, UINT8_SCALE])
def test_uint8_masks_keep_the_scaled_sigmoid_within_half_a_step(scale):
    logits = np.linspace(-40, 40, 10001, dtype=np.float32).reshape(1, 1, 1, -1)
    stored = encode_masks(logits, "uint8", scale)
    assert stored.dtype == np.uint8 and stored.min() == 0 and stored.max() == 255
    back = decode_masks(stored, "uint8", scale)
    sig = lambda x: 1 / (1 + np.exp(-x.astype(np.float64) / scale))  # noqa: E731
    assert np.abs(sig(back) - sig(logits)).max() <= 0.5 / 255 + 1e-6
    assert np.isfinite(back).all() and np.all(np.diff(back.ravel()) >= 0)
    assert decode_masks(encode_masks(logits, "fp16"), "fp16").dtype == np.float32


# ---------------------------------------------------------------------------- what is refused
def test_bundle_identity_ignores_the_text_side(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    ident = bundle_identity(manifest)
    more = json.loads(json.dumps(manifest))
    more["files"]["vocab/extra.npz"] = "0" * 64
    more["files"]["proposal.engine"] = "1" * 64
    more["vocabularies"]["extra"] = "vocab/extra.npz"
    assert bundle_identity(more) == ident
    more["files"]["proposal.weights.bin"] = "2" * 64
    assert bundle_identity(more) != ident


def one_line(e) -> str:
    text = str(e.value)
    assert "\n" not in text and len(text) < 400, text
    return text


def test_features_of_another_bundle_or_mode_are_refused(seg, bundle, tmp_path):
    from sdk import BundleError, OptionError

    features = seg.encode(block_image(90, 120, seed=1), mode="maskpool")
    path = features.save(tmp_path / "a.npz")
    other = copy_bundle(bundle, tmp_path / "other")
    bg = np.load(other / "background.npy")
    np.save(other / "background.npy", bg * 2)
    manifest = json.loads((other / "manifest.json").read_text())
    from sdk.bundle_format import sha256_file

    manifest["files"]["background.npy"] = sha256_file(other / "background.npy")
    (other / "manifest.json").write_text(json.dumps(manifest))
    seg2 = make(other)
    with pytest.raises(BundleError) as e:
        seg2.load_features(path)
    assert str(path) in one_line(e) and "another bundle" in str(e.value)
    with pytest.raises(BundleError, match="another bundle"):
        seg2.classify(features)
    with pytest.raises(OptionError) as e:
        seg.classify(features, mode="cropmask")
    assert "maskpool" in one_line(e)
    with pytest.raises(OptionError):
        ImageFeatures.load(path, mode="proposal")
    with pytest.raises(OptionError, match="storage"):
        features.save(tmp_path / "b.npz", storage="int4")


def _rewrite(path, out, **changes):
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    header = json.loads(data["header"].tobytes())
    header.update(changes.pop("header", {}))
    data["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    for k, v in changes.items():
        if v is None:
            data.pop(k)
        else:
            data[k] = v
    with open(out, "wb") as f:
        np.savez(f, **data)
    return out


def test_malformed_files_are_one_line_errors(seg, tmp_path):
    from sdk import BundleError

    features = seg.encode(block_image(90, 120, seed=1), mode="cropmask")
    good = features.save(tmp_path / "good.npz")
    raw = good.read_bytes()
    q, d = features.num_queries, features.embeddings.shape[1]
    cases = {
        "missing": (tmp_path / "nope.npz", "does not exist"),
        "garbage": (tmp_path / "garbage.npz", "not a readable features file"),
        "truncated": (tmp_path / "truncated.npz", "not a readable features file"),
        "pickled": (tmp_path / "pickled.npz", "not a readable features file"),
        "no-header": (tmp_path / "h.npz", "not zegformer-sdk"),
        "foreign": (_rewrite(good, tmp_path / "f.npz", header={"format": "something/else"}), "not zegformer-sdk"),
        "newer": (
            _rewrite(good, tmp_path / "n.npz", header={"format_version": FORMAT_VERSION + 1}),
            "upgrade zegformer-sdk",
        ),
        "nan": (_rewrite(good, tmp_path / "nan.npz", embeddings=np.full((q, d), np.nan, np.float32)), "NaN"),
        "rows": (_rewrite(good, tmp_path / "rows.npz", clip=np.zeros((q - 1, d), np.float32)), "CLIP rows"),
        "dtype": (_rewrite(good, tmp_path / "dt.npz", masks=np.zeros((1, q, 16, 24), np.float64)), "masks are"),
        "sizes": (_rewrite(good, tmp_path / "s.npz", header={"resized": [640, 1]}), "exceeds padded"),
        "no-clip": (_rewrite(good, tmp_path / "nc.npz", clip=None), "needs CLIP rows"),
        "queries-no-clip": (
            _rewrite(
                good,
                tmp_path / "qnc.npz",
                header={"mode": "proposal"},
                clip=None,
                clip_queries=np.arange(q, dtype=np.int64),
            ),
            "clip_queries without CLIP rows",
        ),
    }
    (tmp_path / "garbage.npz").write_bytes(b"PK\x03\x04 not really a zip" * 10)
    (tmp_path / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    with open(tmp_path / "pickled.npz", "wb") as f:
        np.savez(f, header=np.array([{"format": "x"}], dtype=object))
    with np.load(good) as z:
        no_header = {k: z[k] for k in z.files if k != "header"}
    with open(tmp_path / "h.npz", "wb") as f:
        np.savez(f, **no_header)
    for name, (path, words) in cases.items():
        with pytest.raises(BundleError) as e:
            seg.load_features(path)
        text = one_line(e)
        assert str(path) in text and words in text, (name, text)

    grid = _rewrite(good, tmp_path / "grid.npz", masks=np.zeros((1, q, 8, 8), np.float32))
    with pytest.raises(BundleError, match="do not fit this bundle"):
        seg.classify(seg.load_features(grid))


def test_huge_arrays_are_refused_before_reading(tmp_path):
    from sdk import BundleError

    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w") as z:  # a header that claims 4 GB of masks, then nothing
        header = np.lib.format.header_data_from_array_1_0(np.zeros((1,), np.float32))
        header["shape"] = (1, 100, 100_000, 100)
        with z.open("masks.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, header)
    with pytest.raises(BundleError, match="is not one features hold"):
        ImageFeatures.load(path)


# ---------------------------------------------------------------------------- the fixture bundle
@pytest.mark.slow
def test_fixture_bundle_classify_of_encode_is_the_call(fixture_bundle, fixture_arrays, reference_dir, tmp_path):
    """The full R101 + ViT-B/16 model, 171 classes, every mode: identical label maps, also after save/load."""
    from sdk import Segmenter

    names = json.loads((reference_dir / "cocostuff_all_classnames.json").read_text())
    seg = Segmenter(fixture_bundle, backend="onnxruntime", min_size=None, cache_dir=False)
    seg.set_vocabulary(
        names,
        text_features=fixture_arrays["text_features_test"],
        text_features_clip=fixture_arrays["text_features_test_clip"],
    )
    image = fixture_arrays["image"]
    for mode in MODES:
        ref = seg(image, mode=mode, return_probs=True)
        features = seg.encode(image, mode=mode)
        assert_same(seg.classify(features, return_probs=True), ref)
        loaded = seg.load_features(features.save(tmp_path / f"{mode}.npz"))
        assert_same(seg.classify(loaded, return_probs=True), ref)
