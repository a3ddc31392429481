"""Explicitly quantised (QDQ) int8 graphs, calibrated on real images.

One artefact for every runtime: ONNX Runtime runs QDQ graphs on the CPU (and CUDA), OpenVINO turns
the Q/DQ pairs into its int8 kernels, and TensorRT 10/11 builds QDQ graphs as they are (explicit
quantisation is the only int8 path TensorRT 11 keeps). Hence the form TensorRT's explicit quantisation
accepts and fuses (NVIDIA's "Explicit Quantization" guide, onnx-tensorrt ``operators.md``):

- every ``DequantizeLinear`` reads INT8 (TensorRT's dequantize layer takes INT8/FP8/INT4/FP4 only), so
  biases stay float (``QuantizeBias=False``; ORT's default INT32 bias DQ is onnx/onnx-tensorrt#850);
- symmetric int8 (zero point 0), weights per output channel, activations per tensor, every scale and
  zero point a constant initializer;
- Q/DQ on the *inputs* of the weighted ops only, not on their outputs (NVIDIA's placement advice:
  TensorRT fuses DQ → Conv/MatMul/Gemm and the float bias/residual/activation into one int8 kernel;
  an output Q would force int8 where the next op is float).

``check_tensorrt_form`` states these rules on a written graph (the tests call it on every int8 graph).

Only the compute-heavy ops with a weight (``MatMul``, ``Conv``, ``Gemm`` whose one input is a
constant) are quantised; normalisations, softmax, the L2 normalisation and the activation ×
activation products of attention (``q·kᵀ``, ``softmax·v``: a few percent of the FLOPs, but their
operands have the widest, input-dependent ranges) stay float. ``DefaultTensorType`` is needed
because ONNX shape inference cannot type some of the exported graph's MatMul outputs (dynamic reshapes).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from sdk.atomicio import atomic_path

log = logging.getLogger(__name__)
OPS = ("MatMul", "Conv", "Gemm")
METHODS = ("minmax", "percentile", "entropy")
# ORT quantiser options for the TensorRT-buildable form (see the module docstring)
TENSORRT_FORM: Dict[str, Any] = {"QuantizeBias": False, "OpTypesToExcludeOutputQuantization": list(OPS)}


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

    return {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[name]


def activation_products(model) -> List[str]:
    """Names of the MatMul nodes whose two inputs are both computed (no initializer or Constant)."""
    consts = {i.name for i in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    # weights reach a MatMul through a Transpose/Cast/DequantizeLinear of a constant at most
    for n in model.graph.node:
        if n.op_type in ("Transpose", "Cast", "Identity") and n.input and n.input[0] in consts:
            consts.update(n.output)
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and not any(i in consts for i in n.input)]


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
    extra = {
        "DefaultTensorType": onnx.TensorProto.FLOAT,
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        **TENSORRT_FORM,
    }
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    target = Path(dst).absolute()  # before the chdir below
    with tempfile.TemporaryDirectory(prefix=".quant-", dir=dst.parent) as tmp:
        # ORT writes its augmented calibration model beside the working directory; keep it private
        cwd = os.getcwd()
        os.chdir(tmp)
        quiet = _NoPreprocessAdvice()
        logging.getLogger().addFilter(quiet)
        try:
            with atomic_path(target) as out:
                quantize_static(
                    str(src),
                    str(out),
                    reader,
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(OPS),
                    per_channel=True,
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=_method(method),
                    extra_options=extra,
                    nodes_to_exclude=keep_float,
                )
        finally:
            logging.getLogger().removeFilter(quiet)
            os.chdir(cwd)
    q = onnx.load(str(dst), load_external_data=False)
    counts = {op: sum(n.op_type == op for n in q.graph.node) for op in ("QuantizeLinear", "DequantizeLinear")}
    log.info("int8 %s: %s, calibrated on %d batches (%s)", dst.name, counts, len(batches), method)
    problems = check_tensorrt_form(q)
    if problems:  # the quantiser changed under us: say so at export, not at engine build on a GPU
        log.warning("int8 %s is not in TensorRT's explicit-quantisation form: %s", dst.name, "; ".join(problems[:3]))
    return {
        "method": method,
        "batches": len(batches),
        "ops": list(OPS),
        "per_channel": True,
        "symmetric": True,
        "format": "QDQ",
        "float_activation_products": len(keep_float),
        "float_bias": True,
        "tensorrt_form": not problems,
        **{k.lower(): v for k, v in counts.items()},
    }


def _consts(model) -> Dict[str, Any]:
    """Initializers and Constant-node outputs by name (as numpy arrays)."""
    from onnx import numpy_helper

    out = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            out[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return out


def _weight_axis(node, weight_input: int, rank: int) -> int:
    """The output-channel axis of a weighted op's constant operand (per-channel quantisation axis)."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        trans = {a.name: a.i for a in node.attribute}.get("transB" if weight_input == 1 else "transA", 0)
        return 0 if (trans if weight_input == 1 else not trans) else 1
    return rank - 1 if weight_input == 1 else rank - 2  # MatMul: B is K×N (N out), A is M×K


