"""Image input and the official test-time preprocessing, in numpy + PIL only.

* :func:`load_image` / :func:`decode_image` / :func:`to_rgb_uint8` turn a path, encoded bytes or an
  array into ``H×W×3`` uint8 RGB (one PIL decode path with the pixel guard: CLI, label, serve);
* :func:`resize_shortest_edge` is detectron2's ``ResizeShortestEdge`` (PIL bilinear on uint8);
* :func:`pad_to_multiple` pads bottom/right, as detectron2's ``ImageList`` does.

The torch model and the training evaluation reuse these functions, so every path resizes and pads alike.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from typing import Any, Literal, Optional, Sequence, Tuple, Union, overload

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

ImageLike = Union[str, os.PathLike, np.ndarray, Image.Image]
HINT = "pass an H×W×3 uint8 RGB array (or H×W gray, H×W×4 RGBA, uint16, float in [0,1]) or an image path"
MAX_IMAGE_PIXELS = 2 * 89_478_485  # PIL's decompression-bomb error threshold (~179 MP, ~13k × 13k)


def check_pixels(h: int, w: int, what: str = "the image") -> None:
    """Refuse images whose pixel count could exhaust memory (decompression bombs, absurd arrays)."""
    if h * w > MAX_IMAGE_PIXELS:
        raise ImageError(
            f"{what} is {w}×{h} = {h * w / 1e6:.0f} MP, above the {MAX_IMAGE_PIXELS / 1e6:.0f} MP "
            "limit (a decompression bomb?); downscale it first"
        )


def load_image(path: Union[str, os.PathLike]) -> np.ndarray:
    """Read an image file as ``H×W×3`` uint8 RGB (EXIF orientation applied, as detectron2 does).

    The size in the header is checked before any pixel is decoded; every decoder failure
    (truncated, corrupt, unsupported, bomb) is an :class:`ImageError` naming the file.
    """
    try:
        return _decode(os.fspath(path), f"image {path}")
    except FileNotFoundError as e:
        raise ImageError(f"image file not found: {path}") from e
    except IsADirectoryError as e:
        raise ImageError(f"{path} is a directory, not an image file") from e


def decode_image(data: Any, what: str = "the image") -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, ...) → ``H×W×3`` uint8 RGB, with the checks of :func:`load_image`.

    The one decode path for bytes (``sdk serve``, uploads): the pixel guard, EXIF orientation and
    every decoder failure as an :class:`ImageError` saying ``what`` failed.
    """
    return _decode(io.BytesIO(_bytes_of(data, what)), f"{what} ({len(data)} bytes)")


def check_image_bytes(data: Any, what: str = "the image") -> None:
    """The checks :func:`decode_image` makes before decoding (bytes, a known format, the pixel limit),
    without decoding: what a client can refuse before sending."""
    _decode(io.BytesIO(_bytes_of(data, what)), f"{what} ({len(data)} bytes)", header_only=True)


def _bytes_of(data: Any, what: str) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageError(f"{what} is {type(data).__name__}, not encoded image bytes")
    if not len(data):
        raise ImageError(f"{what} is empty; send the encoded bytes of a PNG/JPEG/... file")
    return bytes(data)


@overload
def _decode(source: Any, what: str, header_only: Literal[False] = ...) -> np.ndarray: ...
@overload
def _decode(source: Any, what: str, header_only: Literal[True]) -> None: ...


