"""Checkpoint → model bundle (ONNX graphs, text embeddings, manifest) and ONNX → TensorRT engines.

    python -m export --checkpoint MODEL.pth --out BUNDLE_DIR [--vocab NAME_OR_FILE ...]

The bundle layout is the contract in ``sdk/bundle_format.py``. ``export.tensorrt`` is importable
without torch (the SDK calls ``export.tensorrt.build_engines`` to rebuild engines on a target
machine); every other module here needs torch and the ``train`` package.
"""
