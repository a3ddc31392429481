"""SDK against the PyTorch reference on a tiny exported bundle: backends, modes, vocabularies, threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.sdk_helpers import NAMES, SEEN, block_image, random_text_features, shared_bundle

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return shared_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def model(bundle):
    import json

    from train.checkpoint import load_model

    manifest = json.loads((bundle / "manifest.json").read_text())
    return load_model(manifest["checkpoint"]["path"])[0]


@pytest.fixture(scope="module")
def features():
    return random_text_features(len(NAMES), 32)


def make(bundle, features, **kw):
    from sdk import Segmenter

    seg = Segmenter(bundle, backend=kw.pop("backend", "onnxruntime"), cache_dir=False, **kw)
    seg.set_vocabulary(NAMES, text_features=features[0], text_features_clip=features[1])
    return seg


def reference(model, image, features, mode="cropmask", out_size=None):
    from train.inference import segment

    tf, tfc = (torch.from_numpy(f) for f in features)
    return segment(model, image, tf, tfc, SEEN, mode=mode, out_size=out_size)["sem_seg"].numpy()


def assert_labels_match(labels, sem_seg, margin=1e-4):
    """Equal wherever the reference's top-2 margin exceeds ``margin``."""
    top = np.sort(sem_seg, axis=0)
    clear = (top[-1] - top[-2]) > margin
    assert (labels == sem_seg.argmax(0))[clear].all()


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
@pytest.mark.parametrize("mode", ["cropmask", "proposal"])
def test_matches_torch_reference(bundle, model, features, backend, mode):
    image = block_image()
    ref = reference(model, image, features, mode)
    result = make(bundle, features, backend=backend, min_size=None)(image, return_probs=True, mode=mode)
    assert result.label_map.shape == image.shape[:2] and result.label_map.dtype == np.int32
    assert result.probs.shape == (len(NAMES),) + image.shape[:2] and result.probs.dtype == np.float32
    np.testing.assert_allclose(result.probs, ref, atol=1e-4, rtol=0)
    assert_labels_match(result.label_map, ref)
    assert len({s.index for s in result.segments}) >= 2  # the tiny model is not degenerate


def test_resize_and_back_matches_reference(bundle, model, features):
    from sdk.preprocess import resize_shortest_edge

    image = block_image(90, 120, seed=3)
    seg = make(bundle, features, min_size=64)
    result = seg(image, return_probs=True)
    ref = reference(model, resize_shortest_edge(image, 64, 2560), features, out_size=(90, 120))
    assert result.info["resized"] == [64, 85] and result.info["padded"] == [64, 96]
    np.testing.assert_allclose(result.probs, ref, atol=1e-4, rtol=0)
    assert_labels_match(result.label_map, ref)


def test_maskpool_onnx_matches_torch_graphs(bundle, features):
    image = block_image(seed=4)
    a = make(bundle, features, min_size=None, mode="maskpool")(image, return_probs=True)
    b = make(bundle, features, min_size=None, mode="maskpool", backend="torch")(image, return_probs=True)
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-4, rtol=0)
    assert a.info["mode"] == "maskpool"


def test_pruned_mode(bundle, features):
    image = block_image(seed=5)
    full = make(bundle, features, min_size=None)(image, return_probs=True)
    none_pruned = make(bundle, features, min_size=None, mode="pruned", prune_threshold=0)(image, return_probs=True)
    np.testing.assert_array_equal(none_pruned.probs, full.probs)
    assert none_pruned.info["clip_queries"] == none_pruned.info["queries"]
    default = make(bundle, features, min_size=None, mode="pruned")(image)
    assert (default.label_map == full.label_map).mean() > 0.99
    all_pruned = make(bundle, features, min_size=None, mode="pruned", prune_threshold=1e9)(image, return_probs=True)
    assert all_pruned.info["clip_queries"] == 0 and "clip" not in all_pruned.timings
    assert np.isfinite(all_pruned.probs).all()


def test_prune_rule():
    from sdk.modes import prune

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (6, 5)).astype(np.float32)
    sig = rng.uniform(0.2, 1.0, (6, 50)).astype(np.float32)
    sig[2] = 1e-6  # a query whose mask is (almost) empty everywhere
    seen = np.array([True, True, False, False])
    assert prune(logits, sig, seen, 2 / 3, 0.0).all()
    keep = prune(logits, sig, seen, 2 / 3, 0.05)
    assert not keep[2] and keep.sum() >= 4
    assert prune(logits, sig, seen, 2 / 3, 0.5).sum() <= keep.sum()
    logits[0, -1] = 150.0  # background logit far above any CLIP logit: CLIP cannot raise this query
    assert not prune(logits, sig, seen, 2 / 3, 0.05, clip_scale=100.0)[0]


