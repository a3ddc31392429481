"""The Triton server: PyTriton binds N Segmenter instances behind Triton's dynamic batcher.

Runs in an environment with ``nvidia-pytriton`` (which needs ``numpy<2``). PyTriton's bundled
``tritonserver`` starts a Python-backend stub that must load *this* interpreter's ``libpython``;
with a pyenv (or other non-system) Python the dynamic loader would find the system's instead, so
:func:`libpython_on_path` puts the interpreter's ``LIBDIR`` first on ``LD_LIBRARY_PATH``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sysconfig
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..errors import OptionError, SegmenterError, VocabularyError
from ..formats import segments_to_rle
from ..validate.values import is_int
from . import (
    INPUT_IMAGE,
    INPUT_VOCABULARY,
    MODEL_NAME,
    OUTPUT_CLASS_NAMES,
    OUTPUT_ERROR,
    OUTPUT_LABEL_MAP,
    OUTPUT_SEGMENTS,
)

log = logging.getLogger(__name__)
SERVE_ENV_HINT = (
    "PyTriton needs numpy<2, so give the server its own environment: python -m venv .venv-serve && "
    ".venv-serve/bin/pip install 'zegformer-sdk[serve]' && .venv-serve/bin/python -m sdk serve ..."
)


class RequestError(SegmenterError):
    """A request that is malformed as a whole (a missing input, a wrong shape)."""


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

    def __post_init__(self) -> None:
        """Refuse bad options before anything starts (:class:`OptionError`, one line)."""
        for name, lo, hi in (
            ("http_port", 1, 65535),
            ("grpc_port", 1, 65535),
            ("metrics_port", 1, 65535),
            ("instances", 1, 64),
            ("max_batch_size", 1, 1024),
            ("max_queue_delay_us", 0, 60_000_000),
        ):
            value = getattr(self, name)
            if not is_int(value) or not lo <= value <= hi:
                raise OptionError(f"{name.replace('_', '-')}={value!r} is invalid: give an integer in {lo}..{hi}")
        ports = (self.http_port, self.grpc_port, self.metrics_port)
        if len(set(ports)) != 3:
            raise OptionError(f"the HTTP, gRPC and metrics ports must differ, got {ports}")
        if not isinstance(self.host, str) or not self.host.strip() or any(c.isspace() for c in self.host):
            raise OptionError(f"host={self.host!r} is invalid: give an address such as 127.0.0.1 or 0.0.0.0")
        if not isinstance(self.model_name, str) or not re.fullmatch(
            r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", self.model_name
        ):
            raise OptionError(f"model name {self.model_name!r} is invalid: use letters, digits, '_', '.' and '-'")


def decode_image(data: Any) -> np.ndarray:
    """Encoded image bytes → ``H×W×3`` uint8 RGB through the SDK's one decode path (pixel guard included)."""
    from ..preprocess import decode_image as decode

    return decode(data, "the request's image")


def as_strings(values: np.ndarray) -> List[str]:
    """A row of a BYTES tensor → ``str`` (UTF-8); a name that is not UTF-8 is a :class:`VocabularyError`."""
    out = []
    for i, v in enumerate(np.asarray(values, dtype=object).ravel()):
        if isinstance(v, (bytes, np.bytes_)):
            try:
                v = bytes(v).decode("utf-8")
            except UnicodeDecodeError as e:
                raise VocabularyError(
                    f"vocabulary name #{i} is not UTF-8 ({e.reason} at byte {e.start}); send UTF-8 encoded strings"
                ) from e
        out.append(v if isinstance(v, str) else str(v))
    return out


def _bytes_array(rows: Sequence[Sequence[str]], width: int) -> np.ndarray:
    array = np.empty((len(rows), width), dtype=object)
    for i, row in enumerate(rows):
        array[i, :] = [s.encode("utf-8") for s in row]
    return array


def _rows(array: Optional[np.ndarray]) -> int:
    """The batch size of a request's input (``0`` when absent)."""
    if array is None:
        return 0
    array = np.asarray(array)
    return int(array.shape[0]) if array.ndim else 1


def error_answer(n: int, error: BaseException) -> Dict[str, np.ndarray]:
    """``n`` rows saying why the request failed (PyTriton cannot send empty tensors: a 1×1 map of -1
    and one empty name stand for "none")."""
    message = " ".join(str(error).split())[:1000] or type(error).__name__
    return {
        OUTPUT_LABEL_MAP: np.full((n, 1, 1), -1, np.int32),
        OUTPUT_CLASS_NAMES: _bytes_array([[""]] * n, 1),
        OUTPUT_SEGMENTS: _bytes_array([["[]"]] * n, 1),
        OUTPUT_ERROR: _bytes_array([[f"{type(error).__name__}: {message}"]] * n, 1),
    }


