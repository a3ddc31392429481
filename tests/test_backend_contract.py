"""The backend contract: every registered backend is built by ``create_backend`` from its spec, with the
precision plan resolved once and passed to its factory (TensorRT through its stand-ins, its ONNX Runtime
fallback included; ONNX Runtime, OpenVINO and torch for real), runs the plan's files, and checks each
graph's inputs and outputs against the manifest. Plus the precision parser's hostile inputs.

The tiny bundle's graphs get "variants" that are copies of their fp32 files (``clip_text`` included):
what is checked is which file each graph runs, not the numbers a reduced tier would give.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.sdk_helpers import copy_bundle, tiny_bundle
from tests.trt_standins import FakePyCuda, fake_tensorrt, install

GRAPHS = ("proposal", "clip_image", "clip_text", "clip_dense")


def with_variants(src: Path, dest: Path, tiers=("int8", "fp16"), graphs=GRAPHS, source=None) -> Path:
    """A copy of ``src`` whose graphs have ``<graph>.<tier>.onnx`` variants (copies of ``source`` or their own file)."""
    from sdk.bundle_format import sha256_file

    path = copy_bundle(src, dest)
    manifest = json.loads((path / "manifest.json").read_text())
    for graph in graphs:
        entry = manifest["graphs"][graph]
        for tier in tiers:
            rel = f"{graph}.{tier}.onnx"
            shutil.copyfile(path / (source or entry["file"]), path / rel)
            manifest["files"][rel] = sha256_file(path / rel)
            entry.setdefault("variants", {})[tier] = {"file": rel, "precision": tier}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


@pytest.fixture(scope="module")
def vbundle(tmp_path_factory):
    return with_variants(tiny_bundle(tmp_path_factory), tmp_path_factory.mktemp("variants") / "b")


def inputs(bundle):
    rng = np.random.default_rng(0)
    return {
        "proposal": rng.standard_normal((1, 3, 64, 64)).astype(np.float32),
        "clip_image": rng.standard_normal((3, 3, 32, 32)).astype(np.float32),
        "clip_text": np.ones((2, 77), np.int32),
        "clip_dense": rng.standard_normal((1, 3, 64, 64)).astype(np.float32),
    }


def ran_from(backend, graph: str) -> str:
    """The file the backend's graph was loaded from (after running it)."""
    return Path(str(backend.graph(graph).path)).name


# ---------------------------------------------------------------- every backend, through create_backend
CASES = {
    "onnxruntime": ("cpu", "int8,clip_text=int8"),
    "openvino": ("cpu", "bf16,clip_image=int8,clip_text=int8"),
    "tensorrt": ("cuda", "int8,clip_dense=fp16"),
    "torch": ("cpu", "fp32"),
}


def test_the_cases_cover_every_registered_backend():
    from sdk.backends import REGISTRY

    assert set(CASES) == set(REGISTRY)


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_cpu_backends_receive_and_run_the_plan(vbundle, name):
    if name == "openvino":
        pytest.importorskip("openvino", reason="OpenVINO is optional: pip install 'zegformer-sdk[openvino]'")
    from sdk.backends import create_backend, resolve
    from sdk.bundle import Bundle

    device, spec = CASES[name]
    bundle = Bundle(vbundle)
    if name == "openvino":
        import openvino

        if "BF16" not in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            spec = spec.replace("bf16", "fp32")
    backend = create_backend(bundle, name, device, {"precision": spec, "cache_dir": False})
    assert backend.precision == resolve(bundle, name, device, spec)
    assert backend.precision.of("clip_image") == backend.precision.of("clip_text") == "int8"
    for graph, x in inputs(bundle).items():
        outs = backend.run(graph, x)
        assert all(np.isfinite(np.asarray(o)).all() for o in outs)
        tier = backend.precision.of(graph)
        want = f"{graph}.{tier}.onnx" if tier in ("int8", "fp16") else f"{graph}.onnx"
        assert ran_from(backend, graph) == want


def test_torch_backend_receives_the_plan(tmp_path, vbundle):
    pytest.importorskip("torch")
    from sdk.backends import create_backend
    from sdk.bundle import Bundle
    from sdk.precision import FP32, PrecisionError
    from tests.sdk_helpers import tiny_checkpoint

    checkpoint = tiny_checkpoint(tmp_path / "tiny.pth")
    bundle = Bundle(vbundle)
    backend = create_backend(bundle, "torch", "cpu", {"precision": "fp32", "checkpoint": checkpoint})
    assert backend.precision == FP32 and backend.describe() == "torch (cpu, fp32)"
    assert backend.run("clip_text", np.ones((2, 77), np.int32))[0].shape[0] == 2
    with pytest.raises(PrecisionError, match="'int8' for proposal is not available on torch"):
        create_backend(bundle, "torch", "cpu", {"precision": "int8", "checkpoint": checkpoint})


