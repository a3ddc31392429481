"""The PyTorch model against the official ZegFormer fixture (``shared/reference``).

Weights come from the fixture's recipe, written as an official checkpoint and imported with
``train.convert_official``; tolerances are those the reference README suggests.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from train.checkpoint import load_model
from train.classes import prompt_templates
from train.inference import segment
from train.model import postprocess as P
from train.model.text import tokenize

SEEN = [True] * 156 + [False] * 15


@pytest.fixture(scope="module")
def model(fixture_checkpoint):
    m, payload = load_model(fixture_checkpoint)
    assert payload["classes"]["seen"] == SEEN
    return m


@pytest.fixture(scope="module")
def main_run(model, fixture_arrays):
    f = fixture_arrays
    return segment(
        model,
        f["image"],
        torch.from_numpy(f["text_features_test"]),
        torch.from_numpy(f["text_features_test_clip"]),
        SEEN,
    )


def close(actual: torch.Tensor, expected: np.ndarray, atol: float) -> float:
    a = actual.detach().cpu().numpy().reshape(expected.shape)
    err = float(np.abs(a - expected.astype(np.float32)).max())
    assert err <= atol, f"max abs error {err:.3g} > {atol}"
    return err


def test_recipe_regenerates_checksums(reference_dir):
    from tests.recipe import official_state_dict

    sums = json.loads((reference_dir / "recipe_checksums.json").read_text())
    sd = official_state_dict(reference_dir)
    assert set(sd) == set(sums)
    for name, s in sums.items():
        t = sd[name].double()
        assert abs(float(t.sum()) - s["sum"]) <= 1e-9 * max(1.0, s["abs_sum"]), name
        np.testing.assert_array_equal(t.flatten()[:4].numpy(), np.asarray(s["first"]), err_msg=name)


def test_proposals(main_run, fixture_arrays):
    f = fixture_arrays
    close(main_run["pred_masks"], f["pred_masks"], 1e-3)
    close(main_run["pred_logits"], f["pred_logits"], 1e-3)
    close(main_run["segment_embeddings"], f["segment_embeddings"], 1e-3)
    close(main_run["decoder_output"], f["decoder_output_last"], 1e-3)


def test_clip_branch(main_run, fixture_arrays):
    f = fixture_arrays
    np.testing.assert_array_equal(main_run["boxes"][0].numpy(), f["clip_boxes"])
    crops = main_run["crops"][0, :4].numpy()
    ref = f["clip_input_crops_q0_3_f16"].astype(np.float32)
    assert np.mean(np.abs(crops - ref) <= 1e-2) >= 0.999
    close(main_run["clip_image_features"], f["clip_image_features"], 1e-3)
    close(main_run["clip_logits"], f["clip_logits_per_image"], 5e-2)
    close(main_run["mask_cls"], f["mask_cls_ensembled"], 1e-4)


def test_semantic_map(main_run, fixture_arrays):
    f = fixture_arrays
    sem = main_run["sem_seg"]
    close(sem, f["sem_seg_f16"], 2e-3)
    y, x = f["sem_seg_f32_window_origin"]
    close(sem[:, y : y + 16, x : x + 16], f["sem_seg_f32_window"], 1e-4)
    labels = sem.argmax(0).numpy()
    ref = f["sem_seg_argmax"]
    top2 = np.sort(f["sem_seg_f16"].astype(np.float32), axis=0)[-2:]
    decisive = (top2[1] - top2[0]) > 1e-3
    assert np.array_equal(labels[decisive], ref[decisive])
    assert np.mean(labels == ref) >= 0.999


def test_designed_masks(model, fixture_arrays, reference_dir):
    """The designed-mask fixture exercises boxes: empty, full, thin, in the padding, tiny."""
    d = np.load(reference_dir / "reference_designed_masks.npz")
    image = torch.from_numpy(fixture_arrays["image"].transpose(2, 0, 1)).float()[None]
    clip_image = P.pad_to_multiple(model.clip_normalize(image), 32)
    up = P.upsample_masks(torch.from_numpy(d["designed_pred_masks"]), clip_image.shape[-2:])
    crops, boxes = P.masked_crops(clip_image, up, 224)
    np.testing.assert_array_equal(boxes[0].numpy(), d["clip_boxes"])
    ref = np.concatenate([d["clip_input_crops_q0_3_f16"], d["clip_input_crops_q4_7_f16"]]).astype(np.float32)
    assert np.mean(np.abs(crops[0, :8].numpy() - ref) <= 1e-2) >= 0.999
    with torch.no_grad():
        feats = model.encode_crops(crops[0])
        logits = model.clip_logits(
            feats,
            torch.from_numpy(
                d["text_features_test_clip"]
                if "text_features_test_clip" in d.files
                else fixture_arrays["text_features_test_clip"]
            ),
        )
    close(feats, d["clip_image_features"], 1e-3)
    close(logits, d["clip_logits_per_image"], 5e-2)
    mask_cls = P.ensemble(torch.from_numpy(d["pred_logits"][0]), logits, torch.tensor(SEEN))
    close(mask_cls, d["mask_cls_ensembled"], 1e-4)
    sem = P.semantic_scores(mask_cls, up[0], (240, 320), (240, 320), torch.tensor(SEEN), 0.1)
    assert np.mean(sem.argmax(0).numpy() == d["sem_seg_argmax"]) >= 0.999


def _names(reference_dir):
    return json.loads((reference_dir / "cocostuff_all_classnames.json").read_text())


def test_tokens(reference_dir, fixture_arrays):
    names = _names(reference_dir)
    single = tokenize([prompt_templates("single")[0].format(n) for n in names])
    np.testing.assert_array_equal(single.numpy(), fixture_arrays["text_tokens_test_single"])
    templates = prompt_templates("imagenet_select_clip")
    clip = tokenize([t.format(n) for n in names for t in templates])
    np.testing.assert_array_equal(clip.numpy().reshape(171, 32, 77), fixture_arrays["text_tokens_test_clip"])


@pytest.mark.parametrize("subset", [slice(0, 4), slice(160, 163)])
def test_text_features_subset(model, reference_dir, fixture_arrays, subset):
    names = _names(reference_dir)[subset]
    single = model.text_embeddings(names, prompt_templates("single"))
    close(single, fixture_arrays["text_features_test"][subset], 1e-5)
    clip = model.text_embeddings(names, prompt_templates("imagenet_select_clip"))
    close(clip, fixture_arrays["text_features_test_clip"][subset], 1e-5)


@pytest.mark.slow
def test_text_features_full(model, reference_dir, fixture_arrays):
    names = _names(reference_dir)
    f = fixture_arrays
    single = model.text_embeddings(names, prompt_templates("single"))
    close(single, f["text_features_test"], 1e-5)
    close(single[:156], f["text_features"], 1e-5)  # the seen classes' set is the same prompts
    clip = model.text_embeddings(names, prompt_templates("imagenet_select_clip"), progress=True)
    close(clip, f["text_features_test_clip"], 1e-5)
    close(clip[:156], f["text_features_clip"], 1e-5)
