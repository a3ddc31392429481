"""Every int8 graph the exporter writes is in the form TensorRT's explicit quantisation builds.

TensorRT's dequantize layer reads INT8 (FP8/INT4/FP4) only, its scales must be build-time constants,
and it wants weights per output channel with activations per tensor (NVIDIA's "Explicit
Quantization" guide; onnx-tensorrt ``operators.md``). ONNX Runtime's quantiser by default writes INT32
bias DequantizeLinear nodes, which no TensorRT builds (onnx/onnx-tensorrt#850). The checks here are
written out independently of ``export.quantize.check_tensorrt_form``; that function is then shown to
flag ORT's default form, so neither can silently pass everything.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.sdk_helpers import export_bundle, tiny_checkpoint

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, numpy_helper  # noqa: E402

WEIGHTED = ("Conv", "MatMul", "Gemm")


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory) -> Path:
    pytest.importorskip("skimage", reason="the default int8 calibration set is scikit-image's photographs")
    root = tmp_path_factory.mktemp("int8_form")
    return export_bundle(
        tiny_checkpoint(root / "tiny.pth"),
        root / "bundle",
        "--int8",
        "--no-agreement",
        "--calibration-size",
        "96",
        "--calibration-images",
        "3",
    )


def int8_graphs(bundle: Path):
    import json

    manifest = json.loads((bundle / "manifest.json").read_text())
    files = [g["variants"]["int8"]["file"] for g in manifest["graphs"].values() if "int8" in (g.get("variants") or {})]
    assert len(files) == 3, files  # proposal, CLIP image, dense CLIP
    return {f: onnx.load(str(bundle / f)) for f in files}


def constants(model):
    out = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out.update(
        {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node if n.op_type == "Constant"}
    )
    return out


def test_every_dequantize_reads_int8_and_every_scale_is_a_constant(int8_bundle):
    for name, m in int8_graphs(int8_bundle).items():
        consts = constants(m)
        producer = {o: n for n in m.graph.node for o in n.output}
        inits = {i.name: i for i in m.graph.initializer}
        dq = [n for n in m.graph.node if n.op_type == "DequantizeLinear"]
        assert dq, f"{name}: no DequantizeLinear at all"
        for n in dq + [n for n in m.graph.node if n.op_type == "QuantizeLinear"]:
            assert all(i in consts for i in n.input[1:] if i), f"{name}/{n.name}: computed scale or zero point"
            assert len(n.input) < 3 or not np.any(consts[n.input[2]]), f"{name}/{n.name}: non-zero zero point"
        for n in dq:
            x = n.input[0]
            if x in inits:
                assert inits[x].data_type == TensorProto.INT8, (
                    f"{name}/{n.name}: {TensorProto.DataType.Name(inits[x].data_type)} input"
                )
            else:
                q = producer[x]
                assert q.op_type == "QuantizeLinear", f"{name}/{n.name}: input from {q.op_type}"
                assert consts[q.input[2]].dtype == np.int8, f"{name}/{q.name}: quantises to {consts[q.input[2]].dtype}"
                assert consts[n.input[1]].size == 1, f"{name}/{n.name}: activation not per tensor"


def test_weights_per_output_channel_biases_float_outputs_unquantised(int8_bundle):
    for name, m in int8_graphs(int8_bundle).items():
        consts = constants(m)
        producer = {o: n for n in m.graph.node for o in n.output}
        readers = {}
        for n in m.graph.node:
            for i in n.input:
                readers.setdefault(i, []).append(n.op_type)
        quantised = 0
        for n in (n for n in m.graph.node if n.op_type in WEIGHTED):
            dqs = [producer.get(i) for i in n.input[:2]]
            if not any(d is not None and d.op_type == "DequantizeLinear" for d in dqs):
                continue  # a weighted op kept float (attention's activation products)
            quantised += 1
            weight = [d for d in dqs if d is not None and d.op_type == "DequantizeLinear" and d.input[0] in consts]
            assert len(weight) == 1, f"{name}/{n.name}: no int8 weight"
            w, scale = consts[weight[0].input[0]], consts[weight[0].input[1]]
            out_channels = w.shape[0] if n.op_type == "Conv" else w.shape[-1]  # MatMul B is K×N
            if n.op_type == "Gemm":
                out_channels = w.shape[0] if {a.name: a.i for a in n.attribute}.get("transB") else w.shape[1]
            assert scale.shape == (out_channels,), (
                f"{name}/{n.name}: weight scale {scale.shape}, {out_channels} channels"
            )
            if len(n.input) > 2 and n.input[2]:
                bias = n.input[2]
                assert bias in consts and consts[bias].dtype == np.float32, f"{name}/{n.name}: bias not float"
            assert "QuantizeLinear" not in readers.get(n.output[0], []), f"{name}/{n.name}: output quantised"
        assert quantised >= 3, f"{name}: only {quantised} quantised weighted ops"


def test_check_tensorrt_form_passes_ours_and_flags_ort_defaults(int8_bundle, tmp_path, monkeypatch):
    from export import quantize

    for name, m in int8_graphs(int8_bundle).items():
        assert quantize.check_tensorrt_form(m) == [], name
    # ORT's defaults (INT32 bias DQ, Q after every weighted op) on the proposal graph: flagged
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((1, 3, 64, 96)).astype(np.float32) for _ in range(2)]
    monkeypatch.setattr(quantize, "TENSORRT_FORM", {})
    rec = quantize.quantize_graph(int8_bundle / "proposal.onnx", tmp_path / "default.onnx", batches)
    problems = quantize.check_tensorrt_form(onnx.load(str(tmp_path / "default.onnx")))
    assert rec["tensorrt_form"] is False
    assert any("int32" in p for p in problems), problems[:5]
    assert any("output is quantised" in p for p in problems), problems[:5]


# ============================================== calibration inputs are checked before any export work
@pytest.mark.parametrize(
    "extra,message",
    [
        (["--calibration-images", "0"], "--calibration-images 0: must be a whole number of images, at least 1"),
        (["--calibration-images", "-3"], "--calibration-images -3: must be"),
        (["--calibration-size", "0"], "--calibration-size 0: must be a whole number of pixels, at least 32"),
        (["--calibration", "CORRUPT"], "cannot read image"),
    ],
)
def test_bad_calibration_inputs_are_one_line_errors_before_any_work(tmp_path, capsys, extra, message):
    from export.__main__ import main

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    from PIL import Image

    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(photos / f"ok{i}.png")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    extra = [str(photos) if a == "CORRUPT" else a for a in extra]
    checkpoint, out = tmp_path / "missing.pth", tmp_path / "out"  # never read: the options fail first
    rc = main(["--checkpoint", str(checkpoint), "--out", str(out), "--int8", "-q", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    if "CORRUPT" in extra or str(photos) in extra:
        assert "broken.jpg" in err[0] and "never skipped" in err[0]
    assert not out.exists()


def test_a_refused_tensor_address_is_an_error_not_a_silent_wrong_run():
    """``IExecutionContext.set_tensor_address`` reports a refused address (unknown name, misaligned) by
    returning False; export's engine check must stop there rather than run on an unbound tensor."""
    from export.tensorrt import TensorRTError, _bind

    class Context:  # the return contract of TensorRT's binding, nothing else
        def set_tensor_address(self, name, ptr):
            return ptr % 256 == 0

    _bind(Context(), "image", 0x7F0000000100, Path("proposal.fp32.engine"))
    with pytest.raises(
        TensorRTError,
        match=r"refused the device address 0x7f0000000104 for tensor image of "
        r"proposal.fp32.engine",
    ):
        _bind(Context(), "image", 0x7F0000000104, Path("proposal.fp32.engine"))
