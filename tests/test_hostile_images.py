"""Hostile images to the SDK — files, paths, modes, arrays, sizes: each is the documented typed
error (or works), and the input is never modified."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tests.hostile_helpers import bundle, seg  # noqa: F401 (pytest fixtures)
from tests.sdk_helpers import block_image

pytest.importorskip("torch")  # the bundle is exported with torch


# ====================================================================== images: files
def png_with_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width×height`` (a decompression bomb's header)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def encoded(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


GOOD = block_image(48, 64)
PNG = encoded(Image.fromarray(GOOD), "PNG")
JPEG = encoded(Image.fromarray(GOOD), "JPEG")
BAD_FILES = {
    "empty.png": b"",
    "random.png": bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
    "text.jpg": b"hello, not an image\n",
    "truncated.png": PNG[: len(PNG) // 2],
    "truncated.jpg": JPEG[: len(JPEG) // 3],
    "header_only.png": PNG[:33],
    "bomb.png": png_with_size(60000, 60000),
    "bomb_wide.png": png_with_size(2**31 - 1, 1),
    "bad_crc.png": PNG[:20] + bytes([PNG[20] ^ 0xFF]) + PNG[21:],
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_image_files_are_image_errors(seg, tmp_path, name):
    from sdk import ImageError

    path = tmp_path / name
    path.write_bytes(BAD_FILES[name])
    with pytest.raises(ImageError, match=str(path.name)):
        seg(path)
    assert path.read_bytes() == BAD_FILES[name]


@pytest.mark.parametrize("target", ["missing.png", "a_directory", "nul\x00.png"])
def test_bad_image_paths(seg, tmp_path, target):
    from sdk import ImageError

    (tmp_path / "a_directory").mkdir()
    with pytest.raises(ImageError):
        seg(str(tmp_path / target))


def _modes():
    rgb = Image.fromarray(GOOD)
    gray16 = Image.fromarray(GOOD[..., 0].astype(np.uint16) * 257)
    return {
        "rgb.png": encoded(rgb, "PNG"),
        "gray.png": encoded(rgb.convert("L"), "PNG"),
        "la.png": encoded(rgb.convert("LA"), "PNG"),
        "rgba.png": encoded(rgb.convert("RGBA"), "PNG"),
        "palette.png": encoded(rgb.convert("P"), "PNG"),
        "bilevel.png": encoded(rgb.convert("1"), "PNG"),
        "gray16.png": encoded(gray16, "PNG"),
        "cmyk.jpg": encoded(rgb.convert("CMYK"), "JPEG"),
        "float.tif": encoded(Image.fromarray(GOOD[..., 0].astype(np.float32)), "TIFF"),
        "int32.tif": encoded(rgb.convert("I"), "TIFF"),
        "gif.gif": encoded(rgb.convert("P"), "GIF"),
        "bmp.bmp": encoded(rgb, "BMP"),
        "webp.webp": encoded(rgb, "WEBP"),
    }


@pytest.mark.parametrize("name", sorted(_modes()))
def test_image_modes_segment(seg, tmp_path, name):
    path = tmp_path / name
    path.write_bytes(_modes()[name])
    result = seg(path)
    assert result.label_map.shape == (48, 64) and result.label_map.dtype == np.int32


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    from sdk.preprocess import load_image

    path = tmp_path / "g16.png"
    Image.fromarray(np.full((8, 8), 0x8000, np.uint16)).save(path)
    assert (load_image(path) == 0x80).all()


# ====================================================================== images: arrays
BAD_ARRAYS = {
    "object": np.empty((4, 4, 3), object),
    "bool": np.ones((4, 4, 3), bool),
    "complex": np.ones((4, 4, 3), np.complex64),
    "nan": np.full((4, 4, 3), np.nan, np.float32),
    "float_255": np.full((4, 4, 3), 255.0, np.float32),
    "negative": np.full((4, 4, 3), -1, np.int16),
    "int_too_big": np.full((4, 4, 3), 70000, np.int32),
    "empty": np.zeros((0, 5, 3), np.uint8),
    "4d": np.zeros((1, 4, 4, 3), np.uint8),
    "two_channels": np.zeros((4, 4, 2), np.uint8),
    "scalar": np.zeros((), np.uint8),
    "vector": np.zeros(12, np.uint8),
    "huge": np.broadcast_to(np.zeros(1, np.uint8), (20000, 20000, 3)),
}


@pytest.mark.parametrize("name", sorted(BAD_ARRAYS))
def test_bad_arrays_are_image_errors(seg, name):
    from sdk import ImageError

    with pytest.raises(ImageError):
        seg(BAD_ARRAYS[name])


@pytest.mark.parametrize("value", [None, 3, b"\x89PNG", [[1, 2, 3]], {"a": 1}])
def test_non_images_are_image_errors(seg, value):
    from sdk import ImageError

    with pytest.raises(ImageError):
        seg(value)


@pytest.mark.parametrize("shape", [(1, 20000), (20000, 1), (2, 12000)])
def test_extreme_aspect_ratio_is_an_image_error(bundle, shape):
    from sdk import ImageError, Segmenter

    s = Segmenter(bundle, backend="onnxruntime", mode="proposal", cache_dir=False)  # min_size 640
    with pytest.raises(ImageError, match="aspect ratio"):
        s(np.zeros((*shape, 3), np.uint8))


def test_small_and_thin_images_work(seg):
    for shape in [(1, 1), (1, 7), (7, 1), (3, 200)]:
        assert seg(np.full((*shape, 3), 90, np.uint8)).label_map.shape == shape


def test_input_array_is_not_modified(seg):
    image = block_image(40, 50)
    before = image.copy()
    seg(image)
    seg(image[..., ::-1], bgr=True)
    np.testing.assert_array_equal(image, before)


def test_keep_size_refuses_images_beyond_max_size(bundle):
    from sdk import ImageError, Segmenter

    s = Segmenter(bundle, backend="onnxruntime", mode="proposal", min_size=None, max_size=256, cache_dir=False)
    with pytest.raises(ImageError, match="max_size"):
        s(np.zeros((40, 300, 3), np.uint8))
    assert s(np.zeros((40, 256, 3), np.uint8)).label_map.shape == (40, 256)
