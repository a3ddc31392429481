"""TensorRT engine build and backend, against stand-ins for ``tensorrt`` (10.x and 11.x) and ``pycuda``.

No TensorRT or GPU is needed: the stand-ins (``tests/trt_standins.py``) model only the API surface;
"engines" run the bundle's ONNX graphs with ONNX Runtime on fake device memory. What is checked is
our side: strongly typed networks on 10.x and 11.x without the removed symbols, the precision's ONNX
graph chosen for the build, engine selection and verification, profile chunking and fallback,
output order, one optimisation profile per concurrently running context, device arrays in and out
without host copies, balanced contexts, freed memory — and equal results to ONNX Runtime.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.sdk_helpers import NAMES, block_image, copy_bundle, random_text_features, shared_bundle
from tests.trt_standins import FakeDeviceArray, FakePyCuda, fake_tensorrt, install

pytest.importorskip("torch")  # the bundle is exported with torch
ROOT = Path(__file__).resolve().parents[1]
TRT_CODE = [
    "sdk/backends/tensorrt.py",
    "sdk/backends/trt_engine.py",
    "export/tensorrt.py",
    "export/trt_profiles.py",
    "sdk/cuda/__init__.py",
    "sdk/cuda/base.py",
    "sdk/cuda/cuda_python.py",
    "sdk/cuda/pycuda_binding.py",
]
# What TensorRT 11 removed (weak typing, implicit quantization) and must not appear in our code.
REMOVED = [
    r"BuilderFlag\.(FP16|INT8|BF16|FP8|INT4|FP4|DIRECT_IO)\b",
    r"OBEY_PRECISION_CONSTRAINTS",
    r"PREFER_PRECISION_CONSTRAINTS",
    r"\blayer\.precision\b",
    r"\.set_output_type\(",
    r"platform_has_fast_(fp16|int8)",
    r"int8_calibrator",
    r"IInt8\w*Calibrator",
    r"calibration_profile",
    r"quantization_flag",
    r"\.device_memory_size\b",
    r"compute_precision",
]


def test_no_symbol_removed_in_tensorrt_11():
    old = (
        "config.set_flag(trt.BuilderFlag.FP16); config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)\n"
        "layer.precision = trt.float32; layer.set_output_type(j, trt.float32); builder.platform_has_fast_fp16"
    )
    assert sum(bool(re.search(p, old)) for p in REMOVED) == 5  # the patterns do catch the old code
    for rel in TRT_CODE:
        text = (ROOT / rel).read_text()
        found = [p for p in REMOVED if re.search(p, text)]
        assert not found, f"{rel} uses symbols TensorRT 11 removed: {found}"


@pytest.fixture()
def trt_env(tmp_path_factory, tmp_path, monkeypatch, request):
    """A bundle copy (+ a stand-in fp16 clip_image graph), the stand-ins installed, engines built."""
    from export.tensorrt import build_engines
    from sdk.bundle_format import sha256_file

    version, precision, num_profiles = request.param
    path = copy_bundle(shared_bundle(tmp_path_factory), tmp_path / "b")
    manifest = json.loads((path / "manifest.json").read_text())
    shutil.copyfile(path / "clip_image.onnx", path / "clip_image.fp16.onnx")  # stands in for the FP16 export
    manifest["files"]["clip_image.fp16.onnx"] = sha256_file(path / "clip_image.fp16.onnx")
    manifest["graphs"]["clip_image"]["variants"] = {"fp16": {"file": "clip_image.fp16.onnx", "precision": "fp16"}}
    (path / "manifest.json").write_text(json.dumps(manifest))
    cuda = FakePyCuda()
    trt, log = fake_tensorrt(cuda, version)
    install(monkeypatch, cuda, trt)
    monkeypatch.setenv("ZEGFORMER_TRT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("sdk.backends.tensorrt.default_allocator", lambda: None)  # no CuPy on fake memory
    profiles = {
        "proposal": {"image": [[1, 3, 32, 32], [1, 3, 64, 96], [1, 3, 128, 128]]},
        "clip_image": {"crops": [[1, 3, 32, 32], [4, 3, 32, 32], [4, 3, 32, 32]]},
    }  # batches of <= 4
    build_engines(
        path,
        precision=precision,
        num_profiles=num_profiles,
        profiles=profiles,
        graphs=["proposal", "clip_image", "clip_dense"],
    )  # no clip_text engine: ORT runs it
    assert cuda.memory == {} and cuda.balanced()  # the parity runs freed everything
    return path, cuda, log


V10, V11 = "10.16.1.11", "11.4.0.106"


@pytest.mark.parametrize(
    "trt_env", [(V10, "fp32", 1), (V11, "fp16", 2)], indirect=True, ids=["trt10-fp32", "trt11-fp16"]
)
def test_engines_are_strongly_typed_from_the_precision_graph(trt_env):
    path, cuda, log = trt_env
    manifest = json.loads((path / "manifest.json").read_text())
    engines = manifest["engines"]
    v11 = engines["proposal"]["tensorrt"] == V11
    assert {n.flags for n in log.networks} == ({0} if v11 else {1})  # 1 << STRONGLY_TYPED on 10.x
    built_from = sorted(Path(n.onnx).name for n in log.networks)
    if v11:  # fp16: clip_image from its fp16 graph, the graphs without one from fp32 (recorded so)
        assert built_from == ["clip_dense.onnx", "clip_image.fp16.onnx", "proposal.onnx"]
        assert engines["clip_image"]["precision"] == "fp16" and engines["proposal"]["precision"] == "fp32"
        assert engines["clip_image"]["file"] == "clip_image.fp16.engine"
        assert engines["clip_image"]["onnx_file"] == "clip_image.fp16.onnx"
    else:
        assert built_from == ["clip_dense.onnx", "clip_image.onnx", "proposal.onnx"]
        assert {e["precision"] for e in engines.values()} == {"fp32"}
    for e in engines.values():
        assert manifest["files"][e["file"]] and e["num_profiles"] == (2 if v11 else 1)


@pytest.mark.parametrize(
    "trt_env", [(V10, "fp32", 1), (V11, "fp16", 2)], indirect=True, ids=["trt10-fp32", "trt11-fp16"]
)
def test_tensorrt_backend_matches_onnxruntime(trt_env):
    from sdk import Segmenter

    path, cuda, log = trt_env
    fp16 = json.loads((path / "manifest.json").read_text())["engines"]["clip_image"]["precision"] == "fp16"
    precision = "clip_image=fp16" if fp16 else "fp32"  # what the engines were built in
    features = random_text_features(len(NAMES), 32)
    segs = {}
    for backend in ("auto", "onnxruntime"):
        seg = Segmenter(path, backend=backend, device="auto", min_size=None, cache_dir=False, precision=precision)
        seg.set_vocabulary(NAMES, text_features=features[0], text_features_clip=features[1])
        segs[seg.backend.name] = seg
    trt_seg, ort_seg = segs["tensorrt"], segs["onnxruntime"]
    assert sorted(trt_seg.backend._engines) == ["clip_dense", "clip_image", "proposal"]
    assert trt_seg.backend.precision.of("clip_image") == ("fp16" if fp16 else "fp32")
    assert trt_seg.backend._fallback().precision is trt_seg.backend.precision  # the fallback runs the same plan
    log.executed.clear()
    image = block_image()
    for mode in ("cropmask", "maskpool"):
        a = trt_seg(image, mode=mode, return_probs=True)  # 10 crops in batches of the profile's 4
        b = ort_seg(image, mode=mode, return_probs=True)
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)
    assert [n for g, n, _ in log.executed if g == "clip_image"] == [4, 4, 2]  # 10 crops, profile max 4
    assert {g for g, _, _ in log.executed} == {"proposal", "clip_image", "clip_dense"}
    runs = len(log.executed)
    big = block_image(130, 100)  # 160 rows > the proposal profile's 128: ONNX Runtime fallback
    np.testing.assert_array_equal(trt_seg(big).label_map, ort_seg(big).label_map)
    assert [g for g, _, _ in log.executed[runs:]] == ["clip_image"] * 3  # the proposal ran in ONNX Runtime
    trt_seg.set_vocabulary(["zebra"])  # clip_text has no engine: ONNX Runtime
    assert trt_seg.text_graph_runs == 1  # 33 prompts: one batch of the text graph
    assert cuda.balanced()


@pytest.mark.parametrize(
    "trt_env", [(V10, "fp32", 1), (V11, "fp32", 2)], indirect=True, ids=["1-profile", "2-profiles"]
)
def test_concurrent_calls_get_their_own_profile(trt_env):
    """N profiles: at most N contexts of an engine, each on its own profile; N=1 serialises the calls."""
    from sdk.backends.tensorrt import TensorRTBackend
    from sdk.bundle import Bundle

    path, cuda, log = trt_env
    backend = TensorRTBackend(Bundle(path))
    n = backend._engines["clip_image"].num_profiles
    crops = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    want = backend._fallback().graph("clip_image").run(crops)[0]
    log.contexts.clear()
    results, errors = [], []

    def call():
        try:
            results.append(backend.clip_image(crops))
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 6 and all(np.allclose(r, want, atol=1e-5) for r in results)
    assert sorted(c.profile for c in log.contexts) == list(range(n))  # one context per profile, no more
    assert log.max_running <= n and (n == 1 or log.max_running == n)  # the stand-in asserts profile exclusivity
    backend.close()
    assert cuda.memory == {} and cuda.balanced()  # contexts' streams and buffers freed, stacks empty


@pytest.mark.parametrize("trt_env", [(V11, "fp32", 1)], indirect=True, ids=["trt11"])
def test_device_arrays_in_and_out_without_host_copies(trt_env):
    """A producer's device array (CAI only; __array__ raises) → set_tensor_address → device outputs."""
    from sdk.backends.tensorrt import TensorRTBackend
    from sdk.bundle import Bundle
    from sdk.cuda import DeviceArray

    path, cuda, log = trt_env
    backend = TensorRTBackend(Bundle(path))
    crops = np.random.default_rng(1).standard_normal((6, 3, 32, 32)).astype(np.float32)
    want = backend._fallback().graph("clip_image").run(crops)[0]
    x = FakeDeviceArray(cuda, crops, stream=None)
    out = backend.clip_image(x)  # 6 crops: two runs (4 + 2) writing into one output array
    assert isinstance(out, DeviceArray) and out.shape == want.shape
    np.testing.assert_allclose(out.copy_to_host(), want, atol=1e-5)
    syncs = cuda.syncs
    image = FakeDeviceArray(cuda, np.full((1, 3, 64, 96), 100, np.float32), stream=9)
    masks, emb = backend.proposal(image)
    assert cuda.syncs > syncs  # pycuda cannot record on a foreign stream: it waited for the device
    ref = backend._fallback().graph("proposal").run(np.full((1, 3, 64, 96), 100, np.float32))
    np.testing.assert_allclose(masks.copy_to_host(), ref[0], atol=1e-4)
    np.testing.assert_allclose(emb.copy_to_host(), ref[1], atol=1e-5)
    tokens = FakeDeviceArray(cuda, np.ones((2, 77), np.int32))
    text = backend.clip_text(tokens)  # no engine: ONNX Runtime on the host, the result uploaded again
    assert isinstance(text, DeviceArray) and text.shape[0] == 2
    del out, masks, emb, text
    backend.close()
    producers = {int(a.alloc) for a in (x, image, tokens)}
    assert set(cuda.memory) == producers and cuda.balanced()  # all that is left is the producers' memory


