"""The Triton server: PyTriton binds N Segmenter instances behind Triton's dynamic batcher.

Runs in an environment with ``nvidia-pytriton`` (which needs ``numpy<2``). PyTriton's bundled
``tritonserver`` starts a Python-backend stub that must load *this* interpreter's ``libpython``;
with a pyenv (or other non-system) Python the dynamic loader would find the system's instead, so
:func:`libpython_on_path` puts the interpreter's ``LIBDIR`` first on ``LD_LIBRARY_PATH``.
"""
from __future__ import annotations

import io
import json
import logging
import os
import signal
import sysconfig
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..errors import ImageError, SegmenterError
from ..formats import segments_to_rle
from . import (INPUT_IMAGE, INPUT_VOCABULARY, OUTPUT_CLASS_NAMES, OUTPUT_ERROR, OUTPUT_LABEL_MAP, OUTPUT_SEGMENTS,
               MODEL_NAME)

log = logging.getLogger(__name__)
SERVE_ENV_HINT = ("PyTriton needs numpy<2, so give the server its own environment: python -m venv .venv-serve && "
                  ".venv-serve/bin/pip install 'zegformer-sdk[serve]' && .venv-serve/bin/python -m sdk serve ...")


@dataclass
class ServerOptions:
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    instances: int = 1
    max_batch_size: int = 8
    max_queue_delay_us: int = 1000
    model_name: str = MODEL_NAME
    verbose: bool = False


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image bytes → ``H×W×3`` uint8 RGB (EXIF orientation applied, as for files)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    from ..preprocess import pil_to_rgb

    if not data:
        raise ImageError("the request's image is empty; send the encoded bytes of a PNG/JPEG/... file")
    try:
        with Image.open(io.BytesIO(data)) as im:
            return pil_to_rgb(ImageOps.exif_transpose(im))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"cannot decode the request's image ({len(data)} bytes): {e}; "
                         "send the encoded bytes of a PNG/JPEG/... file") from e


def as_strings(values: np.ndarray) -> List[str]:
    """A row of a BYTES tensor → ``str`` (UTF-8)."""
    out = []
    for v in np.asarray(values).ravel():
        try:
            out.append(v.decode("utf-8") if isinstance(v, (bytes, np.bytes_)) else str(v))
        except UnicodeDecodeError as e:
            raise SegmenterError(f"a vocabulary name is not UTF-8 ({e}); send UTF-8 encoded strings") from e
    return out


def _bytes_array(rows: Sequence[Sequence[str]], width: int) -> np.ndarray:
    array = np.empty((len(rows), width), dtype=object)
    for i, row in enumerate(rows):
        array[i, :] = [s.encode("utf-8") for s in row]
    return array


class SegmenterModel:
    """One model instance: a Segmenter answering PyTriton's list of requests, one by one."""

    def __init__(self, segmenter):
        self.segmenter = segmenter

    def __call__(self, requests) -> List[Dict[str, np.ndarray]]:
        return [self.answer(request) for request in requests]

    def answer(self, request) -> Dict[str, np.ndarray]:
        images = np.asarray(request[INPUT_IMAGE])
        n = images.shape[0] if images.ndim else 1
        try:
            return self.segment_rows(images.reshape(n, -1), request.data.get(INPUT_VOCABULARY))
        except SegmenterError as e:
            message = " ".join(str(e).split())
            log.info("request failed: %s", message)
            # PyTriton cannot send empty tensors: a 1×1 map of -1 and one empty name stand for "none"
            return {OUTPUT_LABEL_MAP: np.full((n, 1, 1), -1, np.int32),
                    OUTPUT_CLASS_NAMES: _bytes_array([[""]] * n, 1),
                    OUTPUT_SEGMENTS: _bytes_array([["[]"]] * n, 1),
                    OUTPUT_ERROR: _bytes_array([[f"{type(e).__name__}: {message}"]] * n, 1)}

    def segment_rows(self, images: np.ndarray, vocabularies: Optional[np.ndarray]) -> Dict[str, np.ndarray]:
        if images.shape[1] != 1:
            raise SegmenterError(f"'{INPUT_IMAGE}' must be [batch, 1] (one encoded image per row), got {images.shape}")
        results = []
        for i in range(images.shape[0]):
            vocabulary = as_strings(vocabularies[i]) if vocabularies is not None else None
            results.append(self.segmenter(decode_image(bytes(images[i, 0])), vocabulary=vocabulary))
        if len({r.size for r in results}) > 1 or len({len(r.class_names) for r in results}) > 1:
            raise SegmenterError("the images of one request must share their size and vocabulary length; "
                                 "send one image per request")
        return {OUTPUT_LABEL_MAP: np.stack([r.label_map.astype(np.int32) for r in results]),
                OUTPUT_CLASS_NAMES: _bytes_array([r.class_names for r in results], len(results[0].class_names)),
                OUTPUT_SEGMENTS: _bytes_array([[json.dumps(segments_to_rle(r))] for r in results], 1),
                OUTPUT_ERROR: _bytes_array([[""]] * len(results), 1)}


