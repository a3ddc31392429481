"""Precision tiers on a tiny bundle: export (--int8 --fp16), every tier through the SDK, typed errors,
auto, deterministic calibration, the FP16 graphs' typing, the OpenVINO cache, and an OpenVINO-less SDK.

The agreement floors here are for the tiny model on a block image; the full-size model's agreement
on the official fixture is ``tests/test_precision_fixture.py`` (slow).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.sdk_helpers import NAMES, block_image, export_bundle, random_text_features, tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY_FLOOR = 0.98  # label-map agreement with fp32 asserted for every reduced tier (tiny model)
CAL_SIZE = 96


@pytest.fixture(scope="module")
def qbundle(tmp_path_factory):
    """The tiny model exported with --int8 --fp16 (calibration and agreement at a small size)."""
    pytest.importorskip("skimage", reason="the default int8 calibration set is scikit-image's photographs")
    root = tmp_path_factory.mktemp("precision_bundle")
    return export_bundle(
        tiny_checkpoint(root / "tiny.pth"), root / "bundle", "--int8", "--fp16", "--calibration-size", str(CAL_SIZE)
    )


def segmenter(bundle, **kw):
    from sdk import Segmenter

    seg = Segmenter(bundle, min_size=None, cache_dir=False, **kw)
    tf, tfc = random_text_features(len(NAMES), seg.bundle.model["embed_dim"])
    seg.set_vocabulary(NAMES, text_features=tf, text_features_clip=tfc)
    return seg


def test_manifest_records_each_graph_file_and_its_precision(qbundle):
    m = json.loads((qbundle / "manifest.json").read_text())
    for name in ("proposal", "clip_image", "clip_dense"):
        g = m["graphs"][name]
        assert g["precision"] == "fp32"
        assert g["variants"]["fp16"]["file"] == f"{name}.fp16.onnx" and g["variants"]["fp16"]["precision"] == "fp16"
        q = g["variants"]["int8"]
        assert q["file"] == f"{name}.int8.onnx" and q["precision"] == "int8"
        cal = q["calibration"]
        assert cal["source"].startswith("scikit-image") and cal["images"] >= 8 and cal["seed"] == 0
        assert cal["method"] == "minmax" and cal["format"] == "QDQ" and cal["quantizelinear"] > 0
        for tier in ("fp16", "int8"):
            assert m["files"][f"{name}.{tier}.onnx"]  # hashed like every bundle file
    assert "variants" not in m["graphs"]["clip_text"]
    agreement = m["precision"]["agreement"]
    assert set(agreement["int8"]) >= {"onnxruntime"} and set(agreement["fp16"]) == {"onnxruntime"}
    assert all(0.0 <= v <= 1.0 for t in agreement.values() for v in t.values())
    assert m["precision"]["measured_on"]["images"] == ["coffee.png", "motorcycle_right.png"]


@pytest.mark.parametrize(
    "backend,tier",
    [
        ("onnxruntime", "fp32"),
        ("onnxruntime", "int8"),
        ("onnxruntime", "fp16"),
        ("openvino", "fp32"),
        ("openvino", "bf16"),
        ("openvino", "int8"),
    ],
)
def test_each_tier_end_to_end(qbundle, backend, tier):
    if backend == "openvino":
        pytest.importorskip("openvino", reason="OpenVINO is optional: pip install 'zegformer-sdk[openvino]'")
    image = block_image(90, 120, seed=3)
    ref = segmenter(qbundle, backend="onnxruntime")(image, return_probs=True)
    seg = segmenter(qbundle, backend=backend, precision=tier)
    result = seg(image, return_probs=True)
    assert result.info["precision"] == tier and result.info["backend"] == backend
    assert seg.precision == tier and tier in seg.backend.describe()
    assert result.label_map.shape == (90, 120)
    agree = float((result.label_map == ref.label_map).mean())
    assert agree >= TINY_FLOOR, f"{backend} {tier}: agreement {agree:.4f} < {TINY_FLOOR}"
    err = np.abs(result.probs - ref.probs)
    print(f"{backend} {tier}: agreement {agree:.4f}, probs |err| mean {err.mean():.2e} max {err.max():.2e}")
    mean_bound = {"fp32": 1e-5, "fp16": 2e-3, "bf16": 1e-2, "int8": 5e-2}[tier]  # calibrated probs, 0..1
    assert float(err.mean()) < mean_bound and (tier != "fp32" or float(err.max()) < 1e-4)
    assert len(np.unique(ref.label_map)) > 1  # a uniform map would make agreement meaningless


def test_per_graph_precision_and_maskpool(qbundle):
    seg = segmenter(qbundle, backend="onnxruntime", precision="clip_image=int8,clip_dense=int8")
    assert seg.precision == "proposal=fp32,clip_image=int8,clip_dense=int8"
    out = seg(block_image(seed=4), mode="maskpool")
    assert out.info["precision"] == seg.precision and out.label_map.shape == (90, 120)


def test_unsupported_combinations_are_typed_errors(qbundle, tmp_path):
    from sdk.errors import BackendError
    from sdk.precision import PrecisionError

    with pytest.raises(PrecisionError, match="openvino"):
        segmenter(qbundle, backend="onnxruntime", precision="bf16")
    with pytest.raises(PrecisionError, match="unknown precision"):
        segmenter(qbundle, backend="onnxruntime", precision="int4")
    with pytest.raises(PrecisionError, match="unknown graph"):
        segmenter(qbundle, backend="onnxruntime", precision={"clip_txt": "int8"})
    with pytest.raises(PrecisionError, match=r"no int8 graphs for \['clip_text'\].*--int8"):
        segmenter(qbundle, backend="onnxruntime", precision={"clip_text": "int8"})  # a graph without that variant
    assert issubclass(PrecisionError, BackendError)
    plain = export_bundle(tiny_checkpoint(tmp_path / "t.pth"), tmp_path / "plain")
    with pytest.raises(PrecisionError, match="--int8"):
        segmenter(plain, backend="onnxruntime", precision="int8")
    assert segmenter(plain, backend="onnxruntime", precision="auto").precision == "fp32"  # nothing measured


def test_openvino_rejects_fp16(qbundle):
    pytest.importorskip("openvino", reason="OpenVINO is optional: pip install 'zegformer-sdk[openvino]'")
    from sdk.precision import PrecisionError

    with pytest.raises(PrecisionError, match="fp16"):
        segmenter(qbundle, backend="openvino", precision="fp16")


def test_auto_picks_fastest_tier_meeting_the_bar(qbundle):
    from sdk.backends import choose_auto
    from sdk.bundle import Bundle
    from sdk.precision import AUTO_BAR

    bundle = Bundle(qbundle)
    bundle.manifest["precision"] = {
        "agreement": {
            "int8": {"onnxruntime": AUTO_BAR - 0.01, "openvino": 0.999},
            "bf16": {"openvino": 0.999},
            "fp16": {"onnxruntime": 1.0},
        }
    }
    assert choose_auto(bundle, "onnxruntime", "cpu").label == "fp32"  # int8 below the bar, fp16 not faster here
    assert choose_auto(bundle, "openvino", "cpu").label == "int8"
    assert choose_auto(bundle, "onnxruntime", "cuda").label == "fp16"
    bundle.manifest["precision"]["agreement"]["int8"]["openvino"] = 0.5
    assert choose_auto(bundle, "openvino", "cpu").label == "bf16"
    bundle.manifest["precision"]["agreement"]["clip_image=int8"] = {"openvino": AUTO_BAR, "onnxruntime": 0.98}
    mixed = choose_auto(bundle, "openvino", "cpu")  # int8 CLIP only: between int8 and bf16
    assert mixed.graphs == (("proposal", "fp32"), ("clip_image", "int8"), ("clip_text", "fp32"), ("clip_dense", "fp32"))
    assert choose_auto(bundle, "onnxruntime", "cpu").label == "fp32"
    seg = segmenter(qbundle, backend="onnxruntime", precision="auto")  # the exported measurement
    measured = json.loads((qbundle / "manifest.json").read_text())["precision"]["agreement"]
    assert set(measured) >= {"int8", "clip_image=int8", "fp16", "bf16"}
    expect = (
        "int8"
        if measured["int8"]["onnxruntime"] >= AUTO_BAR
        else "proposal=fp32,clip_image=int8,clip_dense=fp32"
        if measured["clip_image=int8"]["onnxruntime"] >= AUTO_BAR
        else "fp32"
    )
    assert seg.precision == expect
    assert seg(block_image()).info["precision"] == seg.precision


def test_calibration_is_deterministic(qbundle, tmp_path):
    from export.calibration import calibration_set, graph_inputs
    from export.quantize import quantize_graph

    manifest = json.loads((qbundle / "manifest.json").read_text())
    cal = calibration_set(limit=3, min_size=CAL_SIZE)
    a, b = graph_inputs(qbundle, manifest, cal), graph_inputs(qbundle, manifest, cal)
    for name in a:
        assert len(a[name]) == len(b[name]) > 0
        assert all(np.array_equal(x, y) for x, y in zip(a[name], b[name]))
    src = qbundle / "clip_image.onnx"
    quantize_graph(src, tmp_path / "q1.onnx", a["clip_image"])
    quantize_graph(src, tmp_path / "q2.onnx", b["clip_image"])
    assert (tmp_path / "q1.onnx").read_bytes() == (tmp_path / "q2.onnx").read_bytes()
    few = [calibration_set(limit=3, min_size=CAL_SIZE, seed=s) for s in (0, 0, 1)]
    for c in few:
        c.crops_per_image = 4  # of the tiny model's 10 queries: the seed decides which
    x, y, z = (graph_inputs(qbundle, manifest, c)["clip_image"] for c in few)
    assert all(np.array_equal(u, v) for u, v in zip(x, y))
    assert not all(np.array_equal(u, v) for u, v in zip(x, z))


@pytest.mark.parametrize("graph, weights, products", [("clip_image", 9, 4), ("proposal", 20, 9)])
def test_int8_quantises_weights_and_keeps_attention_products_float(qbundle, graph, weights, products):
    """Every MatMul with a weight reads int8 (DequantizeLinear) operands; q·kᵀ, softmax·v and the
    mask product (both operands computed) read float tensors. Counts: the tiny model's graphs."""
    import onnx

    m = onnx.load(str(qbundle / f"{graph}.int8.onnx"))
    made_by = {o: n.op_type for n in m.graph.node for o in n.output}
    matmuls = [[made_by.get(i) for i in n.input] for n in m.graph.node if n.op_type == "MatMul"]
    assert sum(all(op == "DequantizeLinear" for op in ins) for ins in matmuls) == weights
    assert sum(not any(op == "DequantizeLinear" for op in ins) for ins in matmuls) == products
    assert len(matmuls) == weights + products