def _decode(source: Any, what: str, header_only: bool = False) -> Optional[np.ndarray]:
    """Decode ``source`` (a path or a file object) with PIL; ``what`` names it in errors."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bomb and corrupt-EXIF warnings: the checks below decide
            with Image.open(source) as im:
                check_pixels(im.height, im.width, what)
                if header_only:
                    return None
                im.load()
                return pil_to_rgb(ImageOps.exif_transpose(im) or im, what)
    except (ImageError, FileNotFoundError, IsADirectoryError):
        raise
    except MemoryError as e:
        raise ImageError(f"not enough memory to decode {what}; downscale it first") from e
    except Image.DecompressionBombError as e:  # PIL refuses some headers before check_pixels sees them
        raise ImageError(
            f"{what} declares more than the {MAX_IMAGE_PIXELS / 1e6:.0f} MP limit (a decompression "
            "bomb?); downscale it first"
        ) from e
    except UnidentifiedImageError as e:
        raise ImageError(f"cannot read {what}: not an image format PIL recognises (is it a PNG/JPEG/... file?)") from e
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, DecompressionBombError, struct.error...)
        detail = " ".join(str(e).split())[:200]
        raise ImageError(
            f"cannot read {what}: {type(e).__name__}: {detail} (is it a valid, complete PNG/JPEG/... file?)"
        ) from e


def pil_to_rgb(im: Image.Image, what: str = "the image") -> np.ndarray:
    """A PIL image of any mode → ``H×W×3`` uint8 RGB (16/32-bit gray scaled, float by its range)."""
    if im.mode.startswith("I;16") or im.mode == "I":
        return to_rgb_uint8(_int_file_to_uint8(np.asarray(im), im.mode, what))
    if im.mode == "F":
        return to_rgb_uint8(_float_file_to_uint8(np.asarray(im), what))
    if im.mode in ("RGBA", "LA", "PA", "P", "RGBa", "La"):
        im = im.convert("RGBA")
    return to_rgb_uint8(np.asarray(im.convert("RGB") if im.mode != "RGBA" else im))


def to_rgb_uint8(image: ImageLike, bgr: bool = False) -> np.ndarray:
    """Any supported image → contiguous ``H×W×3`` uint8 RGB.

    Gray (``H×W``, ``H×W×1``) is replicated, alpha (``H×W×4``) dropped, uint16 scaled by ``>> 8``,
    float in [0, 1] scaled by 255 (rounded), other integer types accepted when within 0..255.
    ``bgr=True`` reads 3/4-channel *arrays* in OpenCV's BGR(A) order (paths and PIL images are
    always decoded as RGB).
    """
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, Image.Image):
        return pil_to_rgb(image)
    if not isinstance(image, np.ndarray):
        raise ImageError(f"unsupported image type {type(image).__name__}; {HINT}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ImageError(f"unsupported image shape {image.shape}; {HINT}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"the image is empty (shape {image.shape}); {HINT}")
    check_pixels(image.shape[0], image.shape[1])
    image = _to_uint8(image)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    image = image[..., :3]
    if bgr:
        image = image[..., ::-1]
    return np.ascontiguousarray(image)


def _int_file_to_uint8(image: np.ndarray, mode: str, what: str) -> np.ndarray:
    """A 16/32-bit integer image *file*: 16-bit → ``>> 8``; 32-bit: 0..255 as is, 0..65535 → ``>> 8``."""
    values = image.astype(np.int64)
    lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
    if lo < 0 or hi > 65535:
        raise ImageError(
            f"{what} is an integer image (PIL mode {mode}) with values {lo}..{hi}, outside 0..65535; "
            "convert it to 8- or 16-bit"
        )
    if mode.startswith("I;16") or hi > 255:
        values = values >> 8
    return values.astype(np.uint8)


def _float_file_to_uint8(image: np.ndarray, what: str = "the float image") -> np.ndarray:
    """A float image *file*: [0, 1] → ×255; whole numbers 0..255 → as is, 0..65535 → ``>> 8``.

    Anything else (NaN, infinities, negatives, fractions above 1, above 65535) has no documented
    meaning as pixels and is an :class:`ImageError` rather than a guess.
    """
    if not np.isfinite(image).all():
        raise ImageError(f"{what} is a float image holding NaN or infinite values")
    lo, hi = (float(image.min()), float(image.max())) if image.size else (0.0, 0.0)
    if lo >= 0 and hi <= 1.0:
        return np.floor(image.astype(np.float64) * 255.0 + 0.5).astype(np.uint8)
    if lo < 0 or hi > 65535 or not np.array_equal(image, np.floor(image)):
        raise ImageError(
            f"{what} is a float image with values {lo:g}..{hi:g}: float images must be in [0, 1] "
            "(or whole numbers in 0..255 or 0..65535); convert it to 8-bit"
        )
    values = image.astype(np.int64)
    return (values if hi <= 255 else values >> 8).astype(np.uint8)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all() or image.min() < 0.0 or image.max() > 1.0:
            raise ImageError(
                "float images must hold values in [0, 1]; convert 0..255 floats with .astype(np.uint8) first"
            )
        return np.floor(image.astype(np.float64) * 255.0 + 0.5).astype(np.uint8)
    if np.issubdtype(image.dtype, np.integer) and image.dtype != np.bool_:
        lo, hi = int(image.min()), int(image.max())
        if lo >= 0 and hi <= 255:
            return image.astype(np.uint8)
        if lo >= 0 and hi <= 65535:
            return (image.astype(np.uint32) >> 8).astype(np.uint8)
        raise ImageError(f"{image.dtype} image values {lo}..{hi} are outside 0..65535; {HINT}")
    raise ImageError(f"unsupported image dtype {image.dtype}; {HINT}")


def output_shape(h: int, w: int, min_size: int, max_size: int) -> Tuple[int, int]:
    """detectron2 ``ResizeShortestEdge.get_output_shape``: ``(new_h, new_w)``."""
    size = float(min_size)
    scale = size / min(h, w)
    if h < w:
        newh, neww = size, scale * w
    else:
        newh, neww = scale * h, size
    if max(newh, neww) > max_size:
        scale = max_size * 1.0 / max(newh, neww)
        newh, neww = newh * scale, neww * scale
    return int(newh + 0.5), int(neww + 0.5)


def resize_shortest_edge(image: np.ndarray, min_size: Optional[int], max_size: int = 2560) -> np.ndarray:
    """Resize ``H×W×3`` uint8 so the shortest side is ``min_size`` (longest ≤ ``max_size``).

    PIL bilinear on the uint8 image, exactly as the official evaluation; ``min_size=None``
    returns the image unchanged.
    """
    h, w = image.shape[:2]
    if min_size is None:
        if max(h, w) > int(max_size):
            raise ImageError(
                f"a {w}×{h} image is larger than max_size {max_size} and min_size=None keeps the "
                "size: pass a min_size (e.g. 640) to resize it, or a larger max_size"
            )
        return image
    newh, neww = output_shape(h, w, int(min_size), int(max_size))
    if newh < 1 or neww < 1:
        raise ImageError(
            f"a {w}×{h} image resizes to {neww}×{newh} (min_size {min_size}, max_size {max_size}): "
            "its aspect ratio is too extreme; crop it into tiles first"
        )
    resized = Image.fromarray(image).resize((neww, newh), Image.Resampling.BILINEAR)
    return np.asarray(resized)


def padded_size(h: int, w: int, divisor: int) -> Tuple[int, int]:
    """(H, W) rounded up to multiples of ``divisor`` (detectron2 ``ImageList``; the torch model uses it too)."""
    if divisor <= 1:
        return h, w
    return (h + divisor - 1) // divisor * divisor, (w + divisor - 1) // divisor * divisor


def pad_to_multiple(chw: np.ndarray, divisor: int, fill: Union[float, Sequence[float]] = 0.0) -> np.ndarray:
    """Pad ``[..., C, H, W]`` bottom/right to a multiple of ``divisor`` with ``fill`` (per channel)."""
    h, w = chw.shape[-2:]
    ph, pw = padded_size(h, w, divisor)
    fill_arr = np.asarray(fill, dtype=chw.dtype).reshape(-1, 1, 1)
    out = np.empty(chw.shape[:-2] + (ph, pw), dtype=chw.dtype)
    out[...] = fill_arr
    out[..., :h, :w] = chw
    return out


def normalize(chw: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``(x − mean) / std`` per channel, float32 (the models' own arithmetic order)."""
    m = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
    return (chw - m) / s