def libpython_on_path() -> Optional[str]:
    """Put this interpreter's shared ``libpython`` directory first on ``LD_LIBRARY_PATH`` (see module doc)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    soname = sysconfig.get_config_var("INSTSONAME") or ""
    if not libdir or ".so" not in soname or not os.path.exists(os.path.join(libdir, soname)):
        return None  # a statically linked interpreter: the stub brings its own
    parts = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    if not parts or parts[0] != libdir:
        os.environ["LD_LIBRARY_PATH"] = ":".join([libdir] + [p for p in parts if p != libdir])
    return libdir


def serve(segmenter: Dict[str, Any], options: ServerOptions) -> int:
    """Start Triton with ``options.instances`` Segmenters (``segmenter``: their kwargs); block until stopped."""
    try:
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig
    except ImportError as e:
        raise SegmenterError(f"sdk serve needs PyTriton ({e}). {SERVE_ENV_HINT}") from e
    from ..segmenter import Segmenter

    libpython_on_path()
    models = [SegmenterModel(Segmenter(**segmenter)) for _ in range(max(1, options.instances))]
    inputs = [Tensor(name=INPUT_IMAGE, dtype=bytes, shape=(1,)),
              Tensor(name=INPUT_VOCABULARY, dtype=bytes, shape=(-1,), optional=True)]
    outputs = [Tensor(name=OUTPUT_LABEL_MAP, dtype=np.int32, shape=(-1, -1)),
               Tensor(name=OUTPUT_CLASS_NAMES, dtype=bytes, shape=(-1,)),
               Tensor(name=OUTPUT_SEGMENTS, dtype=bytes, shape=(1,)),
               Tensor(name=OUTPUT_ERROR, dtype=bytes, shape=(1,))]
    config = ModelConfig(max_batch_size=options.max_batch_size,
                         batcher=DynamicBatcher(max_queue_delay_microseconds=options.max_queue_delay_us))
    triton_config = TritonConfig(http_address=options.host, http_port=options.http_port,
                                 grpc_address=options.host, grpc_port=options.grpc_port,
                                 metrics_address=options.host, metrics_port=options.metrics_port,
                                 log_verbose=1 if options.verbose else 0, exit_on_error=True)
    for signum in (signal.SIGTERM, signal.SIGINT):  # serve() stops cleanly on KeyboardInterrupt; a shell's
        signal.signal(signum, _interrupt)           # background job would otherwise ignore SIGINT
    with Triton(config=triton_config) as triton:
        triton.bind(model_name=options.model_name, infer_func=models, inputs=inputs, outputs=outputs,
                    config=config, strict=True)
        log.warning("serving %s (%d instance(s), %s) on http://%s:%d, grpc %s:%d", options.model_name, len(models),
                    models[0].segmenter, options.host, options.http_port, options.host, options.grpc_port)
        triton.serve()
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt
