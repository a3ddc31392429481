"""The model definition: shapes, dynamic sizes, official quirks, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from train.config import ModelConfig, preset
from train.inference import segment
from train.model import build_model
from train.model import postprocess as P
from train.model.text import expand_prompts


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model(preset("tiny")).eval()


@pytest.fixture(scope="module")
def vocab(tiny):
    names = ["cat", "dog, puppy", "grass"]
    return (names, tiny.text_embeddings(names, ["a photo of a {}."]), tiny.text_embeddings(names, ["a {}.", "the {}."]))


def test_output_shapes_follow_input_size(tiny):
    for h, w in [(64, 64), (96, 160)]:
        out = tiny.proposals(tiny.normalize(torch.rand(2, 3, h, w) * 255))
        assert out["pred_masks"].shape == (2, 10, h // 4, w // 4)
        emb = out["segment_embeddings"]
        torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2, 10))


def test_train_forward_has_every_decoder_layer(tiny, vocab):
    out = tiny.forward_train(torch.rand(1, 3, 64, 64) * 255, vocab[1])
    assert out["pred_logits"].shape == (2, 1, 10, 4)  # 2 layers, K=3 + background
    assert out["pred_masks"].shape == (2, 1, 10, 16, 16)


def test_bmm_masks_equal_official_einsum(tiny):
    emb, feats = torch.randn(2, 10, 32), torch.randn(2, 32, 8, 12)
    torch.testing.assert_close(
        tiny.predictor.masks_from_embeddings(emb, feats), torch.einsum("bqc,bchw->bqhw", emb, feats)
    )


def test_synonyms_are_template_major():
    prompts, owner = expand_prompts(["a, b", "c"], ["x {}", "y {}"])
    assert prompts == ["x a", "x b", "y a", "y b", "x c", "y c"]
    assert owner == [0, 0, 0, 0, 1, 1]


def test_box_quirks():
    m = torch.zeros(4, 8, 10, dtype=torch.bool)
    m[1] = True  # full: inclusive max (9, 7)
    m[2, 3, 2:6] = True  # one row: zero area → exclusive fallback
    m[3, 2:5, 4:7] = True
    boxes = P.mask_boxes(m).tolist()
    assert boxes == [[0, 0, 10, 8], [0, 0, 9, 7], [0, 0, 10, 8], [4, 2, 6, 4]]


def test_segment_runs_and_calibrates(tiny, vocab):
    names, text, text_clip = vocab
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    out = segment(tiny, image, text, text_clip, [True, False, True])
    assert out["sem_seg"].shape == (3, 50, 70)
    assert out["crops"].shape == (1, 10, 3, 32, 32)
    # without the CLIP branch the seen flags change nothing but the calibration
    calibrated = segment(tiny, image, text, None, [True, False, True], mode="proposal")["sem_seg"]
    raw = segment(tiny, image, text, None, [False, False, False], mode="proposal")["sem_seg"]
    torch.testing.assert_close(calibrated, raw - torch.tensor([0.1, 0.0, 0.1]).view(3, 1, 1))


@pytest.mark.parametrize(
    "image, error",
    [
        (np.zeros((8, 8, 3), dtype=np.float32), ValueError),
        (np.zeros((8, 8), dtype=np.uint8), ValueError),
        ([[0]], TypeError),
    ],
)
def test_bad_images(tiny, vocab, image, error):
    with pytest.raises(error):
        segment(tiny, image, vocab[1], vocab[2], [True] * 3)


def test_empty_vocabulary(tiny):
    with pytest.raises(ValueError, match="empty"):
        tiny.text_embeddings([], ["a {}"])
    with pytest.raises(ValueError, match="empty"):
        tiny.text_embeddings(["cat", " "], ["a {}"])
    with pytest.raises(ValueError, match="non-empty"):
        segment(tiny, np.zeros((8, 8, 3), np.uint8), torch.zeros(0, 32), None, [])


def test_config_round_trip_and_unknown_keys():
    cfg = preset("r50-vit16")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"queries": 3})
    with pytest.raises(ValueError, match="unknown model preset"):
        preset("r152")
