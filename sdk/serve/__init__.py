"""``python -m sdk serve``: the Segmenter behind NVIDIA Triton (PyTriton), and a client helper.

The wire protocol (one definition for :mod:`sdk.serve.server` and :mod:`sdk.serve.client`):

inputs (per request, batch dimension first, one image per row)
  ``image``       BYTES ``[B, 1]``  an encoded image (PNG, JPEG, ...)
  ``vocabulary``  BYTES ``[B, K]``  optional class names (UTF-8; ``"a, b"`` = synonyms); default:
                                   the server's vocabulary
outputs
  ``label_map``   INT32 ``[B, H, W]`` class indices into ``class_names``
  ``class_names`` BYTES ``[B, K]``
  ``segments``    BYTES ``[B, 1]``  JSON: per class present index, name, area, score, seen, bbox
                                   and its COCO RLE mask
  ``error``       BYTES ``[B, 1]``  empty, or ``"<ErrorType>: why"`` this request failed (an
                                   undecodable, truncated or oversized image — decoded by
                                   :func:`sdk.preprocess.decode_image` with its pixel guard —, a bad
                                   vocabulary, a request with ``vocabulary`` but no ``image``;
                                   ``label_map`` is then 1×1 of -1). PyTriton fails every request of
                                   a batch when the callable raises, so the callable never raises:
                                   per-request problems are answered here and the batch's other
                                   requests still succeed; :mod:`sdk.serve.client` raises them.
                                   Requests Triton itself rejects (no input at all, a wrong type or
                                   shape) get HTTP 400. One exception: PyTriton 0.7 cannot pass a
                                   zero-length tensor (``vocabulary`` of shape ``[B, 0]``) to the
                                   model, so that request alone fails with 500 (Triton batches only
                                   requests of equal shapes); the client refuses it before sending.

PyTriton (``pip install 'zegformer-sdk[serve]'``) needs ``numpy<2``: give the server its own
environment (see the README). Nothing here imports PyTriton or tritonclient at module level.
The command line is :mod:`sdk.commands.serve`.
"""

from __future__ import annotations

MODEL_NAME = "zegformer"
INPUT_IMAGE, INPUT_VOCABULARY = "image", "vocabulary"
OUTPUT_LABEL_MAP, OUTPUT_CLASS_NAMES, OUTPUT_SEGMENTS, OUTPUT_ERROR = "label_map", "class_names", "segments", "error"
OUTPUTS = (OUTPUT_LABEL_MAP, OUTPUT_CLASS_NAMES, OUTPUT_SEGMENTS, OUTPUT_ERROR)
