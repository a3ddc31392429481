"""ONNX Runtime I/O binding (the path the CUDA provider takes with device arrays), run on the CPU provider.

On a GPU the bound buffers are CuPy arrays; here they are host arrays bound by pointer, which runs
the same binding code (bind by pointer, outputs allocated by ONNX Runtime, read back as arrays) and
must give exactly ``session.run``'s numbers.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from sdk.backends import REGISTRY
from sdk.backends.onnxruntime import OnnxRuntimeBackend
from sdk.backends.ort_binding import BoundRunner, buffer_pointer, ortvalue_to_numpy
from tests.sdk_helpers import NAMES, block_image, random_text_features, tiny_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


@pytest.mark.parametrize("graph, batch", [("clip_image", 5), ("proposal", 1)])
def test_bound_runner_gives_session_runs_outputs(bundle, graph, batch):
    from sdk.bundle import Bundle

    ort = OnnxRuntimeBackend(Bundle(bundle), "cpu").graph(graph)
    shape = [batch] + [d if isinstance(d, int) else 64 for d in ort.session.get_inputs()[0].shape[1:]]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    bound = BoundRunner(ort.session, ort.input_name, ort.outputs, "cpu", 0, ortvalue_to_numpy)
    got, want = bound(x), ort.session.run(ort.outputs, {ort.input_name: x})
    assert [o.shape for o in got] == [o.shape for o in want]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_buffer_pointer_reads_numpy_and_cuda_array_interface():
    x = np.zeros((2, 3), np.float32)
    assert buffer_pointer(x) == x.ctypes.data

    class Device:  # what CuPy, torch and Numba device arrays expose
        __cuda_array_interface__ = {"data": (123456, False), "shape": (2, 3), "typestr": "<f4", "version": 3}

    assert buffer_pointer(Device()) == 123456


@pytest.mark.parametrize("mode", ["cropmask", "pruned", "maskpool"])
def test_segmenter_through_io_binding_matches_session_run(bundle, mode, monkeypatch):
    from sdk import Segmenter

    monkeypatch.setitem(
        REGISTRY,
        "ort-bound",
        replace(
            REGISTRY["onnxruntime"],
            name="ort-bound",
            factory=lambda b, device, plan, options: OnnxRuntimeBackend(b, "cpu", precision=plan, io_binding=True),
        ),
    )
    features = random_text_features(len(NAMES), 32)
    outs = []
    for backend in ("onnxruntime", "ort-bound"):
        seg = Segmenter(bundle, backend=backend, cache_dir=False, min_size=64, clip_batch=3)
        seg.set_vocabulary(NAMES, text_features=features[0], text_features_clip=features[1])
        outs.append(seg(block_image(90, 120, seed=3), mode=mode, return_probs=True))
    assert all(g.bound is not None for g in seg.backend._graphs.values())
    np.testing.assert_array_equal(outs[1].label_map, outs[0].label_map)
    np.testing.assert_array_equal(outs[1].probs, outs[0].probs)