def test_fp16_graphs_are_strongly_typed_and_load(qbundle):
    import onnx

    from sdk.backends import create_backend
    from sdk.backends.onnxruntime import OnnxRuntimeBackend
    from sdk.bundle import Bundle

    model = onnx.shape_inference.infer_shapes(onnx.load(str(qbundle / "clip_image.fp16.onnx")))
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)
    }
    types.update({i.name: i.data_type for i in model.graph.initializer})
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert {types[i.name] for i in model.graph.input} == {f32} and {types[o.name] for o in model.graph.output} == {f32}
    by_op = {}
    for n in model.graph.node:
        by_op.setdefault(n.op_type, set()).update(types.get(x) for x in n.input[:1] if x)
    assert by_op["MatMul"] == {f16} and by_op["Conv"] == {f16}
    assert by_op["LayerNormalization"] == {f32} and by_op["Softmax"] == {f32} and by_op["ReduceL2"] == {f32}
    # ONNX Runtime's CPU provider segfaults creating FP16 sessions at ORT_ENABLE_ALL: the backend must not
    backend = create_backend(Bundle(qbundle), "onnxruntime", "cpu", {"precision": "fp16"})
    crops = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    ref = OnnxRuntimeBackend(Bundle(qbundle), "cpu").clip_image(crops)
    got = backend.clip_image(crops)
    assert got.dtype == np.float32 and float(np.abs(got - ref).max()) < 5e-3


def test_openvino_compiled_models_are_cached(qbundle, tmp_path):
    pytest.importorskip("openvino", reason="OpenVINO is optional: pip install 'zegformer-sdk[openvino]'")
    from sdk.backends import create_backend
    from sdk.bundle import Bundle

    bundle = Bundle(qbundle)
    first = create_backend(bundle, "openvino", "cpu", {"precision": "int8", "cache_dir": tmp_path})
    crops = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    out = first.clip_image(crops)
    cache = first.cache_dir_for("clip_image", "int8")
    sha = bundle.manifest["files"]["clip_image.int8.onnx"]
    assert cache.parent == tmp_path / "openvino" and cache.name.startswith(f"{sha[:16]}-int8-")
    assert any(cache.iterdir()), "no compiled blob was written"
    second = create_backend(Bundle(qbundle), "openvino", "cpu", {"precision": "int8", "cache_dir": tmp_path})
    np.testing.assert_array_equal(second.clip_image(crops), out)
    assert second.cache_dir_for("clip_image", "fp32") != cache


def test_sdk_and_export_work_without_openvino(qbundle, tmp_path):
    script = textwrap.dedent(f"""
        import sys
        sys.modules["openvino"] = None  # an install without the [openvino] extra
        import numpy as np
        from sdk import Segmenter
        from sdk.errors import BackendError
        image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
        seg = Segmenter({str(qbundle)!r}, min_size=None, cache_dir=False, precision="int8")
        assert seg(image, vocabulary=["sky", "tree"]).info["precision"] == "int8"
        for kw in (dict(backend="openvino"), dict(precision="bf16")):
            try:
                Segmenter({str(qbundle)!r}, cache_dir=False, **kw)
            except BackendError as e:
                assert "openvino" in str(e).lower(), e
            else:
                raise AssertionError("no error without OpenVINO")
        from export.precision import PrecisionOptions, tiers_to_measure
        assert tiers_to_measure(PrecisionOptions(int8=True)) == [("onnxruntime", "int8"),
                                                                 ("onnxruntime", "clip_image=int8")]
        print("OK")
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("OK")


def test_cli_precision(qbundle, tmp_path):
    import cv2

    from sdk.cli import main

    img = tmp_path / "in" / "a.png"
    img.parent.mkdir()
    cv2.imwrite(str(img), block_image()[:, :, ::-1])
    rc = main(
        [
            "segment",
            str(img),
            "--bundle",
            str(qbundle),
            "--out",
            str(tmp_path / "o"),
            "--min-size",
            "none",
            "--backend",
            "onnxruntime",
            "--precision",
            "int8",
            "--vocab",
            "sky;tree;road",
        ]
    )
    assert rc == 0
    assert json.loads((tmp_path / "o" / "a.json").read_text())["info"]["precision"] == "int8"


def test_tensorrt_builds_from_the_variants_export_wrote(qbundle):
    from export.tensorrt import graph_source

    m = json.loads((qbundle / "manifest.json").read_text())
    for name in ("proposal", "clip_image", "clip_dense"):
        for tier in ("fp16", "int8"):
            rel = graph_source(m, name, tier)
            assert rel == f"{name}.{tier}.onnx" and (qbundle / rel).is_file()
