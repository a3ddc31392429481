"""Strongly typed FP16 ONNX graphs: FP16 weights and activations, overflow-prone ops kept in FP32.

TensorRT 11 dropped weak typing (``BuilderFlag.FP16``, per-layer precision): it builds a graph at
the types the graph declares. So the FP16 graph must say everything explicitly:

* every *data* tensor (one that depends on the input's values) is FP16, computed from FP16 weights;
* LayerNorm, GroupNorm (exported as InstanceNormalization), Softmax and the L2 normalisation
  (``ReduceL2`` and the ``Div``/``Clip``/``Max`` that use the norm) run in FP32 between explicit
  ``Cast`` nodes: their sums of squares and exponentials overflow or lose everything in FP16;
* *shape* arithmetic (everything computed from ``Shape``/``Size`` and constants alone, e.g. the
  attention scale ``1/sqrt(sqrt(head_dim))`` and the positional encodings) keeps its FP32 types and is
  cast where it meets data — converting such chains by type alone is what breaks
  ``onnxconverter-common`` on our graphs (FP16-declared ``Cast(to=FLOAT)`` nodes);
* slots the ONNX schema fixes to ``float`` (``Resize`` scales, ...) stay FP32;
* the graph's inputs and outputs stay FP32 (a Cast after the input, before each output), so the
  SDK feeds and reads both graphs the same way.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Iterable, List, Set, Tuple

import numpy as np

log = logging.getLogger(__name__)
FLOAT, FLOAT16 = 1, 10  # onnx.TensorProto.FLOAT / FLOAT16
KEEP_FP32 = frozenset(
    {
        "LayerNormalization",
        "InstanceNormalization",
        "GroupNormalization",
        "Softmax",
        "LogSoftmax",
        "ReduceL2",
        "ReduceSumSquare",
        "LpNormalization",
    }
)
NORM_FOLLOWERS = frozenset({"Div", "Clip", "Max", "Add", "Expand", "Reciprocal", "Mul"})
SHAPE_SOURCES = frozenset({"Shape", "Size"})


def _float_tensors(model) -> Set[str]:
    """Names of the float32 tensors of ``model`` (inputs, initializers, inferred values)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    out = {i.name for i in g.initializer if i.data_type == FLOAT}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        if vi.type.tensor_type.elem_type == FLOAT:
            out.add(vi.name)
    for node in g.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].t.data_type == FLOAT:
            out.update(node.output)
    return out


def _data_nodes(graph) -> Set[int]:
    """Indices of nodes whose outputs depend on the graph inputs' *values* (not only their shapes)."""
    data = {i.name for i in graph.input}
    nodes: Set[int] = set()
    for idx, node in enumerate(graph.node):  # ONNX graphs are topologically sorted
        if node.op_type in SHAPE_SOURCES:
            continue
        if any(x in data for x in node.input if x):
            nodes.add(idx)
            data.update(node.output)
    return nodes


def _fp32_nodes(graph, data_nodes: Set[int], keep_ops: Iterable[str] = KEEP_FP32) -> Set[int]:
    """Data nodes kept in FP32: the ``keep_ops`` plus the elementwise ops that apply an L2 norm."""
    keep_ops = frozenset(keep_ops)
    keep = {i for i in data_nodes if graph.node[i].op_type in keep_ops}
    norm_out = {
        o for i in keep if graph.node[i].op_type in ("ReduceL2", "ReduceSumSquare") for o in graph.node[i].output
    }
    for idx, node in enumerate(graph.node):
        if idx in data_nodes and node.op_type in NORM_FOLLOWERS and any(x in norm_out for x in node.input):
            keep.add(idx)
            if node.op_type in ("Clip", "Max", "Add", "Expand", "Reciprocal"):  # still the norm
                norm_out.update(node.output)
    return keep


def _fixed_float_slot(schema, slot: int) -> bool:
    """True when the op's schema fixes input ``slot`` to ``tensor(float)`` (not a type variable)."""
    if schema is None:
        return False
    inputs = schema.inputs
    if not inputs:
        return False
    formal = inputs[min(slot, len(inputs) - 1)]
    return formal.type_str == "tensor(float)"


def _schema(node, opset: int):
    import onnx

    try:
        return onnx.defs.get_schema(node.op_type, opset, node.domain or "")
    except Exception:  # unknown op: treat all slots as type variables
        return None