@pytest.fixture()
def trt_bundle(tmp_path, vbundle, monkeypatch):
    """``vbundle`` with int8 engines for the image graphs and an fp16 one for clip_dense (stand-ins)."""
    from export.tensorrt import build_engines

    path = copy_bundle(vbundle, tmp_path / "b")
    cuda = FakePyCuda()
    trt, log = fake_tensorrt(cuda)
    install(monkeypatch, cuda, trt)
    monkeypatch.setenv("ZEGFORMER_TRT_CACHE", str(tmp_path / "trt-cache"))
    monkeypatch.setattr("sdk.backends.tensorrt.default_allocator", lambda: None)
    profiles = {
        "proposal": {"image": [[1, 3, 32, 32], [1, 3, 64, 64], [1, 3, 128, 128]]},
        "clip_image": {"crops": [[1, 3, 32, 32], [4, 3, 32, 32], [4, 3, 32, 32]]},
    }
    build_engines(path, precision="int8", profiles=profiles, graphs=["proposal", "clip_image"])
    build_engines(path, precision="fp16", graphs=["clip_dense"])
    return path, cuda, log


def test_tensorrt_and_its_fallback_receive_the_plan(trt_bundle):
    from sdk.backends import create_backend
    from sdk.bundle import Bundle

    path, cuda, log = trt_bundle
    device, spec = CASES["tensorrt"]
    bundle = Bundle(path)
    backend = create_backend(bundle, "tensorrt", device, {"precision": spec})
    assert backend.precision.label == "proposal=int8,clip_image=int8,clip_dense=fp16"
    assert sorted(backend._engines) == ["clip_dense", "clip_image", "proposal"]  # each engine in its graph's tier
    fallback = backend._fallback()
    assert fallback.precision is backend.precision  # the ONNX Runtime fallback runs the same plan
    x = inputs(bundle)
    log.executed.clear()
    np.testing.assert_allclose(
        backend.run("clip_image", x["clip_image"])[0], fallback.run("clip_image", x["clip_image"])[0], atol=1e-5
    )
    assert [g for g, _, _ in log.executed] == ["clip_image"]
    assert ran_from(fallback, "clip_image") == "clip_image.int8.onnx"
    backend.run("clip_text", x["clip_text"])  # no engine: the fallback, at the plan's text tier (fp32)
    assert ran_from(fallback, "clip_text") == "clip_text.onnx"
    auto = create_backend(bundle, "auto", "auto", {"precision": spec})
    assert auto.name == "tensorrt" and auto.precision == backend.precision
    with pytest.warns(Warning, match="built in int8, fp32 was asked for"):
        cpu_fallback = create_backend(bundle, "auto", "auto", {"precision": "fp32"})  # engines in another tier
    assert cpu_fallback.name == "onnxruntime" and cpu_fallback.precision.label == "fp32"
    backend.close()
    auto.close()


def test_auto_takes_the_backend_that_runs_the_tier(vbundle, monkeypatch):
    from sdk.backends import create_backend
    from sdk.bundle import Bundle
    from sdk.errors import BackendError

    bundle = Bundle(vbundle)
    assert create_backend(bundle, "auto", "cpu", {"precision": "int8"}).name == "onnxruntime"
    monkeypatch.setitem(__import__("sys").modules, "openvino", None)  # an install without the extra
    with pytest.raises(BackendError, match="bf16.*openvino.*pip install"):
        create_backend(bundle, "auto", "cpu", {"precision": "bf16"})


# ---------------------------------------------------------------- graph I/O against the manifest
@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
@pytest.mark.parametrize(
    "source, problem",
    [("proposal.onnx", r"inputs \['image'\]"), ("clip_text.onnx", r"'tokens'.*is int32, expected float32")],
)
def test_a_variant_holding_another_graph_is_a_bundle_error(tmp_path_factory, tmp_path, name, source, problem):
    if name == "openvino":
        pytest.importorskip("openvino", reason="OpenVINO is optional: pip install 'zegformer-sdk[openvino]'")
    from sdk.backends import create_backend
    from sdk.bundle import Bundle
    from sdk.errors import BundleError

    path = with_variants(tiny_bundle(tmp_path_factory), tmp_path / "b", ("int8",), ("clip_image",), source)
    backend = create_backend(Bundle(path), name, "cpu", {"precision": "clip_image=int8", "cache_dir": False})
    with pytest.raises(BundleError, match=rf"clip_image\.int8\.onnx is not the clip_image graph.*{problem}") as e:
        backend.run("clip_image", inputs(None)["clip_image"])
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_a_rank_the_manifest_does_not_declare_is_a_bundle_error(tmp_path_factory, tmp_path, name):
    if name == "openvino":
        pytest.importorskip("openvino", reason="OpenVINO is optional: pip install 'zegformer-sdk[openvino]'")
    from sdk.backends import create_backend
    from sdk.bundle import Bundle
    from sdk.errors import BundleError

    path = copy_bundle(tiny_bundle(tmp_path_factory), tmp_path / "b")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["graphs"]["clip_image"]["outputs"] = {"embeddings": "[N,32,1]"}
    (path / "manifest.json").write_text(json.dumps(manifest))
    backend = create_backend(Bundle(path), name, "cpu", {"cache_dir": False})
    declared = r"'embeddings' has rank 2, the manifest declares \[N,32,1\]"
    with pytest.raises(BundleError, match=rf"clip_image\.onnx .*{declared}"):
        backend.run("clip_image", inputs(None)["clip_image"])


