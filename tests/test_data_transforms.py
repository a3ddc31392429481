"""Augmentation (the official recipe's semantics), targets, and the deterministic step plan."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from train.data import IGNORE
from train.data.loader import StepPlan
from train.data.transforms import (
    PAD_VALUE,
    AugmentConfig,
    augment,
    class_masks,
    color_aug_ssd,
    pad_to,
    random_crop_box,
    resize_label,
    shortest_edge_shape,
)


def test_shortest_edge_shape_as_detectron2():
    assert shortest_edge_shape(480, 640, 640, 2560) == (640, 853)
    assert shortest_edge_shape(640, 480, 320, 2560) == (427, 320)
    assert shortest_edge_shape(100, 1000, 640, 2560) == (256, 2560)  # longest side capped


def test_resize_label_is_torch_nearest():
    lab = np.random.default_rng(0).integers(0, 50, (37, 53)).astype(np.int32)
    for shape in ((74, 106), (20, 31), (37, 53), (51, 80)):
        ref = F.interpolate(torch.from_numpy(lab)[None, None].float(), size=shape, mode="nearest")[0, 0]
        np.testing.assert_array_equal(resize_label(lab, shape), ref.numpy().astype(np.int32))


def test_crop_category_area_constraint_retries():
    label = np.zeros((100, 100), np.int32)
    label[:, 90:] = 1  # class 1 only in a thin strip
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(50):
        y0, x0, ch, cw = random_crop_box(label, 20, 0.75, rng)
        crop = label[y0 : y0 + ch, x0 : x0 + cw]
        hits += len(np.unique(crop)) > 1
    assert hits > 15  # without the constraint ~ 29/81 ≈ 36 % of crops; retries push it up
    y0, x0, ch, cw = random_crop_box(label[:10, :15], 20, 1.0, rng)
    assert (y0, x0, ch, cw) == (0, 0, 10, 15)  # crop larger than the image → whole image


def test_color_aug_is_deterministic_and_keeps_shape():
    img = np.random.default_rng(1).integers(0, 256, (16, 24, 3)).astype(np.uint8)
    a = color_aug_ssd(img, np.random.default_rng(5))
    b = color_aug_ssd(img, np.random.default_rng(5))
    assert a.dtype == np.uint8 and a.shape == img.shape
    np.testing.assert_array_equal(a, b)
    changed = [not np.array_equal(color_aug_ssd(img, np.random.default_rng(s)), img) for s in range(20)]
    assert sum(changed) >= 15  # each of the 4 steps fires with p = 0.5: unchanged with p = 1/16


def test_pad_to_uses_128_and_ignore():
    img, lab = pad_to(np.zeros((3, 4, 3), np.uint8), np.zeros((3, 4), np.int32), 6)
    assert img.shape == (6, 6, 3) and img[5, 5, 0] == PAD_VALUE and lab[5, 5] == IGNORE and lab[0, 0] == 0


def test_augment_output_and_label_alignment():
    rng = np.random.default_rng(0)
    label = np.zeros((90, 120), np.int32)
    label[:, 60:] = 1
    image = np.zeros((90, 120, 3), np.uint8)
    image[:, 60:] = 255  # class 1 is white, class 0 black
    cfg = AugmentConfig(crop_size=64, scales=(0.5, 1.0, 1.5), max_size=512, color_aug=False)
    for _ in range(10):
        img, lab = augment(image, label, cfg, rng)
        assert img.shape == (64, 64, 3) and lab.shape == (64, 64)
        valid = lab != IGNORE
        # pixels well inside each region keep their colour (bilinear blur only at the boundary)
        assert (img[valid & (lab == 1)][:, 0] > 100).mean() > 0.9
        assert (img[valid & (lab == 0)][:, 0] < 155).mean() > 0.9


def test_class_masks_only_seen_classes():
    label = np.array([[0, 1, 2], [2, IGNORE, 1]])
    labels, masks = class_masks(label, [0, IGNORE, 1])  # class 1 unseen; class 2 → training index 1
    assert labels.tolist() == [0, 1]
    np.testing.assert_array_equal(masks[0], label == 0)
    np.testing.assert_array_equal(masks[1], label == 2)


def test_step_plan_partitions_global_batch():
    plan1 = StepPlan(10, 8, world=1, accumulate=1, seed=0)
    plan2 = StepPlan(10, 8, world=2, accumulate=2, seed=0)
    for step in (0, 1, 7):
        whole = plan1.global_items(step)
        parts = [item for r in range(2) for micro in plan2.rank_items(step, r) for item in micro]
        assert sorted(whole) == sorted(parts) and len(whole) == 8
        assert all(len(m) == 2 for r in range(2) for m in plan2.rank_items(step, r))
    # every dataset item once per epoch, in a seed-dependent order
    epoch = [idx for s in range(5) for _, idx in StepPlan(40, 8, 1, 1, 3).global_items(s)]
    assert sorted(epoch) == list(range(40))
    with pytest.raises(ValueError, match="divisible"):
        StepPlan(10, 6, world=4, accumulate=1, seed=0)


def test_loader_workers_give_the_same_batches(tmp_path):
    from train.data import build_dataset
    from train.data.loader import StepDataset, step_loader
    from train.data.synthetic import generate

    ds = build_dataset("folder", str(generate(tmp_path / "d", 4, 1, 6, 1, size=48, seed=0)), "train")
    plan = StepPlan(len(ds), 4, world=1, accumulate=2, seed=0)
    sd = StepDataset(ds, plan, 0, AugmentConfig(crop_size=32, scales=(1.0,)), ds.seen_map(), max_iter=5)
    serial = list(step_loader(sd, 2, num_workers=0))
    parallel = list(step_loader(sd, 2, num_workers=2))
    assert len(serial) == len(parallel) == 3 and len(serial[0]) == 2  # steps 2..4, 2 micro-batches
    for a, b in zip(serial, parallel):
        for ma, mb in zip(a, b):
            assert torch.equal(ma["images"], mb["images"])
            assert all(torch.equal(ta["masks"], tb["masks"]) for ta, tb in zip(ma["targets"], mb["targets"]))
