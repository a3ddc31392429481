"""zegformer-sdk runtime: open-vocabulary semantic segmentation without PyTorch.

    from sdk import Segmenter
    seg = Segmenter("bundle/")                  # backend="auto", mode="cropmask"
    result = seg("image.jpg", vocabulary=["cat", "sofa", "floor, carpet"])
    result.label_map, result.class_names, result.segments, result.timings

See ``sdk/README.md``. Importing ``sdk`` never imports torch.
"""
from .errors import (BackendError, BundleError, EngineMismatchWarning, ImageError, OptionError, SegmenterError,
                     VocabularyError)
from .result import Segment, SegmentationResult
from .segmenter import Segmenter
from .version import __version__
from .vocabulary import Vocabulary

__all__ = ["Segmenter", "SegmentationResult", "Segment", "Vocabulary", "SegmenterError", "BundleError",
           "BackendError", "VocabularyError", "ImageError", "OptionError", "EngineMismatchWarning", "__version__"]