# ---------------------------------------------------------------- the precision parser
HOSTILE = [
    "int8,fp32",
    "int8,clip_image=fp32,clip_image=int8",
    "clip_image=int8,clip_image=fp16",
    "auto,clip_image=int8",
    "clip_image=auto",
    "int4",
    "clip_image=int4",
    "clip_imag=int8",
    "=int8",
    "clip_image=",
    "int8,",
    ",",
    "",
    "   ",
    8,
    0.5,
    True,
    b"int8",
    ["int8"],
    ("int8",),
    {"clip_image": 8},
    {3: "int8"},
    {},
    {"clip_image": None},
    {"proposal": "int8", "PROPOSAL": "fp32"},
]


@pytest.mark.parametrize("spec", HOSTILE, ids=[repr(h)[:30] for h in HOSTILE])
def test_every_malformed_precision_is_one_option_error(vbundle, spec):
    from sdk import OptionError, Segmenter
    from sdk.precision import parse

    with pytest.raises(OptionError) as e:
        parse(spec)
    message = str(e.value)
    assert "\n" not in message and len(message) < 300 and "precision" in message
    with pytest.raises(OptionError):
        Segmenter(vbundle, backend="onnxruntime", precision=spec, cache_dir=False)


@pytest.mark.parametrize(
    "spec, label",
    [
        ("int8", "int8"),
        ("INT8 ", "int8"),
        (None, "fp32"),
        ("fp32", "fp32"),
        ("int8,clip_image=fp32", "proposal=int8,clip_image=fp32,clip_dense=int8"),
        ("clip_image=fp32,int8", "proposal=int8,clip_image=fp32,clip_dense=int8"),  # order does not matter
        ("clip_image=int8,clip_image=int8", "proposal=fp32,clip_image=int8,clip_dense=fp32"),  # same tier twice
        ({"clip_image": "int8"}, "proposal=fp32,clip_image=int8,clip_dense=fp32"),
        ("int8,clip_text=int8", "int8,clip_text=int8"),
        ({"clip_text": "fp16"}, "fp32,clip_text=fp16"),
    ],
)
def test_precision_forms_and_their_labels(spec, label):
    from sdk.precision import PrecisionPlan, parse

    plan = PrecisionPlan.of_request(parse(spec))
    assert plan.label == label
    assert PrecisionPlan.of_request(parse(plan.label)).graphs == plan.graphs  # the label parses back
    assert plan.of("clip_text") == ("fp32" if "clip_text" not in str(spec) else plan.of("clip_text"))


def test_tiers_a_backend_does_not_offer_are_refused_with_where_they_run(vbundle):
    from sdk import OptionError
    from sdk.backends import create_backend
    from sdk.bundle import Bundle

    bundle = Bundle(vbundle)
    with pytest.raises(OptionError, match=r"'bf16' for proposal is not available on onnxruntime.*openvino \(cpu\)"):
        create_backend(bundle, "onnxruntime", "cpu", {"precision": "bf16"})
    with pytest.raises(OptionError, match=r"'fp16' for clip_text is not available on openvino"):
        create_backend(bundle, "openvino", "cpu", {"precision": {"clip_text": "fp16"}})


# ---------------------------------------------------------------- the extending doc's worked example
def test_the_documented_example_backend_works(vbundle, monkeypatch):
    """``docs/extending-backend.md``'s example, executed as written, registered, and equal to onnxruntime."""
    import re
    import types

    import sdk.backends as backends
    from sdk import OptionError, Segmenter
    from tests.sdk_helpers import NAMES, block_image, random_text_features

    doc = (Path(__file__).resolve().parents[1] / "docs" / "extending-backend.md").read_text()
    module = types.ModuleType("mini_ort")
    exec(compile(re.findall(r"```python\n(.*?)```", doc, flags=re.S)[0], "mini_ort.py", "exec"), module.__dict__)
    monkeypatch.setattr(backends, "REGISTRY", dict(backends.REGISTRY))  # registered for this test only
    monkeypatch.setattr(backends, "ALIASES", dict(backends.ALIASES))
    backends.register_backend(module.SPEC)  # the registration line
    features = random_text_features(len(NAMES), 32)
    results = []
    for backend in ("onnxruntime", "mini"):
        seg = Segmenter(vbundle, backend=backend, precision="int8", min_size=None, cache_dir=False)
        seg.set_vocabulary(NAMES, text_features=features[0], text_features_clip=features[1])
        results.append(seg(block_image(seed=5), return_probs=True))
    assert seg.backend.name == "mini-ort" and results[1].info["precision"] == "int8"
    np.testing.assert_allclose(results[1].probs, results[0].probs, atol=1e-6)
    with pytest.raises(OptionError, match=r"'bf16' for proposal is not available on mini-ort.*openvino"):
        Segmenter(vbundle, backend="mini-ort", precision="bf16", cache_dir=False)
