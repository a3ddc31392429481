"""Every exported graph uses only operators that both ONNX Runtime and TensorRT 10 run.

The allow-list is the intersection of ONNX Runtime's CPU kernels and the ONNX-TensorRT parser's
supported operators (TensorRT 10), limited to what the four graphs need (plus the decompositions
older opsets would use). Also checked: the traps that break TensorRT or dynamic shapes — int64
ArgMax, non-constant CumSum axes, Resize sizes traced as constants, foreign domains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import onnx
import pytest
import torch
from onnx import TensorProto

ALLOWED = {
    "Add",
    "ArgMax",
    "Cast",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "Cos",
    "CumSum",
    "Div",
    "Equal",
    "Erf",
    "Expand",
    "Flatten",
    "Gather",
    "Gemm",
    "Identity",
    "InstanceNormalization",
    "LayerNormalization",
    "MatMul",
    "MaxPool",
    "Mul",
    "Pow",
    "Range",
    "ReduceL2",
    "ReduceMean",
    "Relu",
    "Reshape",
    "Resize",
    "Shape",
    "Sigmoid",
    "Sin",
    "Slice",
    "Softmax",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Tile",
    "Transpose",
    "Unsqueeze",
    "Where",
}
GRAPHS = ("proposal", "clip_image", "clip_text", "clip_dense")
INPUT_TYPES = {
    "proposal": TensorProto.FLOAT,
    "clip_image": TensorProto.FLOAT,
    "clip_text": TensorProto.INT32,
    "clip_dense": TensorProto.FLOAT,
}


def _types(model: onnx.ModelProto) -> Dict[str, int]:
    g = model.graph
    out = {vi.name: vi.type.tensor_type.elem_type for vi in list(g.input) + list(g.value_info) + list(g.output)}
    out.update({t.name: t.data_type for t in g.initializer})
    return out


def check_graph_ops(path: Path, name: str) -> None:
    """Assert the allow-list and the TensorRT/dynamic-shape traps for one graph file."""
    model = onnx.load(str(path), load_external_data=False)
    ops = {n.op_type for n in model.graph.node}
    assert not ops - ALLOWED, f"{name}: operators outside the allow-list: {sorted(ops - ALLOWED)}"
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}, f"{name}: non-standard domain"
    assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}, f"{name}: foreign opset import"
    constants = {t.name for t in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    inferred = onnx.shape_inference.infer_shapes(model)
    types = _types(inferred)
    for node in model.graph.node:
        if node.op_type == "ArgMax":
            assert types.get(node.input[0]) == TensorProto.INT32, f"{name}: ArgMax on non-int32 input"
        if node.op_type == "CumSum":
            assert node.input[1] in constants, f"{name}: CumSum axis is not a build-time constant"
        if node.op_type == "Resize" and name == "proposal":
            sizes = [i for i in node.input[2:] if i]
            assert sizes and not set(sizes) & constants, f"{name}: Resize size traced as a constant"
    assert model.graph.input[0].type.tensor_type.elem_type == INPUT_TYPES[name]


@pytest.fixture(scope="module")
def tiny_graphs(tmp_path_factory) -> Path:
    from export.bundle import export_graphs_only
    from train.checkpoint import save_checkpoint
    from train.config import preset
    from train.model import build_model

    root = tmp_path_factory.mktemp("ops")
    torch.manual_seed(0)
    ckpt = root / "tiny.pth"
    save_checkpoint(ckpt, build_model(preset("tiny")), ["a", "b"], [True, False])
    export_graphs_only(ckpt, root, image_size=(64, 64), dense_size=(64, 64))
    return root


@pytest.mark.parametrize("name", GRAPHS)
def test_graph_operators_allowed(tiny_graphs: Path, name: str) -> None:
    check_graph_ops(tiny_graphs / f"{name}.onnx", name)


def test_dynamic_axes_are_symbolic(tiny_graphs: Path) -> None:
    def dims(path, which="input"):
        vi = getattr(onnx.load(str(path), load_external_data=False).graph, which)[0]
        return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]

    assert dims(tiny_graphs / "proposal.onnx") == ["B", 3, "H", "W"]
    assert dims(tiny_graphs / "proposal.onnx", "output") == ["B", 10, "H/4", "W/4"]
    assert dims(tiny_graphs / "clip_image.onnx") == ["N", 3, 32, 32]
    assert dims(tiny_graphs / "clip_text.onnx") == ["T", "L"]  # cut to the longest end of text (sdk.text_batches)
    assert dims(tiny_graphs / "clip_dense.onnx") == [1, 3, 64, 64]


def test_checker_detects_forbidden_operator(tiny_graphs: Path, tmp_path: Path) -> None:
    """The allow-list check itself works: an Einsum graph is refused."""
    node = onnx.helper.make_node("Einsum", ["x", "x"], ["y"], equation="ij,jk->ik")
    graph = onnx.helper.make_graph(
        [node],
        "g",
        [onnx.helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        [onnx.helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
    )
    path = tmp_path / "bad.onnx"
    onnx.save(onnx.helper.make_model(graph), str(path))
    with pytest.raises(AssertionError, match="Einsum"):
        check_graph_ops(path, "clip_image")
