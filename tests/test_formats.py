"""COCO RLE, palette PNGs and supervision: every format decodes back to the label map exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sdk.formats import (
    coco_dataset,
    load_label_png,
    mask_bbox,
    rle_encode,
    save_label_png,
    segments_to_rle,
    to_detections,
)
from sdk.result import SegmentationResult, build_segments


def decode_rle_string(rle) -> np.ndarray:
    """An independent decoder, written from the COCO format description (not from sdk.formats).

    Each count is 5-bit groups, least significant first, char = group + 48 with bit 0x20 = "more";
    the last group's bit 0x10 is the sign; from the 4th count on, the value is a delta to the
    count two places back. Runs alternate 0/1 starting with 0, over the column-major flattening.
    """
    h, w = rle["size"]
    s = rle["counts"].encode("ascii")
    counts, p = [], 0
    while p < len(s):
        value, shift = 0, 0
        while True:
            c = s[p] - 48
            p += 1
            value |= (c & 0x1F) << shift
            shift += 5
            if not c & 0x20:
                if c & 0x10:
                    value -= 1 << shift
                break
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    flat = np.zeros(h * w, bool)
    pos = 0
    for i, n in enumerate(counts):
        if i % 2:
            flat[pos : pos + n] = True
        pos += n
    assert pos == h * w, f"runs cover {pos} pixels, the mask has {h * w}"
    return flat.reshape((w, h)).T


def label_maps():
    rng = np.random.default_rng(0)
    yield np.zeros((7, 5), np.int32)  # one class everywhere
    yield (np.indices((9, 13)).sum(0) % 2).astype(np.int32)  # checkerboard: runs of 1
    yield rng.integers(0, 4, (1, 40)).astype(np.int32)  # one row
    yield rng.integers(0, 4, (40, 1)).astype(np.int32)  # one column
    blocks = rng.integers(0, 12, (6, 8))
    yield blocks[(np.arange(300) * 6) // 300][:, (np.arange(211) * 8) // 211].astype(np.int32)  # long runs
    yield rng.integers(0, 300, (64, 48)).astype(np.int32)  # many classes, short runs


def make_result(label_map: np.ndarray, k: int) -> SegmentationResult:
    names = tuple(f"class {i}" for i in range(k))
    scores = np.linspace(0.2, 0.9, k).astype(np.float32)
    return SegmentationResult(label_map, names, build_segments(label_map, names, np.zeros(k, bool), scores))


@pytest.mark.parametrize("index", range(6))
def test_rle_decodes_back_to_each_mask(index):
    label_map = list(label_maps())[index]
    k = int(label_map.max()) + 2  # one class absent
    result = make_result(label_map, k)
    records = segments_to_rle(result)
    rebuilt = np.full(label_map.shape, -1, np.int32)
    for r in records:
        mask = decode_rle_string(r["rle"])
        assert mask.sum() == r["area"]
        assert not (rebuilt[mask] >= 0).any(), "segments overlap"
        rebuilt[mask] = r["index"]
        x, y, w, h = r["bbox"]
        ys, xs = np.nonzero(mask)
        assert (x, y, x + w - 1, y + h - 1) == (xs.min(), ys.min(), xs.max(), ys.max())
    assert np.array_equal(rebuilt, label_map)
    assert {r["index"] for r in records} == set(np.unique(label_map).tolist())


def test_rle_matches_pycocotools():
    mask_api = pytest.importorskip("pycocotools.mask", reason="pip install 'zegformer-sdk[coco]'")
    for label_map in label_maps():
        for k in np.unique(label_map)[:20]:
            mask = label_map == k
            ours = rle_encode(mask)
            theirs = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
            assert ours["counts"] == theirs["counts"].decode("ascii")
            assert ours["size"] == list(theirs["size"])
            assert np.array_equal(mask_api.decode({"size": ours["size"], "counts": ours["counts"].encode()}), mask)
            assert int(mask_api.area(theirs)) == int(mask.sum())


def test_coco_dataset_loads_in_pycocotools(tmp_path):
    coco_module = pytest.importorskip("pycocotools.coco", reason="pip install 'zegformer-sdk[coco]'")
    maps = list(label_maps())[:5]
    images = [
        {
            "file_name": f"im{i}.png",
            "height": m.shape[0],
            "width": m.shape[1],
            "segments": segments_to_rle(make_result(m, 13)),
        }
        for i, m in enumerate(maps)
    ]
    data = coco_dataset(images, [f"class {i}" for i in range(13)])
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(data))
    coco = coco_module.COCO(str(path))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == [f"class {i}" for i in range(13)]
    for image_id, label_map in enumerate(maps, start=1):
        rebuilt = np.full(label_map.shape, -1)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
            mask = coco.annToMask(ann).astype(bool)
            assert ann["area"] == mask.sum() and 0.2 <= ann["score"] <= 0.9
            rebuilt[mask] = ann["category_id"] - 1
        assert np.array_equal(rebuilt, label_map)
    ids = [a["id"] for a in data["annotations"]]
    assert ids == list(range(1, len(ids) + 1))
    # the results format: loadRes accepts the annotations as detections with scores
    results = coco.loadRes(
        [{k: a[k] for k in ("image_id", "category_id", "segmentation", "score")} for a in data["annotations"]]
    )
    assert len(results.getAnnIds()) == len(ids)


@pytest.mark.parametrize("k", [5, 300])
def test_label_png_round_trip(tmp_path, k):
    from PIL import Image

    rng = np.random.default_rng(k)
    label_map = rng.integers(0, k, (33, 47)).astype(np.int32)
    names = [f"näme {i}" for i in range(k)]
    save_label_png(tmp_path / "a.png", label_map, names)
    labels, read_names = load_label_png(tmp_path / "a.png")
    assert np.array_equal(labels, label_map) and read_names == names
    with Image.open(tmp_path / "a.png") as im:
        assert im.mode == ("P" if k <= 256 else "I;16")
        if k <= 256:  # the palette is the SDK's colours, so a viewer shows the overlay colours
            from sdk.visualize import palette

            rgb = np.asarray(im.convert("RGB"))
            assert np.array_equal(rgb, palette(k)[label_map])
    with pytest.raises(ValueError):
        save_label_png(tmp_path / "b.png", label_map, names[:2])


def test_supervision_detections():
    pytest.importorskip("supervision", reason="pip install 'zegformer-sdk[coco]'")
    label_map = list(label_maps())[4]
    result = make_result(label_map, 13)
    det = to_detections(result)
    assert len(det) == len(result.segments)
    rebuilt = np.full(label_map.shape, -1)
    for mask, class_id, conf, name, box in zip(
        det.mask, det.class_id, det.confidence, det.data["class_name"], det.xyxy
    ):
        rebuilt[mask] = class_id
        assert name == f"class {class_id}" and conf == pytest.approx(result.segment(name).score)
        x, y, w, h = mask_bbox(mask)
        assert box.tolist() == [x, y, x + w, y + h]
    assert np.array_equal(rebuilt, label_map)