@pytest.mark.parametrize("trt_env", [(V10, "fp32", 1)], indirect=True, ids=["trt10"])
def test_tampered_engine_and_precision_mismatch(trt_env):
    from sdk import BundleError, EngineMismatchWarning, OptionError, Segmenter
    from sdk.backends import create_backend
    from sdk.backends.tensorrt import TensorRTBackend
    from sdk.bundle import Bundle

    path = trt_env[0]
    with pytest.warns(EngineMismatchWarning, match="built in fp32, fp16 was asked for"):
        backend = create_backend(Bundle(path), "tensorrt", "cuda", {"precision": "clip_image=fp16"})
    assert sorted(backend._engines) == ["clip_dense", "proposal"]  # clip_image: ONNX Runtime, in fp16
    assert backend.precision.of("clip_image") == backend._fallback().precision.of("clip_image") == "fp16"
    with pytest.raises(OptionError, match="PrecisionPlan"):
        TensorRTBackend(Bundle(path), precision="fp16")  # a plan comes from create_backend, not a string
    (path / "clip_image.engine").write_text("proposal")
    with pytest.raises(BundleError, match="clip_image.engine"):
        Segmenter(path, backend="tensorrt", device="cuda", cache_dir=False)


@pytest.mark.parametrize("trt_env", [(V11, "fp32", 1)], indirect=True, ids=["trt11"])
def test_unaligned_device_addresses_are_staged(trt_env, monkeypatch):
    """TensorRT refuses addresses that are not 256-byte aligned: an unaligned input and unaligned output
    chunks go through aligned buffers (device copies); without that the stand-in refuses them, and the
    refusal is a BackendError naming the tensor."""
    from sdk import BackendError
    from sdk.backends.tensorrt import TensorRTBackend
    from sdk.bundle import Bundle

    path, cuda, log = trt_env
    backend = TensorRTBackend(Bundle(path))
    crops = np.random.default_rng(2).standard_normal((6, 3, 32, 32)).astype(np.float32)
    want = backend._fallback().graph("clip_image").run(crops)[0]
    backend._engines["clip_image"].max_shape = (3, 3, 32, 32)  # chunks of 3: output rows at 3*32*4 = 384 bytes
    x = FakeDeviceArray(cuda, crops, offset=4)  # a view 4 bytes into its allocation
    out = backend.clip_image(x)
    np.testing.assert_allclose(out.copy_to_host(), want, atol=1e-5)
    assert log.refused == []
    monkeypatch.setattr("sdk.backends.tensorrt.ALIGNMENT", 1)  # as if the backend did not check
    with pytest.raises(BackendError, match="'crops' of 'clip_image'.*aligned"):
        backend.clip_image(x)
    assert log.refused and log.refused[0][0] == "crops"
    del out
    backend.close()