class SegmenterModel:
    """One model instance: a Segmenter answering PyTriton's list of requests, one by one.

    Every request gets an answer: a client's mistake (undecodable or oversized image, bad
    vocabulary, a missing input) is answered in that request's ``error`` output, and so is an
    unexpected failure (logged with its traceback), because raising would fail the whole batch.
    """

    def __init__(self, segmenter):
        self.segmenter = segmenter

    def __call__(self, requests) -> List[Dict[str, np.ndarray]]:
        return [self.answer(request) for request in requests]

    def answer(self, request) -> Dict[str, np.ndarray]:
        data = getattr(request, "data", request)
        images, vocabularies = data.get(INPUT_IMAGE), data.get(INPUT_VOCABULARY)
        n = max(1, _rows(images), _rows(vocabularies))
        try:
            if images is None:
                raise RequestError(
                    f"the request has no '{INPUT_IMAGE}' input; send the encoded image as "
                    f"BYTES [1, 1] (see sdk.serve.client)"
                )
            return self.segment_rows(np.asarray(images, dtype=object), vocabularies)
        except SegmenterError as e:
            log.info("request failed: %s", e)
            return error_answer(n, e)
        except Exception as e:  # noqa: BLE001 — raising would fail every request batched with this one
            log.exception("request failed unexpectedly")
            return error_answer(n, e)

    def segment_rows(self, images: np.ndarray, vocabularies: Optional[np.ndarray]) -> Dict[str, np.ndarray]:
        if images.ndim != 2 or images.shape[1] != 1 or images.shape[0] == 0:
            raise RequestError(
                f"'{INPUT_IMAGE}' must be BYTES [batch, 1] (one encoded image per row), got shape {images.shape}"
            )
        if vocabularies is not None:
            vocabularies = np.asarray(vocabularies, dtype=object)
            if vocabularies.ndim != 2 or vocabularies.shape[0] != images.shape[0]:
                raise RequestError(
                    f"'{INPUT_VOCABULARY}' must be BYTES [batch, names] with the image's batch "
                    f"size {images.shape[0]}, got shape {vocabularies.shape}"
                )
        results = []
        for i in range(images.shape[0]):
            vocabulary = as_strings(vocabularies[i]) if vocabularies is not None else None
            results.append(self.segmenter(decode_image(images[i, 0]), vocabulary=vocabulary))
        if len({r.size for r in results}) > 1 or len({len(r.class_names) for r in results}) > 1:
            raise RequestError(
                "the images of one request must share their size and vocabulary length; send one image per request"
            )
        return {
            OUTPUT_LABEL_MAP: np.stack([r.label_map.astype(np.int32) for r in results]),
            OUTPUT_CLASS_NAMES: _bytes_array([r.class_names for r in results], len(results[0].class_names)),
            OUTPUT_SEGMENTS: _bytes_array([[json.dumps(segments_to_rle(r))] for r in results], 1),
            OUTPUT_ERROR: _bytes_array([[""]] * len(results), 1),
        }


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
    """Start Triton with ``options.instances`` Segmenters (``segmenter``: their kwargs); block until stopped.

    The Segmenters are made first, so a bad bundle, option, precision or vocabulary is a one-line
    error before Triton starts.
    """
    from ..segmenter import Segmenter

    models = [SegmenterModel(Segmenter(**segmenter)) for _ in range(max(1, options.instances))]
    try:
        from pytriton.exceptions import PyTritonError
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig
    except ImportError as e:
        raise SegmenterError(f"sdk serve needs PyTriton ({e}). {SERVE_ENV_HINT}") from e

    libpython_on_path()
    if not options.verbose:
        quiet_tracebacks("pytriton")
    inputs = [
        Tensor(name=INPUT_IMAGE, dtype=bytes, shape=(1,)),
        Tensor(name=INPUT_VOCABULARY, dtype=bytes, shape=(-1,), optional=True),
    ]
    outputs = [
        Tensor(name=OUTPUT_LABEL_MAP, dtype=np.int32, shape=(-1, -1)),
        Tensor(name=OUTPUT_CLASS_NAMES, dtype=bytes, shape=(-1,)),
        Tensor(name=OUTPUT_SEGMENTS, dtype=bytes, shape=(1,)),
        Tensor(name=OUTPUT_ERROR, dtype=bytes, shape=(1,)),
    ]
    config = ModelConfig(
        max_batch_size=options.max_batch_size,
        batcher=DynamicBatcher(max_queue_delay_microseconds=options.max_queue_delay_us),
    )
    triton_config = TritonConfig(
        http_address=options.host,
        http_port=options.http_port,
        grpc_address=options.host,
        grpc_port=options.grpc_port,
        metrics_address=options.host,
        metrics_port=options.metrics_port,
        log_verbose=1 if options.verbose else 0,
        exit_on_error=True,
    )
    for signum in (signal.SIGTERM, signal.SIGINT):  # serve() stops cleanly on KeyboardInterrupt; a shell's
        signal.signal(signum, _interrupt)  # background job would otherwise ignore SIGINT
    try:
        with Triton(config=triton_config) as triton:
            triton.bind(
                model_name=options.model_name,
                infer_func=models,
                inputs=inputs,
                outputs=outputs,
                config=config,
                strict=True,
            )
            log.warning(
                "serving %s (%d instance(s), %s) on http://%s:%d, grpc %s:%d",
                options.model_name,
                len(models),
                models[0].segmenter,
                options.host,
                options.http_port,
                options.host,
                options.grpc_port,
            )
            triton.serve()
    except (PyTritonError, OSError) as e:  # Triton did not start (a port in use, an address not here, ...)
        detail = " ".join(str(e).split())[:300] or type(e).__name__
        raise SegmenterError(
            f"Triton failed: {detail}; check that ports {options.http_port}, {options.grpc_port} "
            f"and {options.metrics_port} are free on {options.host} (see the log above)"
        ) from e
    return 0


class _NoTraceback(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(self.prefix):
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def quiet_tracebacks(prefix: str) -> None:
    """Log ``prefix``'s records (PyTriton's) without their tracebacks: its start-up failures are
    reported once, in one line, by :func:`serve` (``--verbose`` keeps them)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _NoTraceback) for f in handler.filters):
            handler.addFilter(_NoTraceback(prefix))


def _interrupt(signum, frame):
    raise KeyboardInterrupt