def check_tensorrt_form(model) -> List[str]:
    """What in a QDQ graph TensorRT's explicit quantisation would refuse or not fuse; ``[]`` when none.

    Checked: every DequantizeLinear input is INT8; every scale and zero point is a constant (initializer
    or Constant) and every zero point is 0; activations per tensor (scalar scale); the weight of every
    quantised Conv/MatMul/Gemm per output channel; no QuantizeLinear on a weighted op's output."""
    consts = _consts(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: Dict[str, List[Any]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    problems: List[str] = []
    for n in model.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for i in n.input[1:]:
            if i and i not in consts:
                problems.append(f"{n.name}: scale/zero point {i} is computed, not a constant")
        if len(n.input) > 2 and n.input[2] in consts and np.any(consts[n.input[2]] != 0):
            problems.append(f"{n.name}: zero point is not 0 (TensorRT is symmetric)")
        if n.op_type == "DequantizeLinear":
            src = n.input[0]
            dtype = (
                consts[src].dtype
                if src in consts
                else (
                    np.int8
                    if src in producer
                    and producer[src].op_type == "QuantizeLinear"
                    and _zero_point_type(producer[src], consts) == np.int8
                    else None
                )
            )
            if dtype != np.int8:
                problems.append(
                    f"{n.name}: dequantizes {dtype if dtype is not None else 'a non-int8 tensor'} "
                    f"(TensorRT dequantizes INT8 only)"
                )
            scale = consts.get(n.input[1])
            if src not in consts and scale is not None and scale.size != 1:
                problems.append(f"{n.name}: activation {src} is not quantised per tensor")
    for n in model.graph.node:
        if n.op_type not in OPS:
            continue
        for k, i in enumerate(n.input[:2]):
            dq = producer.get(i)
            if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in consts:
                continue
            w, scale = consts[dq.input[0]], consts.get(dq.input[1])
            axis = {a.name: a.i for a in dq.attribute}.get("axis", 1) % max(w.ndim, 1)
            if scale is None or scale.size != w.shape[_weight_axis(n, k, w.ndim)] or axis != _weight_axis(n, k, w.ndim):
                problems.append(f"{n.name}: weight {dq.input[0]} is not quantised per output channel")
        if any(c.op_type == "QuantizeLinear" for c in consumers.get(n.output[0], [])):
            problems.append(f"{n.name}: its output is quantised (Q/DQ belong on weighted ops' inputs)")
    return problems


def _zero_point_type(q_node, consts: Dict[str, Any]):
    """The integer type a QuantizeLinear produces (its zero point's; uint8 when it has none)."""
    return consts[q_node.input[2]].dtype.type if len(q_node.input) > 2 and q_node.input[2] in consts else np.uint8
