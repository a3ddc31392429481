"""The SDK on the full R101 + ViT-B/16 model against the official fixture (``shared/reference``).

Fixture weights → official checkpoint → ``train.convert_official`` → ``python -m export`` → bundle;
then ``Segmenter`` (ONNX Runtime, and the torch backend) must reproduce the official semantic map.

Embedding the 171 COCO-Stuff names at run time means 171 × 33 prompts through the 12-layer CLIP
text encoder: several minutes on 2 CPU cores (see ``test_runtime_text_path_subset``, which times a
10-class subset and logs the extrapolation). So the full-vocabulary comparison injects the fixture's
stored text features through the public ``set_vocabulary(names, text_features=...,
text_features_clip=...)``, and the run-time text path is checked on a 10-class subset against the
fixture's ``text_features_test`` / ``text_features_test_clip`` rows.
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pytest

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)
SUBSET = 10


@pytest.fixture(scope="module")
def names(reference_dir):
    return json.loads((reference_dir / "cocostuff_all_classnames.json").read_text())


@pytest.fixture(scope="module")
def full_bundle(fixture_bundle):
    return fixture_bundle


def run(bundle, names, arrays, backend):
    from sdk import Segmenter

    seg = Segmenter(bundle, backend=backend, min_size=None, cache_dir=False)
    seg.set_vocabulary(
        names, text_features=arrays["text_features_test"], text_features_clip=arrays["text_features_test_clip"]
    )
    assert seg.vocabulary.seen.tolist() == [True] * 156 + [False] * 15
    return seg(arrays["image"], return_probs=True)


def check_against_fixture(result, arrays):
    ref = arrays["sem_seg_f16"].astype(np.float32)
    assert result.probs.shape == ref.shape
    err = float(np.abs(result.probs - ref).max())
    agree = float((result.label_map == arrays["sem_seg_argmax"]).mean())
    y, x = arrays["sem_seg_f32_window_origin"]
    window = float(np.abs(result.probs[:, y : y + 16, x : x + 16] - arrays["sem_seg_f32_window"]).max())
    log.warning(
        "%s: probs max |err| %.2e (window %.2e), label agreement %.5f, timings %s",
        result.info["backend"],
        err,
        window,
        agree,
        {k: round(v) for k, v in result.timings.items()},
    )
    assert err <= 2e-3
    assert window <= 1e-4
    assert agree >= 0.999


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_reproduces_official_semantic_map(full_bundle, names, fixture_arrays, backend):
    result = run(full_bundle, names, fixture_arrays, backend)
    check_against_fixture(result, fixture_arrays)
    assert result.info["clip_queries"] == 100


def test_runtime_text_path_subset(full_bundle, names, fixture_arrays):
    from sdk import Segmenter

    seg = Segmenter(full_bundle, backend="onnxruntime", min_size=None, cache_dir=False, reuse_builtin=False)
    t0 = time.perf_counter()
    vocab = seg.set_vocabulary(names[:SUBSET])
    seconds = time.perf_counter() - t0
    log.warning(
        "run-time text path: %d classes x 33 prompts in %.1f s (171 classes: ~%.0f s)",
        SUBSET,
        seconds,
        seconds * 171 / SUBSET,
    )
    np.testing.assert_allclose(vocab.text_features, fixture_arrays["text_features_test"][:SUBSET], atol=1e-5)
    np.testing.assert_allclose(vocab.text_features_clip, fixture_arrays["text_features_test_clip"][:SUBSET], atol=1e-5)