def test_segments_and_timings(bundle, features):
    image = block_image(seed=6)
    seg = make(bundle, features, min_size=None)
    exact = seg(image, return_probs=True)
    grid = seg(image)
    assert grid.probs is None
    np.testing.assert_array_equal(grid.label_map, exact.label_map)
    assert [s.index for s in grid.segments] == [s.index for s in exact.segments]
    for a, b in zip(grid.segments, exact.segments):
        assert a.area == b.area == int((exact.label_map == a.index).sum())
        assert a.name == NAMES[a.index] and a.seen == SEEN[a.index]
        assert abs(a.score - b.score) < 0.05
        np.testing.assert_array_equal(a.mask, exact.label_map == a.index)
    assert sum(s.area for s in exact.segments) == image.shape[0] * image.shape[1]
    for key in ("preprocess", "proposal", "crops", "clip", "ensemble", "semantic", "total"):
        assert exact.timings[key] >= 0
    assert exact.to_dict()["segments"][0]["name"] == exact.segments[0].name


def test_runtime_vocabulary_equals_bundle_embeddings(bundle):
    from sdk import Segmenter

    seg = Segmenter(bundle, backend="onnxruntime", cache_dir=False, reuse_builtin=False)
    vocab = seg.set_vocabulary(list(NAMES))  # includes the synonym entry "dog, puppy"
    assert seg.text_graph_runs > 0 and vocab.source == "runtime"
    with np.load(bundle / "vocab" / "all.npz") as z:
        assert list(z["names"]) == NAMES
        np.testing.assert_allclose(vocab.text_features, z["text_features"], atol=1e-5)
        np.testing.assert_allclose(vocab.text_features_clip, z["text_features_clip"], atol=1e-5)
    assert vocab.seen.tolist() == SEEN


def test_builtin_vocabularies_and_seen_flags(bundle):
    from sdk import Segmenter

    seg = Segmenter(bundle, backend="onnxruntime", cache_dir=False)
    assert set(seg.builtin_vocabularies) == {"train", "all"} and seg.class_names == tuple(NAMES)
    train = seg.set_vocabulary("train")
    assert train.names == tuple(n for n, s in zip(NAMES, SEEN) if s) and train.seen.all()
    mixed = seg.set_vocabulary(["tree", "car", "zebra"])  # rows reused from the built-ins + one new name
    assert mixed.seen.tolist() == [False, True, False]
    per_call = seg(block_image(), vocabulary="sky;zebra")
    assert per_call.class_names == ("sky", "zebra") and seg.class_names == ("tree", "car", "zebra")


def test_embedding_cache_memory_and_disk(bundle, tmp_path):
    from sdk import Segmenter

    names = ["zebra", "kite, paper kite", "lighthouse"]
    seg = Segmenter(bundle, backend="onnxruntime", cache_dir=tmp_path)
    first = seg.set_vocabulary(names)
    runs = seg.text_graph_runs
    assert runs > 0
    again = seg.set_vocabulary(list(names))
    assert seg.text_graph_runs == runs  # memory hit
    np.testing.assert_array_equal(first.text_features, again.text_features)
    files = list((tmp_path / "text").glob("*.npz"))
    assert len(files) == 1 and not list((tmp_path / "text").glob("*.tmp"))
    fresh = Segmenter(bundle, backend="onnxruntime", cache_dir=tmp_path)
    from_disk = fresh.set_vocabulary(names)
    assert fresh.text_graph_runs == 0  # disk hit
    np.testing.assert_array_equal(first.text_features_clip, from_disk.text_features_clip)
    files[0].write_bytes(b"not an npz")  # a corrupt cache entry is ignored and rewritten
    third = Segmenter(bundle, backend="onnxruntime", cache_dir=tmp_path)
    np.testing.assert_allclose(third.set_vocabulary(names).text_features, first.text_features, atol=1e-6)
    assert third.text_graph_runs > 0


def test_cache_directory_from_environment(monkeypatch, tmp_path):
    from sdk.cache import cache_root as cache_dir_from_env

    monkeypatch.setenv("ZEGFORMER_CACHE", str(tmp_path))
    assert cache_dir_from_env() == tmp_path
    monkeypatch.setenv("ZEGFORMER_CACHE", "off")
    assert cache_dir_from_env() is None
    assert cache_dir_from_env(False) is None and cache_dir_from_env(tmp_path / "x") == tmp_path / "x"


def test_threads_give_serial_results(bundle, features):
    seg = make(bundle, features, min_size=None)
    images = [block_image(seed=s) for s in range(6)]
    serial = [seg(im, return_probs=True) for im in images]
    results = {}

    def work(t):
        for i in range(len(images)):
            j = (i + t) % len(images)
            results[(t, i)] = (j, seg(images[j], return_probs=True))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 * len(images)
    for j, r in results.values():
        np.testing.assert_array_equal(r.label_map, serial[j].label_map)
        np.testing.assert_array_equal(r.probs, serial[j].probs)