def convert_to_fp16(model, keep_fp32: Iterable[str] = KEEP_FP32):
    """A strongly typed FP16 copy of an FP32 ``onnx.ModelProto`` (see the module docstring)."""
    import onnx
    from onnx import helper, numpy_helper

    floats = _float_tensors(model)
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    data_nodes = _data_nodes(g)
    fp32_nodes = _fp32_nodes(g, data_nodes, keep_fp32)
    fp16_nodes = data_nodes - fp32_nodes
    inits = {i.name: i for i in g.initializer}
    consumers: Dict[str, List[Tuple[int, int]]] = {}
    for idx, node in enumerate(g.node):
        for slot, x in enumerate(node.input):
            if x:
                consumers.setdefault(x, []).append((idx, slot))

    def wants16(idx: int, slot: int) -> bool:
        return idx in fp16_nodes and not _fixed_float_slot(_schema(g.node[idx], opset), slot)

    # initializers and Constant nodes used only where FP16 is wanted are stored as FP16
    dtype: Dict[str, int] = {name: FLOAT for name in floats}
    for name, init in inits.items():
        uses = consumers.get(name, [])
        if init.data_type == FLOAT and uses and all(wants16(i, s) for i, s in uses):
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), name))
            dtype[name] = FLOAT16
    for node in g.node:
        if node.op_type == "Constant" and node.output[0] in floats:
            uses = consumers.get(node.output[0], [])
            if uses and all(wants16(i, s) for i, s in uses):
                t = node.attribute[0].t
                node.attribute[0].t.CopyFrom(
                    numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name)
                )
                dtype[node.output[0]] = FLOAT16

    new_nodes, casts = [], {}

    def cast(name: str, to: int) -> str:
        key = (name, to)
        if key not in casts:
            out = f"{name}__to{'16' if to == FLOAT16 else '32'}"
            new_nodes.append(helper.make_node("Cast", [name], [out], to=to, name=f"{out}_cast"))
            casts[key] = out
        return casts[key]

    for idx, node in enumerate(g.node):
        compute = FLOAT16 if idx in fp16_nodes else FLOAT
        for slot, x in enumerate(node.input):
            if not x or x not in floats:
                continue
            want = FLOAT16 if wants16(idx, slot) else FLOAT
            have = dtype.get(x, FLOAT)
            if have != want:
                node.input[slot] = cast(x, want)
        if node.op_type == "Cast" and idx in fp16_nodes:
            to = next(a for a in node.attribute if a.name == "to")
            if to.i == FLOAT:
                to.i = FLOAT16
        for y in node.output:
            if y in floats and node.op_type != "Constant":
                dtype[y] = compute
        new_nodes.append(node)

    # graph outputs: FP32, produced under their own names
    for out in g.output:
        if out.name in floats and dtype.get(out.name) == FLOAT16:
            inner = f"{out.name}__fp16"
            for node in new_nodes:
                for i, y in enumerate(node.output):
                    if y == out.name:
                        node.output[i] = inner
                for i, x in enumerate(node.input):
                    if x == out.name:
                        node.input[i] = inner
            new_nodes.append(helper.make_node("Cast", [inner], [out.name], to=FLOAT, name=f"{out.name}_out_cast"))
    del g.node[:]
    g.node.extend(new_nodes)
    del g.value_info[:]  # stale FP32 annotations; consumers re-infer
    return model


def fp16_counts(model) -> Dict[str, int]:
    """How many nodes compute in FP16/FP32 and how many casts there are (for logs and tests)."""
    g = model.graph
    data = _data_nodes(g)
    keep = _fp32_nodes(g, data)
    return {"fp16_nodes": len(data - keep), "fp32_kept": len(keep), "casts": sum(n.op_type == "Cast" for n in g.node)}


def write_fp16_graph(src: Path, dst: Path) -> Dict[str, int]:
    """Convert ``src`` (FP32 ONNX) to a strongly typed FP16 graph at ``dst``; returns its counts."""
    import onnx

    model = onnx.load(str(src))
    fp16 = convert_to_fp16(model)
    onnx.checker.check_model(fp16)
    onnx.save(fp16, str(dst))
    counts = {**fp16_counts(model), "casts_after": sum(n.op_type == "Cast" for n in fp16.graph.node)}
    log.info("fp16 %s: %s", dst.name, counts)
    return counts
