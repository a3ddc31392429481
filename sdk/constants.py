"""The official constants every path shares (the SDK, the exporter and the torch model import them).

Values from the official ZegFormer test configuration (``shared/reference/README.md``).
"""

from __future__ import annotations

ENSEMBLE_LAMBDA = 2.0 / 3.0  # geometric ensemble weight of the segment classifier (seen classes)
GZERO_CALIBRATE = 0.1  # subtracted from the seen classes' scores before the argmax
MIN_SIZE = 640  # test-time shortest side
MAX_SIZE = 2560  # test-time longest-side bound
SIZE_DIVISIBILITY = 32  # images are padded bottom/right to a multiple of this
MASK_STRIDE = 4  # mask logits are at 1/4 of the padded image
MASK_THRESHOLD = 0.5  # sigmoid(mask) > 0.5 makes the binary mask of a crop
CROP_SIZE = 224  # CLIP crop side
CONTEXT_LENGTH = 77  # CLIP text tokens
SYNONYM_SEPARATOR = ", "  # "a, b" is one class with the synonyms a and b (embeddings averaged)
