"""Metric code against hand-computed confusion matrices (official semantics and the NaN-safe variant)."""

import math

import numpy as np
import pytest

from train.metrics import all_metrics, confusion_matrix, nan_safe_metrics, official_metrics, takeovers


def test_confusion_matrix_by_hand_with_ignore():
    # K = 3; ground truth has an ignore pixel (255) and a -1 pixel; matrix is [pred, gt]
    gt = np.array([[0, 0, 1, 255], [2, 2, -1, 1]])
    pred = np.array([[0, 1, 1, 2], [2, 0, 0, 1]])
    conf = confusion_matrix(pred, gt, 3, ignore_value=255)
    expected = np.zeros((4, 4), np.int64)
    expected[0, 0] = 1  # gt 0 → 0
    expected[1, 0] = 1  # gt 0 → 1
    expected[1, 1] = 2  # gt 1 → 1 (twice)
    expected[2, 2] = 1
    expected[0, 2] = 1
    expected[2, 3] = 1  # ignore column K
    expected[0, 3] = 1
    np.testing.assert_array_equal(conf, expected)


def test_official_metrics_hand_computed():
    # K = 4, classes 0,1 seen; 2,3 unseen. Class 3 absent from gt but predicted → counts in mIoU's denominator.
    conf = np.zeros((5, 5))
    conf[0, 0], conf[1, 0] = 8, 2  # class 0: gt 10, tp 8
    conf[1, 1], conf[0, 1] = 5, 5  # class 1: gt 10, tp 5
    conf[2, 2], conf[3, 2] = 3, 1  # class 2: gt 4, tp 3, predicted as 3 once
    conf[0, 4], conf[2, 4] = 100, 100  # ignore column never counts
    m = official_metrics(conf, [True, True, False, False])
    # pos_pred (rows, without ignore): [13, 7, 3, 1]; pos_gt: [10, 10, 4, 0]
    iou0, iou1, iou2 = 8 / (10 + 13 - 8), 5 / (10 + 7 - 5), 3 / (4 + 3 - 3)
    assert m["mIoU"] == pytest.approx((iou0 + iou1 + iou2) / 4)  # 4 classes with gt+pred > 0
    assert m["seen_mIoU"] == pytest.approx((iou0 + iou1) / 2)
    assert math.isnan(m["unseen_mIoU"])  # class 3 absent → NaN (official quirk)
    assert math.isnan(m["hIoU"])
    assert m["pACC"] == pytest.approx(16 / 24)
    assert m["mACC"] == pytest.approx((0.8 + 0.5 + 0.75) / 3)
    assert m["fwIoU"] == pytest.approx((10 * iou0 + 10 * iou1 + 4 * iou2) / 24)
    safe = nan_safe_metrics(conf, [True, True, False, False])
    assert safe["mIoU"] == pytest.approx((iou0 + iou1 + iou2) / 4)
    assert safe["unseen_mIoU"] == pytest.approx((iou2 + 0.0) / 2)  # predicted-but-absent counts as 0
    assert safe["hIoU"] == pytest.approx(
        2 * safe["seen_mIoU"] * safe["unseen_mIoU"] / (safe["seen_mIoU"] + safe["unseen_mIoU"])
    )


def test_absent_and_never_predicted_class_is_skipped_by_nan_safe_only():
    conf = np.zeros((4, 4))
    conf[0, 0], conf[1, 1] = 10, 10  # class 2 (unseen) neither in gt nor predicted
    off = official_metrics(conf, [True, True, False])
    assert off["mIoU"] == 1.0 and off["seen_mIoU"] == 1.0 and math.isnan(off["unseen_mIoU"])
    safe = nan_safe_metrics(conf, [True, True, False])
    assert safe["mIoU"] == 1.0 and math.isnan(safe["unseen_mIoU"])


def test_hiou_and_perfect_prediction():
    gt = np.array([0, 1, 2, 2, 255])
    pred = np.array([0, 1, 2, 2, 0])
    conf = confusion_matrix(pred, gt, 3)
    m = official_metrics(conf, [True, False, True])
    assert m["seen_mIoU"] == 1.0 and m["unseen_mIoU"] == 1.0 and m["hIoU"] == 1.0 and m["pACC"] == 1.0
    conf[0, 1] += 1  # one unseen pixel predicted as class 0
    m = official_metrics(conf, [True, False, True])
    s, u = (1 / 2 + 1) / 2, 1 / 2  # class 0: tp 1 / (gt 1 + pred 2 - 1); class 1: 1 / (2 + 1 - 1)
    assert m["seen_mIoU"] == pytest.approx(s) and m["unseen_mIoU"] == pytest.approx(u)
    assert m["hIoU"] == pytest.approx(2 * s * u / (s + u))


def test_matches_reference_formula_on_random_data():
    rng = np.random.default_rng(0)
    k = 6
    gt = rng.integers(0, k, 5000)
    gt[rng.random(5000) < 0.1] = 255
    pred = np.where(rng.random(5000) < 0.6, np.clip(gt, 0, k - 1), rng.integers(0, k, 5000))
    conf = confusion_matrix(pred, gt, k)
    # the official evaluator's own arithmetic, written out
    c = conf.astype(float)
    tp, pos_gt, pos_pred = c.diagonal()[:-1], c[:-1, :-1].sum(0), c[:-1, :-1].sum(1)
    iou = tp / (pos_gt + pos_pred - tp)
    m = official_metrics(conf, [True] * 4 + [False] * 2)
    assert m["mIoU"] == pytest.approx(iou.mean())
    assert m["seen_mIoU"] == pytest.approx(iou[:4].mean()) and m["unseen_mIoU"] == pytest.approx(iou[4:].mean())


def test_all_metrics_json_ready():
    conf = confusion_matrix(np.array([0, 0]), np.array([0, 255]), 2)
    out = all_metrics(conf, [True, False], ["a", "b"])
    assert out["official"]["unseen_mIoU"] is None  # NaN → None in JSON
    assert out["per_class"][1]["iou"] is None and out["per_class"][0]["iou"] == 1.0


def test_bad_predictions_rejected():
    with pytest.raises(ValueError):
        confusion_matrix(np.array([3]), np.array([0]), 3)


def test_takeovers_by_hand():
    # [pred, gt]; "d" takes 90 % of a and 40 % of b; c loses 25 % to a (under the 30 % line);
    # the ignore column K and ignored pixels never count
    names = ["a", "b", "c", "d"]
    conf = np.zeros((5, 5), np.int64)
    conf[3, 0], conf[0, 0] = 9, 1
    conf[3, 1], conf[1, 1] = 4, 6
    conf[0, 2], conf[2, 2] = 1, 3
    conf[3, 3] = 5
    conf[1, 4] = 100
    got = takeovers(conf, names, share=0.3)
    assert got == [
        {"truth": "a", "predicted": "d", "share": pytest.approx(0.9)},
        {"truth": "b", "predicted": "d", "share": pytest.approx(0.4)},
    ]
    assert [t["truth"] for t in takeovers(conf, names, share=0.25)] == ["a", "b", "c"]
    assert takeovers(conf, names, share=0.3, top=1)[0]["truth"] == "a"
    assert takeovers(np.eye(5, dtype=np.int64), names) == []  # perfect prediction: nothing taken
