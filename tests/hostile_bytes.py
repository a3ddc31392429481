"""Hostile encoded images by class (shared by the serve, label and file-decoding hostile tests).

Every entry is bytes that no decoder should turn into a picture silently: empty, not an image,
truncated at every structural point, corrupt checksums, headers that declare huge sizes (each
format's own size field, patched), and pixel values outside the documented ranges.
"""

from __future__ import annotations

import io
import struct
import zlib
from functools import lru_cache
from typing import Dict

import numpy as np
from PIL import Image

GOOD = np.random.default_rng(5).integers(0, 256, (24, 32, 3), dtype=np.uint8)


def encoded(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def png_with_size(width: int, height: int) -> bytes:
    """A real PNG whose IHDR (CRC fixed) declares ``width × height``: the data is far too short."""
    data = bytearray(encoded(Image.fromarray(GOOD), "PNG"))
    ihdr = 8 + 8  # signature, then length + type of the first chunk
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[12 : ihdr + 13])) & 0xFFFFFFFF)
    return bytes(data)


def bmp_with_size(width: int, height: int) -> bytes:
    data = bytearray(encoded(Image.fromarray(GOOD), "BMP"))
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


def jpeg_with_size(width: int, height: int) -> bytes:
    data = bytearray(encoded(Image.fromarray(GOOD), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_with_size(width: int, height: int) -> bytes:
    data = bytearray(encoded(Image.fromarray(GOOD).convert("P"), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def float_tiff(values: np.ndarray) -> bytes:
    return encoded(Image.fromarray(values.astype(np.float32)), "TIFF")


@lru_cache(maxsize=1)
def bad_images() -> Dict[str, bytes]:
    """name → bytes that must be refused with an ImageError (never decoded, never a 500); built once."""
    png = encoded(Image.fromarray(GOOD), "PNG")
    jpg = encoded(Image.fromarray(GOOD), "JPEG")
    corrupt_crc = bytearray(png)
    corrupt_crc[29] ^= 0xFF  # inside IHDR's CRC
    out = {
        "empty": b"",
        "one_byte": b"\x89",
        "text": b"hello, this is not an image\n",
        "nul": b"\0" * 64,
        "random": np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "png_signature_only": png[:8],
        "png_corrupt_crc": bytes(corrupt_crc),
        "pdf": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n",
        "zip": b"PK\x03\x04" + b"\0" * 40,
        "bomb_png_1bit": encoded(Image.new("1", (20000, 20000)), "PNG"),
        "png_declares_100k": png_with_size(100_000, 100_000),
        "png_declares_2^31": png_with_size(2**31 - 1, 1),
        "png_declares_12k": png_with_size(12_000, 12_000),  # under the pixel limit: the data is missing
        "bmp_declares_huge": bmp_with_size(60_000, 60_000),
        "bmp_negative_width": bmp_with_size(-32, 24),
        "jpeg_declares_65k": jpeg_with_size(65_000, 65_000),
        "jpeg_declares_zero": jpeg_with_size(0, 24),
        "gif_declares_65k": gif_with_size(65_000, 65_000),
        "float_tiff_negative": float_tiff(np.full((8, 8), -3.0)),
        "float_tiff_nan": float_tiff(np.full((8, 8), np.nan)),
        "float_tiff_fraction_above_1": float_tiff(np.linspace(0, 1.5, 64).reshape(8, 8)),
        "float_tiff_above_65535": float_tiff(np.full((8, 8), 1e6)),
        "int32_tiff_negative": encoded(Image.fromarray(np.full((8, 8), -5, np.int32)), "TIFF"),
        "int32_tiff_above_65535": encoded(Image.fromarray(np.full((8, 8), 70000, np.int32)), "TIFF"),
    }
    for fraction in (0.1, 0.5, 0.9):
        out[f"png_cut_{fraction}"] = png[: int(len(png) * fraction)]
        out[f"jpeg_cut_{fraction}"] = jpg[: int(len(jpg) * fraction)]
    return out


@lru_cache(maxsize=1)
def good_images() -> Dict[str, bytes]:
    """name → bytes every decode path must accept (the documented modes and ranges)."""
    rgb = Image.fromarray(GOOD)
    return {
        "png": encoded(rgb, "PNG"),
        "jpeg": encoded(rgb, "JPEG"),
        "gray16": encoded(Image.fromarray(GOOD[..., 0].astype(np.uint16) * 257), "PNG"),
        "float_unit": float_tiff(GOOD[..., 0] / 255.0),
        "float_0_255": float_tiff(GOOD[..., 0]),
        "palette": encoded(rgb.convert("P"), "PNG"),
        "rgba": encoded(rgb.convert("RGBA"), "PNG"),
    }
