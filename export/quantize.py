"""Explicitly quantised (QDQ) int8 graphs, calibrated on real images.

One artefact for every runtime: ONNX Runtime runs QDQ graphs on the CPU (and CUDA), OpenVINO turns
the Q/DQ pairs into its int8 kernels, and TensorRT 10/11 builds QDQ graphs as they are (explicit
quantisation is the only int8 path TensorRT 11 keeps). Hence TensorRT's constraints:
symmetric int8 activations and weights (zero point 0), weights per output channel.

Only the compute-heavy ops with a weight (``MatMul``, ``Conv``, ``Gemm`` whose one input is a
constant) are quantised; normalisations, softmax, the L2 normalisation and the activation ×
activation products of attention (``q·kᵀ``, ``softmax·v``: a few percent of the FLOPs, but their
operands have the widest, input-dependent ranges) stay float. ``DefaultTensorType`` is needed because ONNX shape inference
cannot type some of the exported graph's MatMul outputs (dynamic reshapes).
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

log = logging.getLogger(__name__)
OPS = ("MatMul", "Conv", "Gemm")
METHODS = ("minmax", "percentile", "entropy")


class _NoPreprocessAdvice(logging.Filter):
    """ORT's quantiser logs "consider pre-processing" on the root logger; our graphs are shape-typed
    through ``DefaultTensorType`` instead, so the advice is noise in the export log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage() and "pre-process" not in record.getMessage()


class ListReader:
    """``onnxruntime.quantization.CalibrationDataReader`` over a fixed list of inputs."""

    def __init__(self, input_name: str, batches: Sequence[np.ndarray]):
        self.input_name = input_name
        self.batches = list(batches)
        self._it = iter(self.batches)

    def get_next(self):
        x = next(self._it, None)
        return None if x is None else {self.input_name: x}

    def rewind(self) -> None:
        self._it = iter(self.batches)


def _method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy}[name]


def activation_products(model) -> List[str]:
    """Names of the MatMul nodes whose two inputs are both computed (no initializer or Constant)."""
    consts = {i.name for i in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    # weights reach a MatMul through a Transpose/Cast/DequantizeLinear of a constant at most
    for n in model.graph.node:
        if n.op_type in ("Transpose", "Cast", "Identity") and n.input and n.input[0] in consts:
            consts.update(n.output)
    return [n.name for n in model.graph.node
            if n.op_type == "MatMul" and not any(i in consts for i in n.input)]


def quantize_graph(src: Path, dst: Path, batches: List[np.ndarray], method: str = "minmax") -> Dict[str, Any]:
    """Write the QDQ int8 version of ``src`` to ``dst``, calibrated on ``batches``; returns its record."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if method not in METHODS:
        raise ValueError(f"calibration method {method!r}: choose one of {METHODS}")
    model = onnx.load(str(src), load_external_data=False)
    input_name = model.graph.input[0].name
    keep_float = activation_products(model)
    reader = type("Reader", (ListReader, CalibrationDataReader), {})(input_name, batches)
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT, "ActivationSymmetric": True, "WeightSymmetric": True}
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    with tempfile.TemporaryDirectory(prefix=".quant-", dir=dst.parent) as tmp:
        # ORT writes its augmented calibration model beside the working directory; keep it private
        cwd = os.getcwd()
        os.chdir(tmp)
        quiet = _NoPreprocessAdvice()
        logging.getLogger().addFilter(quiet)
        try:
            out = Path(tmp) / dst.name
            quantize_static(str(src), str(out), reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=list(OPS),
                            per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=_method(method), extra_options=extra, nodes_to_exclude=keep_float)
            os.replace(out, dst)
        finally:
            logging.getLogger().removeFilter(quiet)
            os.chdir(cwd)
    q = onnx.load(str(dst), load_external_data=False)
    counts = {op: sum(n.op_type == op for n in q.graph.node) for op in ("QuantizeLinear", "DequantizeLinear")}
    log.info("int8 %s: %s, calibrated on %d batches (%s)", dst.name, counts, len(batches), method)
    return {"method": method, "batches": len(batches), "ops": list(OPS), "per_channel": True,
            "symmetric": True, "format": "QDQ", "float_activation_products": len(keep_float),
            **{k.lower(): v for k, v in counts.items()}}