@pytest.mark.parametrize("trt_env", [(V10, "fp32", 1)], indirect=True, ids=["trt10"])
def test_engine_with_bf16_io_falls_back_to_onnxruntime(trt_env):
    """``trt.nptype`` raises for BF16/FP8: such an engine is not used (a warning), its graph runs on ONNX Runtime."""
    import sys

    from sdk import EngineMismatchWarning
    from sdk.backends.tensorrt import TensorRTBackend
    from sdk.bundle import Bundle

    path, cuda, log = trt_env
    log.tensor_dtypes["embeddings"] = sys.modules["tensorrt"].DataType.BF16  # clip_image's output
    with pytest.warns(EngineMismatchWarning, match="'embeddings' is DataType.BF16"):
        backend = TensorRTBackend(Bundle(path))
    assert sorted(backend._engines) == ["clip_dense", "proposal"]
    crops = np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(backend.clip_image(crops), backend._fallback().graph("clip_image").run(crops)[0])
    backend.close()


def test_graph_source_reads_the_variants_the_exporter_records():
    from export.tensorrt import graph_source

    m = {
        "graphs": {
            "clip_image": {"file": "clip_image.onnx"},
            "proposal": {"file": "proposal.onnx", "variants": {"fp16": {"file": "p16.onnx", "precision": "fp16"}}},
        },
        "files": {"clip_image.onnx": "x", "clip_image.fp16.onnx": "y"},
    }
    assert graph_source(m, "clip_image", "fp32") == "clip_image.onnx"
    assert graph_source(m, "clip_image", "fp16") is None  # a file lying about is not a variant
    assert graph_source(m, "proposal", "fp16") == "p16.onnx"
    assert graph_source(m, "proposal", "int8") is None
