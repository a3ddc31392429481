"""Image input conversions and the official resize (detectron2 ResizeShortestEdge) — numpy/PIL only."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sdk.errors import ImageError
from sdk.preprocess import load_image, output_shape, pad_to_multiple, prepare, resize_shortest_edge, to_rgb_uint8
from tests.sdk_helpers import block_image


def detectron2_shape(h, w, size, max_size):
    """detectron2's ``ResizeShortestEdge.get_output_shape``, written out independently."""
    scale = size * 1.0 / min(h, w)
    newh, neww = (size, scale * w) if h < w else (scale * h, size)
    if max(newh, neww) > max_size:
        s = max_size * 1.0 / max(newh, neww)
        newh, neww = newh * s, neww * s
    return int(newh + 0.5), int(neww + 0.5)


@pytest.mark.parametrize(
    "h, w", [(480, 640), (640, 480), (240, 320), (100, 3000), (3000, 100), (333, 333), (1, 7), (641, 639), (427, 640)]
)
def test_output_shape_is_detectron2(h, w):
    assert output_shape(h, w, 640, 2560) == detectron2_shape(h, w, 640, 2560)


def test_known_shapes():
    assert output_shape(480, 640, 640, 2560) == (640, 853)
    assert output_shape(100, 3000, 640, 2560) == (85, 2560)
    assert output_shape(640, 640, 640, 2560) == (640, 640)


def test_resize_is_pil_bilinear_and_none_keeps_size():
    image = block_image(90, 120)
    out = resize_shortest_edge(image, 64, 2560)
    expected = np.asarray(Image.fromarray(image).resize((85, 64), Image.BILINEAR))
    np.testing.assert_array_equal(out, expected)
    assert resize_shortest_edge(image, None) is image


def test_pad_with_pixel_mean():
    prep = prepare(block_image(70, 100), None, 2560, 32, [1.0, 2.0, 3.0])
    assert prep.model_input.shape == (1, 3, 96, 128) and prep.padded == (96, 128) and prep.resized == (70, 100)
    assert prep.original == (70, 100)
    small = prepare(block_image(70, 100), 35, 2560, 32, [1.0, 2.0, 3.0])
    assert (small.original, small.resized, small.padded) == ((70, 100), (35, 50), (64, 64))
    assert (prep.model_input[0, :, 70:, :] == np.array([1, 2, 3], np.float32)[:, None, None]).all()
    assert (prep.model_input[0, :, :, 100:] == np.array([1, 2, 3], np.float32)[:, None, None]).all()
    assert pad_to_multiple(np.zeros((3, 64, 64), np.float32), 32).shape == (3, 64, 64)


def test_array_conversions():
    rgb = block_image(20, 30)
    gray = rgb[..., 0]
    np.testing.assert_array_equal(to_rgb_uint8(gray), np.repeat(gray[..., None], 3, 2))
    np.testing.assert_array_equal(to_rgb_uint8(gray[..., None]), np.repeat(gray[..., None], 3, 2))
    rgba = np.concatenate([rgb, np.full((20, 30, 1), 7, np.uint8)], 2)
    np.testing.assert_array_equal(to_rgb_uint8(rgba), rgb)
    np.testing.assert_array_equal(to_rgb_uint8(rgb[..., ::-1], bgr=True), rgb)
    np.testing.assert_array_equal(to_rgb_uint8(rgba[..., [2, 1, 0, 3]], bgr=True), rgb)
    wide = rgb.astype(np.uint16) * 257 + 100  # 16-bit: >> 8
    np.testing.assert_array_equal(to_rgb_uint8(wide), (wide >> 8).astype(np.uint8))
    np.testing.assert_array_equal(to_rgb_uint8(rgb / 255.0), rgb)
    np.testing.assert_array_equal(to_rgb_uint8((rgb / 255.0).astype(np.float32)), rgb)
    np.testing.assert_array_equal(to_rgb_uint8(rgb.astype(np.int64)), rgb)
    assert to_rgb_uint8(rgb[:, ::2]).flags.c_contiguous
    with pytest.raises(ImageError):
        to_rgb_uint8(np.full((4, 4), np.nan))


def test_files(tmp_path):
    import cv2

    rgb = block_image(20, 30)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(load_image(tmp_path / "rgb.png"), rgb)
    Image.fromarray(np.concatenate([rgb, np.full((20, 30, 1), 9, np.uint8)], 2)).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(load_image(tmp_path / "rgba.png"), rgb)
    Image.fromarray(rgb[..., 1]).save(tmp_path / "gray.png")
    np.testing.assert_array_equal(load_image(tmp_path / "gray.png"), np.repeat(rgb[..., 1:2], 3, 2))
    wide = rgb[..., 0].astype(np.uint16) * 256 + 77
    cv2.imwrite(str(tmp_path / "gray16.png"), wide)
    np.testing.assert_array_equal(load_image(tmp_path / "gray16.png"), np.repeat(rgb[..., :1], 3, 2))
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    assert load_image(tmp_path / "palette.png").shape == (20, 30, 3)
    # a path is decoded as RGB even with bgr=True (the flag is for arrays)
    np.testing.assert_array_equal(to_rgb_uint8(str(tmp_path / "rgb.png"), bgr=True), rgb)


def test_exif_orientation_is_applied(tmp_path):
    rgb = block_image(20, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    Image.fromarray(rgb).save(tmp_path / "rot.jpg", exif=exif, quality=100)
    assert load_image(tmp_path / "rot.jpg").shape == (30, 20, 3)
