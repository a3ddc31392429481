"""The ZegFormer model definition (one definition for training, export and inference)."""

from .zegformer import ZegFormer, build_model

__all__ = ["ZegFormer", "build_model"]
