"""Datasets: folder format, the official datasets' label decoding, synthetic data, typed errors."""

import json

import numpy as np
import pytest
from PIL import Image

from train.data import IGNORE, LabelRangeError, MissingFileError, SizeMismatchError, build_dataset
from train.data.datasets import ade847, coco_stuff, voc
from train.data.io import write_label
from train.data.synthetic import class_styles, generate


def _write_folder(root, labels, classes=("a", "b", "c"), unseen=("c",), size=(8, 10)):
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "labels").mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    if unseen:
        (root / "unseen.txt").write_text("\n".join(unseen) + "\n")
    for i, lab in enumerate(labels):
        Image.fromarray(np.full(size + (3,), 100, np.uint8)).save(root / "train" / "images" / f"{i}.png")
        Image.fromarray(np.asarray(lab, np.uint8)).save(root / "train" / "labels" / f"{i}.png")


def test_folder_dataset_decodes_and_splits(tmp_path):
    lab = np.zeros((8, 10), np.uint8)
    lab[:, 5:] = 2
    lab[0, 0] = 255
    _write_folder(tmp_path, [lab])
    ds = build_dataset(str(tmp_path), split="train")
    assert ds.class_names == ["a", "b", "c"] and ds.seen == [True, True, False]
    image, label = ds.load(0)
    assert image.shape == (8, 10, 3) and image.dtype == np.uint8
    assert label.dtype == np.int32 and label[0, 0] == IGNORE and label[0, 9] == 2
    np.testing.assert_array_equal(ds.seen_map(), [0, 1, IGNORE])


def test_label_out_of_range_is_a_typed_error(tmp_path):
    lab = np.zeros((8, 10), np.uint8)
    lab[3, 3] = 7
    _write_folder(tmp_path, [lab])
    ds = build_dataset("folder", str(tmp_path), "train")
    with pytest.raises(LabelRangeError, match=r"\[7\].*classes.txt"):
        ds.load(0)


def test_size_mismatch_is_a_typed_error(tmp_path):
    _write_folder(tmp_path, [np.zeros((8, 10))])
    Image.fromarray(np.zeros((9, 10), np.uint8)).save(tmp_path / "train" / "labels" / "0.png")
    with pytest.raises(SizeMismatchError, match="10×9"):
        build_dataset("folder", str(tmp_path), "train").load(0)


def test_missing_files_are_typed_errors(tmp_path):
    _write_folder(tmp_path, [np.zeros((8, 10)), np.zeros((8, 10))])
    (tmp_path / "train" / "labels" / "1.png").unlink()
    with pytest.raises(MissingFileError, match="no label image"):
        build_dataset("folder", str(tmp_path), "train")
    (tmp_path / "classes.txt").unlink()
    with pytest.raises(MissingFileError, match="classes.txt"):
        build_dataset("folder", str(tmp_path), "train")
    with pytest.raises(MissingFileError):
        build_dataset("coco-stuff", str(tmp_path / "nowhere"), "val")
    assert issubclass(MissingFileError, FileNotFoundError)


def test_unseen_txt_must_name_known_classes(tmp_path):
    _write_folder(tmp_path, [np.zeros((8, 10))], unseen=("zebra",))
    with pytest.raises(ValueError, match="zebra"):
        build_dataset("folder", str(tmp_path), "train")


def _pair(images, labels, name, label_array):
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    h, w = label_array.shape
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(images / f"{name}.jpg")
    Image.fromarray(label_array).save(labels / f"{name}.png")


def test_coco_stuff_raw_ids_map_to_train_ids(tmp_path):
    table = json.load(open("train/resources/cocostuff_171_classes.json"))["classes"]
    by_name = {c["name"]: c for c in table}
    raw = np.full((4, 4), 255, np.uint8)
    raw[0, 0] = by_name["person"]["id"]  # seen
    raw[0, 1] = by_name["cow"]["id"]  # unseen: a class at evaluation, ignore in training
    _pair(tmp_path / "val2017", tmp_path / "stuffthingmaps_trainval2017" / "val2017", "x", raw)
    ds = coco_stuff(tmp_path, "val")
    _, label = ds.load(0)
    assert label[0, 0] == by_name["person"]["trainId"] and label[0, 1] == by_name["cow"]["trainId"]
    assert label[1, 1] == IGNORE
    assert ds.seen_map()[label[0, 1]] == IGNORE and ds.seen_map()[label[0, 0]] >= 0
    raw[2, 2] = 11  # an id COCO-Stuff does not use
    Image.fromarray(raw).save(tmp_path / "stuffthingmaps_trainval2017" / "val2017" / "x.png")
    with pytest.raises(LabelRangeError):
        ds.load(0)


def test_voc_background_is_ignored(tmp_path):
    raw = np.array([[0, 1, 20, 255]], np.uint8)
    _pair(tmp_path / "images" / "val", tmp_path / "annotations" / "val", "2007_000001", raw)
    ds = voc(tmp_path, "val")
    _, label = ds.load(0)
    np.testing.assert_array_equal(label, [[IGNORE, 0, 19, IGNORE]])
    assert sum(ds.seen) == 15 and ds.num_classes == 20


def test_ade847_sixteen_bit_labels(tmp_path):
    raw = np.array([[0, 846, 65535, 300]], np.uint16)
    _pair(
        tmp_path / "images_detectron2" / "validation",
        tmp_path / "annotations_detectron2" / "validation",
        "ADE_val_1",
        raw,
    )
    ds = ade847(tmp_path, "val")
    _, label = ds.load(0)
    np.testing.assert_array_equal(label, [[0, 846, IGNORE, 300]])
    assert ds.num_classes == 847 and sum(ds.seen) == 572


def test_write_label_sixteen_bit_round_trip(tmp_path):
    lab = np.array([[0, 300, -1]])
    write_label(tmp_path / "l.png", lab, num_classes=400)
    arr = np.asarray(Image.open(tmp_path / "l.png"))
    assert arr.dtype == np.uint16 and arr.tolist() == [[0, 300, 65535]]


def test_synthetic_is_deterministic_and_well_formed(tmp_path):
    a = generate(tmp_path / "a", num_classes=5, num_unseen=2, num_train=3, num_val=2, size=48, seed=3)
    b = generate(tmp_path / "b", num_classes=5, num_unseen=2, num_train=3, num_val=2, size=48, seed=3)
    for rel in ("classes.txt", "unseen.txt", "train/images/00002.png", "val/labels/00001.png"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    ds = build_dataset("synthetic", str(a), "val")
    assert len(ds) == 2 and ds.seen == [True, True, True, False, False]
    image, label = ds.load(1)
    assert image.shape[:2] == label.shape and label.min() >= 0 and label.max() < 5


def test_synthetic_any_number_of_classes():
    names = [s.name for s in class_styles(300)]
    assert len(set(names)) == 300
