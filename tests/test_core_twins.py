"""The torch twins inside the model against the SDK's numpy core (the one definition of each rule)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def test_ensemble_twin():
    from sdk.scores import clip_probs, ensemble
    from train.model import postprocess as P

    rng = np.random.default_rng(0)
    pred = rng.normal(0, 3, (12, 7)).astype(np.float32)
    clip = rng.normal(0, 5, (12, 6)).astype(np.float32)
    for seen in (np.array([1, 0, 1, 0, 0, 1], bool), np.ones(6, bool), np.zeros(6, bool)):
        ref = P.ensemble(torch.from_numpy(pred), torch.from_numpy(clip), torch.from_numpy(seen)).numpy()
        ours = ensemble(pred, clip_probs(clip, pred), seen)
        np.testing.assert_allclose(ours, ref, rtol=2e-6, atol=1e-7)


def test_pooling_twin():
    from sdk.prompts import pool_class_embeddings
    from train.model.text import pool_class_embeddings as torch_pool

    rng = np.random.default_rng(1)
    raw = rng.normal(size=(9, 16)).astype(np.float32)
    owner = [0, 0, 1, 2, 2, 2, 1, 0, 2]
    np.testing.assert_allclose(
        pool_class_embeddings(raw, owner, 3), torch_pool(torch.from_numpy(raw), owner, 3).numpy(), atol=1e-6
    )


def test_pad_twin():
    from sdk.preprocess import pad_to_multiple
    from train.model import postprocess as P

    x = np.random.default_rng(2).normal(size=(1, 3, 37, 50)).astype(np.float32)
    np.testing.assert_array_equal(P.pad_to_multiple(torch.from_numpy(x), 32).numpy(), pad_to_multiple(x, 32))
    assert P.pad_to_multiple(torch.from_numpy(x), 1).shape == x.shape


def test_model_uses_the_core_constants():
    from sdk import constants as C
    from train.config import ModelConfig

    cfg = ModelConfig()
    assert cfg.ensemble_lambda == C.ENSEMBLE_LAMBDA and cfg.gzero_calibrate == C.GZERO_CALIBRATE
