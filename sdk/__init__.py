"""zegformer-sdk runtime: open-vocabulary semantic segmentation without PyTorch.

    from sdk import Segmenter
    seg = Segmenter("bundle/")                  # backend="auto", mode="cropmask"
    result = seg("image.jpg", vocabulary=["cat", "sofa", "floor, carpet"])
    result.label_map, result.class_names, result.segments, result.timings
    features = seg.encode("image.jpg")          # the image once; then any vocabulary, no image graph:
    seg.classify(features, ["car", "road"])      # identical to seg("image.jpg", ["car", "road"])

See ``sdk/README.md``. Importing ``sdk`` never imports torch.
"""

from .errors import (
    BackendError,
    BundleError,
    EngineMismatchWarning,
    ImageError,
    OptionError,
    SegmenterError,
    VocabularyError,
)
from .features import ImageFeatures
from .result import Segment, SegmentationResult
from .segmenter import Segmenter
from .version import __version__
from .vocabulary import Vocabulary

__all__ = [
    "Segmenter",
    "ImageFeatures",
    "SegmentationResult",
    "Segment",
    "Vocabulary",
    "SegmenterError",
    "BundleError",
    "BackendError",
    "VocabularyError",
    "ImageError",
    "OptionError",
    "EngineMismatchWarning",
    "__version__",
]