@dataclass(frozen=True)
class Prepared:
    """One image ready for the graphs, with its three sizes named."""

    image: np.ndarray  # H×W×3 uint8, after the shortest-edge resize
    model_input: np.ndarray  # [1,3,Hp,Wp] float32 0..255, padded with the backbone pixel mean
    original: Tuple[int, int]  # (H, W) of the input image: the label map's size

    @property
    def resized(self) -> Tuple[int, int]:
        """(H, W) after the resize (the image the model sees, before padding)."""
        return self.image.shape[0], self.image.shape[1]

    @property
    def padded(self) -> Tuple[int, int]:
        """(Hp, Wp): the resized size padded to the size divisibility."""
        return self.model_input.shape[2], self.model_input.shape[3]


def prepare(
    image: np.ndarray, min_size: Optional[int], max_size: int, divisor: int, pixel_mean: Sequence[float]
) -> Prepared:
    """RGB uint8 → resized → ``[1,3,Hp,Wp]`` float32 padded with the pixel mean."""
    resized = resize_shortest_edge(image, min_size, max_size)
    chw = resized.transpose(2, 0, 1).astype(np.float32)
    padded = pad_to_multiple(chw, divisor, pixel_mean)[None]
    return Prepared(resized, np.ascontiguousarray(padded), (image.shape[0], image.shape[1]))


def clip_input(model_input: Any, resized: Tuple[int, int], mean: Sequence[float], std: Sequence[float], xp=np) -> Any:
    """The CLIP-normalised image padded with 0 (the CLIP mean colour), ``[1,3,Hp,Wp]`` float32.

    Computed from the (possibly device-resident) model input, whose padding is replaced by 0.
    """
    m = xp.asarray(np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1))
    s = xp.asarray(np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1))
    out = (model_input - m) / s
    h, w = resized
    out[..., h:, :] = 0.0
    out[..., :h, w:] = 0.0
    return xp.ascontiguousarray(out)


def dense_input(prepared: Prepared, size: Sequence[int], mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """The (unpadded) resized image, PIL-bilinear to ``size`` = (H, W), CLIP-normalised: ``[1,3,H,W]``."""
    h, w = int(size[0]), int(size[1])
    im = np.asarray(Image.fromarray(prepared.image).resize((w, h), Image.Resampling.BILINEAR))
    return np.ascontiguousarray(normalize(im.transpose(2, 0, 1).astype(np.float32), mean, std)[None])
