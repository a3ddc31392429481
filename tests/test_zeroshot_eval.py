"""The GZSS evaluation's precision axis: agreement with the faithful map, computed independently."""

from __future__ import annotations

import numpy as np
import pytest

from tests.sdk_helpers import block_image, tiny_bundle

NAMES = ["sky", "grass", "road", "lime wavy"]


class Blocks:
    """Three block images with labels; the last class is unseen."""

    class_names = NAMES
    seen = [True, True, True, False]

    def __len__(self) -> int:
        return 3

    def load(self, i: int):
        image = block_image(64, 96, seed=10 + i)
        label = (np.arange(64 * 96).reshape(64, 96) // 1000 % len(NAMES)).astype(np.int64)
        return image, label


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


def maps(bundle, backend: str, precision: str, mode: str):
    from sdk import Segmenter

    seg = Segmenter(
        str(bundle),
        backend=backend,
        device="cpu",
        min_size=None,
        cache_dir=False,
        vocabulary=NAMES,
        precision=precision,
    )
    return [np.asarray(seg(Blocks().load(i)[0], mode=mode).label_map) for i in range(3)]


def test_configurations_put_the_faithful_reference_first():
    from train.zeroshot_eval import configurations

    assert configurations(["onnxruntime", "openvino", "torch"], ["fp32", "bf16", "int8"]) == [
        ("onnxruntime", "fp32"),
        ("onnxruntime", "int8"),
        ("openvino", "fp32"),
        ("openvino", "bf16"),
        ("openvino", "int8"),
        ("torch", "fp32"),
    ]
    assert configurations(["onnxruntime", "openvino"], ["fp32", "clip_image=int8", "proposal=bf16"]) == [
        ("onnxruntime", "fp32"),
        ("onnxruntime", "clip_image=int8"),
        ("openvino", "fp32"),
        ("openvino", "clip_image=int8"),
        ("openvino", "proposal=bf16"),
    ]
    with pytest.raises(ValueError, match="fp32"):
        configurations(["openvino"], ["bf16"])


def test_agreements_are_with_the_faithful_map_and_the_same_mode_in_fp32(bundle):
    pytest.importorskip("openvino")
    from train.zeroshot_eval import evaluate_bundle

    records = evaluate_bundle(
        bundle,
        Blocks(),
        modes=("cropmask", "proposal"),
        backends=("onnxruntime", "openvino"),
        precisions=("fp32", "bf16"),
    )
    assert [r["name"] for r in records] == [
        "onnxruntime/fp32/cropmask",
        "onnxruntime/fp32/proposal",
        "openvino/fp32/cropmask",
        "openvino/fp32/proposal",
        "openvino/bf16/cropmask",
        "openvino/bf16/proposal",
    ]
    by = {r["name"]: r for r in records}
    faithful = maps(bundle, "onnxruntime", "fp32", "cropmask")
    proposal = maps(bundle, "onnxruntime", "fp32", "proposal")
    bf16 = maps(bundle, "openvino", "bf16", "proposal")
    assert by["onnxruntime/fp32/cropmask"]["agreement"] == 1.0
    assert by["onnxruntime/fp32/proposal"]["agreement"] == pytest.approx(
        np.mean([np.mean(a == b) for a, b in zip(proposal, faithful)])
    )
    assert by["openvino/bf16/proposal"]["agreement"] == pytest.approx(
        np.mean([np.mean(a == b) for a, b in zip(bf16, faithful)])
    )
    assert by["openvino/bf16/proposal"]["agreement_fp32"] == pytest.approx(
        np.mean([np.mean(a == b) for a, b in zip(bf16, proposal)])
    )
    assert "agreement_fp32" not in by["openvino/fp32/proposal"]
    assert by["onnxruntime/fp32/cropmask"]["clip_query_fraction"] == 1.0
    # takeovers, counted here straight from the maps: every pair with >= 30 % of the truth's pixels
    truth = [Blocks().load(i)[1] for i in range(3)]
    expected = []
    for g in range(len(NAMES)):
        at = np.concatenate([(t == g).ravel() for t in truth])
        got = np.concatenate([p.ravel() for p in faithful])[at]
        shares = [(NAMES[g], NAMES[p], np.mean(got == p)) for p in range(len(NAMES)) if p != g]
        expected += [x for x in shares if x[2] >= 0.3]
    reported = {(t["truth"], t["predicted"]): t["share"] for t in by["onnxruntime/fp32/cropmask"]["takeovers"]}
    assert expected and reported == pytest.approx({(g, p): s for g, p, s in expected})


def test_takeover_lines_group_catch_alls_first():
    from train.zeroshot_eval import takeover_lines

    record = {"mode": "cropmask", "backend": "onnxruntime", "precision": "fp32"}
    taken = [
        {"truth": "red plain", "predicted": "red striped", "share": 0.95},
        {"truth": "teal wavy", "predicted": "teal striped", "share": 0.8},
        {"truth": "teal plain", "predicted": "teal striped", "share": 0.4},
    ]
    lines = takeover_lines({**record, "takeovers": taken})
    assert "(cropmask, onnxruntime fp32)" in lines[0]
    assert lines[1:] == ["  teal striped ← teal wavy 80 %, teal plain 40 %", "  red striped ← red plain 95 %"]
    assert takeover_lines({**record, "takeovers": []})[0].startswith("No class lost 30 %")
    assert takeover_lines(record) == []  # a record written before takeovers were kept says nothing
