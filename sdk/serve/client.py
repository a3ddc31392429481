"""A small client for ``python -m sdk serve``, on ``tritonclient`` (HTTP).

    from sdk.serve.client import SegmenterClient
    with SegmenterClient("127.0.0.1:8000") as client:
        client.wait_ready()
        result = client.segment("photo.jpg", vocabulary=["cat", "sofa"])
        result.label_map, result.class_names, result.segments   # segments carry COCO RLE masks

Works with numpy 1 or 2 (``pip install 'tritonclient[http]'``); it does not need PyTriton.
"""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import ImageError, SegmenterError, VocabularyError
from . import INPUT_IMAGE, INPUT_VOCABULARY, MODEL_NAME, OUTPUTS

ImageInput = Union[bytes, str, os.PathLike, np.ndarray]


class ServeError(SegmenterError):
    """The server answered a request with an error (bad image, bad vocabulary, ...) or is not reachable."""


@dataclass
class RemoteResult:
    """What the server returns for one image."""

    label_map: np.ndarray
    class_names: Tuple[str, ...]
    segments: List[Dict[str, Any]] = field(default_factory=list)


def encode_image(image: ImageInput) -> bytes:
    """Bytes to send, checked first: a file's bytes for a path, PNG for an RGB array or PIL image, bytes
    as they are. What the server would refuse (no such file, an empty or unreadable file, a header over
    the pixel limit, a bad array) is an :class:`~sdk.errors.ImageError` here, before any request."""
    from PIL import Image

    from ..preprocess import check_image_bytes, pil_to_rgb, to_rgb_uint8

    if isinstance(image, (bytes, bytearray, memoryview)):
        data, what = bytes(image), "the image"
    elif isinstance(image, (str, os.PathLike)):
        data, what = _read_file(Path(image)), f"image {image}"
    elif isinstance(image, (np.ndarray, Image.Image)):
        rgb = pil_to_rgb(image) if isinstance(image, Image.Image) else to_rgb_uint8(image)
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format="PNG")
        return buffer.getvalue()
    else:
        raise ImageError(
            f"cannot send a {type(image).__name__} as an image; pass a path, encoded bytes or an H×W×3 uint8 RGB array"
        )
    check_image_bytes(data, what)
    return data


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as e:
        raise ImageError(f"image file not found: {path}") from e
    except IsADirectoryError as e:
        raise ImageError(f"{path} is a directory, not an image file") from e
    except (OSError, ValueError) as e:
        raise ImageError(f"cannot read image {path}: {getattr(e, 'strerror', None) or e}") from e


def vocabulary_names(vocabulary: Union[str, Sequence[str]]) -> List[str]:
    """The names to send: a list of strings, or ``"a;b;c"`` (checked as the server checks them)."""
    from ..classnames import split_names, validate_names

    if isinstance(vocabulary, str):
        if ";" not in vocabulary:
            raise VocabularyError(
                f"vocabulary={vocabulary!r}: pass a list of class names, or 'a;b;c' "
                f"(the server has no built-in vocabularies by name; [{vocabulary!r}] is one class)"
            )
        vocabulary = split_names(vocabulary)
    return validate_names(vocabulary)


class SegmenterClient:
    """Segment images on a running ``sdk serve`` (``url`` = ``HOST:HTTP_PORT``)."""

    def __init__(self, url: str = "127.0.0.1:8000", model_name: str = MODEL_NAME, timeout: float = 60.0):
        try:
            import tritonclient.http as httpclient
        except ImportError as e:
            raise ServeError("the client needs tritonclient: pip install 'tritonclient[http]'") from e
        self._http = httpclient
        self.url, self.model_name = url, model_name
        self.client = httpclient.InferenceServerClient(url, connection_timeout=timeout, network_timeout=timeout)

    def __enter__(self) -> SegmenterClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    def is_ready(self) -> bool:
        """Triton's readiness (``/v2/health/ready``) and the model's (``/v2/models/NAME/ready``)."""
        from tritonclient.utils import InferenceServerException

        try:
            return bool(self.client.is_server_ready() and self.client.is_model_ready(self.model_name))
        except (InferenceServerException, OSError, ConnectionError):
            return False

    def wait_ready(self, timeout: float = 120.0, interval: float = 0.25) -> None:
        """Block until the server and model are ready; :class:`ServeError` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            if time.monotonic() > deadline:
                raise ServeError(f"no ready server at {self.url} (model {self.model_name!r}) after {timeout:.0f} s")
            time.sleep(interval)

    def segment(self, image: ImageInput, vocabulary: Optional[Union[str, Sequence[str]]] = None) -> RemoteResult:
        """Send one image (path, encoded bytes or RGB array) and an optional vocabulary (names or ``"a;b;c"``).

        Bad input is refused here before sending (:class:`~sdk.errors.ImageError`,
        :class:`~sdk.errors.VocabularyError`); the server's refusals and connection failures are
        :class:`ServeError`.
        """
        from tritonclient.utils import InferenceServerException

        inputs = [self._input(INPUT_IMAGE, np.array([[encode_image(image)]], dtype=object))]
        if vocabulary is not None:
            names = [v.encode("utf-8") for v in vocabulary_names(vocabulary)]
            inputs.append(self._input(INPUT_VOCABULARY, np.array([names], dtype=object)))
        outputs = [self._http.InferRequestedOutput(name) for name in OUTPUTS]
        try:
            response = self.client.infer(self.model_name, inputs, outputs=outputs)
        except InferenceServerException as e:
            raise ServeError(f"the server at {self.url} refused the request: {' '.join(str(e).split())[:500]}") from e
        except (OSError, ConnectionError) as e:
            raise ServeError(f"cannot reach the server at {self.url}: {e}") from e
        return parse_response({name: response.as_numpy(name) for name in OUTPUTS})[0]

    def _input(self, name: str, array: np.ndarray):
        tensor = self._http.InferInput(name, list(array.shape), "BYTES")
        tensor.set_data_from_numpy(array)
        return tensor


def parse_response(arrays: Dict[str, np.ndarray]) -> List[RemoteResult]:
    """Results (one per row) from the output arrays; raises :class:`ServeError` for a request error."""
    errors = [_text(e) for e in arrays["error"].reshape(-1)]
    if any(errors):
        raise ServeError(next(e for e in errors if e))
    return [
        RemoteResult(
            arrays["label_map"][i],
            tuple(_text(n) for n in arrays["class_names"][i]),
            json.loads(_text(arrays["segments"][i, 0])),
        )
        for i in range(arrays["label_map"].shape[0])
    ]


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)
