"""Hostile files on the surfaces added after the first hardening round: label PNGs, image files whose
values break the documented ranges, and the one image-decode path (CLI and demo).

Runs without torch on the checked-in tiny bundle; each case is a typed one-line error naming the
file, or the correct result.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from tests.hostile_bytes import GOOD, bad_images, good_images
from tests.sdk_helpers import tiny_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


# ---------------------------------------------------------------------------------------- label PNGs
def test_label_png_refuses_more_classes_than_16_bits(tmp_path):
    from sdk import ImageError
    from sdk.formats import load_label_png, save_label_png

    names = [f"c{i}" for i in range(70_000)]
    labels = np.array([[0, 65_535], [65_536, 69_999]], np.int32)
    with pytest.raises(ImageError, match="65536 classes"):
        save_label_png(tmp_path / "x.png", labels, names)
    assert not (tmp_path / "x.png").exists()
    save_label_png(tmp_path / "ok.png", np.array([[0, 65_535]], np.int32), names[:65_536])  # the largest that fits
    back, back_names = load_label_png(tmp_path / "ok.png")
    assert back.tolist() == [[0, 65_535]] and len(back_names) == 65_536


@pytest.mark.parametrize(
    "labels,names",
    [
        (np.array([[0, 3]]), ["a", "b"]),
        (np.array([[-1, 0]]), ["a"]),
        (np.zeros((2, 2), np.float32), ["a"]),
        (np.zeros((2, 2, 3), np.int32), ["a"]),
        (np.zeros((0, 4), np.int32), ["a"]),
        (np.zeros((2, 2), bool), ["a"]),
        (np.zeros((2, 2), np.int32), [1, 2]),
        (np.zeros((2, 2), np.int32), "ab"),
        (np.zeros((2, 2), np.int32), []),
    ],
    ids=["index_too_big", "negative", "float", "3d", "empty", "bool", "names_not_str", "names_str", "no_names"],
)
def test_label_png_refuses_what_it_cannot_represent(tmp_path, labels, names):
    from sdk import ImageError
    from sdk.formats import save_label_png

    with pytest.raises(ImageError):
        save_label_png(tmp_path / "x.png", labels, names)
    assert not (tmp_path / "x.png").exists()


def _png_with_chunk(path: Path, text: str, labels=None) -> Path:
    from sdk.formats import PNG_CLASSES_KEY

    meta = PngImagePlugin.PngInfo()
    meta.add_itxt(PNG_CLASSES_KEY, text)
    Image.fromarray(np.zeros((4, 4), np.uint8) if labels is None else labels).save(path, pnginfo=meta)
    return path


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "{",
        '{"a": 1}',
        "3",
        '"cat"',
        "[1, 2]",
        '["a", null]',
        "null",
        "[" * 5000 + "]" * 5000,
        '["only one"]',
    ],
    ids=["text", "truncated", "object", "number", "string", "ints", "null_item", "null", "deep", "too_few_names"],
)
def test_label_png_with_a_bad_class_chunk_is_an_image_error(tmp_path, text):
    from sdk import ImageError
    from sdk.formats import load_label_png

    path = _png_with_chunk(tmp_path / "x.png", text, labels=np.array([[0, 1], [1, 0]], np.uint8))
    with pytest.raises(ImageError, match="x.png"):
        load_label_png(path)


@pytest.mark.parametrize("name", ["empty", "text", "png_cut_0.5", "bomb_png_1bit", "png_declares_100k"])
def test_unreadable_label_pngs_are_image_errors(tmp_path, name):
    from sdk import ImageError
    from sdk.formats import load_label_png

    path = tmp_path / "x.png"
    path.write_bytes(bad_images()[name])
    with pytest.raises(ImageError, match="x.png"):
        load_label_png(path)


# ---------------------------------------------------------------------------------------- image files
@pytest.mark.parametrize("name", sorted(bad_images()))
def test_bad_image_files_are_image_errors_naming_the_file(tmp_path, name):
    from sdk import ImageError
    from sdk.preprocess import load_image

    path = tmp_path / f"{name}.img"
    path.write_bytes(bad_images()[name])
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("name", sorted(bad_images()))
def test_bad_image_bytes_are_image_errors(name):
    from sdk import ImageError
    from sdk.preprocess import check_image_bytes, decode_image

    with pytest.raises(ImageError):
        decode_image(bad_images()[name])
    header_only = {
        "png_declares_12k",
        "png_cut_0.1",
        "png_cut_0.5",
        "png_cut_0.9",
        "jpeg_cut_0.5",
        "jpeg_cut_0.9",
        "float_tiff_negative",
        "float_tiff_nan",
        "float_tiff_fraction_above_1",
        "float_tiff_above_65535",
        "int32_tiff_negative",
        "int32_tiff_above_65535",
    }  # only a full decode can tell
    if name not in header_only:
        with pytest.raises(ImageError):
            check_image_bytes(bad_images()[name])


def test_float_and_wide_integer_files_follow_the_documented_ranges():
    from sdk.preprocess import decode_image

    values = GOOD[..., 0]
    expected = np.repeat(values[..., None], 3, axis=2)
    assert np.array_equal(decode_image(good_images()["float_unit"]), expected)  # [0, 1] × 255, rounded
    assert np.array_equal(decode_image(good_images()["float_0_255"]), expected)  # whole numbers 0..255 as is
    wide = Image.fromarray(values.astype(np.float32) * 257)  # whole numbers 0..65535 >> 8
    from tests.hostile_bytes import encoded

    assert np.array_equal(decode_image(encoded(wide, "TIFF")), expected)
    int32 = Image.fromarray(values.astype(np.int32) * 257)
    assert np.array_equal(decode_image(encoded(int32, "TIFF")), expected)


def test_cli_segment_reports_each_bad_file_in_one_line(bundle, tmp_path, capsys, caplog):
    from sdk.cli import main

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("bomb_png_1bit", "float_tiff_fraction_above_1", "jpeg_cut_0.5", "png_declares_100k"):
        (folder / f"{name}.png").write_bytes(bad_images()[name])
    (folder / "good.png").write_bytes(good_images()["png"])
    rc = main(
        [
            "segment",
            str(folder),
            "--bundle",
            str(bundle),
            "--out",
            str(tmp_path / "out"),
            "--backend",
            "onnxruntime",
            "--mode",
            "proposal",
            "--min-size",
            "none",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err, err
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 4 and all("\n" not in e and "/in/" in e for e in errors), errors
    assert (tmp_path / "out" / "good.png").is_file()


@pytest.mark.parametrize(
    "name", ["bomb_png_1bit", "png_declares_100k", "float_tiff_fraction_above_1", "text", "jpeg_cut_0.5", "empty"]
)
def test_demo_uploads_decode_through_the_sdk_path(tmp_path, name):
    """The demo's uploads (files Gradio stored, or webcam data URLs) go through sdk.preprocess.decode_image."""
    import base64
    from types import SimpleNamespace

    from sdk import ImageError
    from sdk.demo import decode_upload

    path = tmp_path / "upload.bin"
    path.write_bytes(bad_images()[name])
    with pytest.raises(ImageError, match="photo.png"):
        decode_upload(SimpleNamespace(path=str(path), url=None), "photo.png")
    url = "data:image/png;base64," + base64.b64encode(bad_images()[name]).decode()
    with pytest.raises(ImageError, match="snapshot"):
        decode_upload(SimpleNamespace(path=None, url=url), "snapshot")
    good = "data:image/png;base64," + base64.b64encode(good_images()["png"]).decode()
    assert np.array_equal(decode_upload(SimpleNamespace(path=None, url=good), "snapshot"), GOOD)


@pytest.mark.parametrize(
    "args",
    [["--port", "99999"], ["--port", "0"], ["--concurrency", "0"], ["--threads", "-1"], ["--device", "tpu"]],
    ids=["port_high", "port_zero", "concurrency", "threads", "device"],
)
def test_demo_options_are_one_line(bundle, capsys, args):
    pytest.importorskip("gradio", reason="pip install 'zegformer-sdk[demo]'")
    from sdk.cli import main

    rc = main(["demo", "--bundle", str(bundle), *args])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
