"""The command line, image formats through a Segmenter, and the SDK without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.sdk_helpers import block_image, tiny_bundle

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


def test_cli_on_a_folder(bundle, tmp_path, capsys):
    import cv2

    from sdk.cli import main

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(block_image(seed=1)).save(images / "a.png")
    Image.fromarray(block_image(60, 80, seed=2)).save(images / "b.jpg")
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    rc = main(
        [
            "segment",
            str(images),
            "--bundle",
            str(bundle),
            "--out",
            str(out),
            "--min-size",
            "none",
            "--backend",
            "onnxruntime",
            "--vocab",
            "sky;grass;road",
            "--mode",
            "proposal",
            "--no-progress",
        ]
    )
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "a.json",
        "a.png",
        "a_overlay.png",
        "b.json",
        "b.png",
        "b_overlay.png",
    ]
    labels = cv2.imread(str(out / "a.png"), cv2.IMREAD_UNCHANGED)
    assert labels.shape == (90, 120) and labels.dtype == np.uint8 and labels.max() < 3
    record = json.loads((out / "a.json").read_text())
    assert record["class_names"] == ["sky", "grass", "road"]
    assert sum(s["area"] for s in record["segments"]) == 90 * 120
    assert {s["index"] for s in record["segments"]} == set(np.unique(labels).tolist())
    assert record["timings_ms"]["total"] > 0 and record["info"]["mode"] == "proposal"
    overlay = cv2.imread(str(out / "b_overlay.png"))
    assert overlay.shape[0] >= 60 and overlay.shape[1] > 80  # image + legend panel


def test_cli_info_and_errors(bundle, tmp_path, capsys):
    from sdk.cli import main

    assert main(["info", str(bundle)]) == 0
    text = capsys.readouterr().out
    assert "10 queries" in text and "proposal, clip_image, clip_text, clip_dense" in text
    assert main(["info", str(tmp_path)]) == 2
    assert "error:" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    rc = main(
        [
            "segment",
            str(bad),
            "--bundle",
            str(bundle),
            "--out",
            str(tmp_path / "o"),
            "--mode",
            "proposal",
            "--backend",
            "onnxruntime",
            "--no-progress",
        ]
    )
    assert rc == 1  # per-image failures are reported, the run continues


def test_cli_video(bundle, tmp_path):
    import cv2

    from sdk.cli import main

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (96, 64))
    for i in range(3):
        writer.write(np.ascontiguousarray(block_image(64, 96, seed=i)[..., ::-1]))
    writer.release()
    argv = [
        "segment",
        "--video",
        str(video),
        "--bundle",
        str(bundle),
        "--out",
        str(tmp_path / "o"),
        "--mode",
        "proposal",
        "--min-size",
        "none",
        "--backend",
        "onnxruntime",
        "--no-progress",
    ]
    assert main(argv) == 0
    target = tmp_path / "o" / "clip_overlay.mp4"
    capture = cv2.VideoCapture(str(target))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    assert sorted(p.name for p in target.parent.iterdir()) == ["clip_overlay.mp4"]  # no temporary left
    before = target.read_bytes()
    assert main(argv) == 2  # an earlier run's video: refused, kept
    assert target.read_bytes() == before
    assert main([*argv, "--skip-existing"]) == 0 and target.read_bytes() == before
    target.write_bytes(b"replaced below")
    assert main([*argv, "--overwrite"]) == 0
    assert int(cv2.VideoCapture(str(target)).get(cv2.CAP_PROP_FRAME_COUNT)) == 3


def test_image_formats_through_segmenter(bundle):
    from sdk import Segmenter

    seg = Segmenter(bundle, backend="onnxruntime", mode="proposal", min_size=None, cache_dir=False)
    rgb = block_image(seed=7)
    base = seg(rgb, return_probs=True)
    gray = rgb[..., 0]
    np.testing.assert_array_equal(seg(gray).label_map, seg(np.repeat(gray[..., None], 3, 2)).label_map)
    rgba = np.concatenate([rgb, np.zeros((*rgb.shape[:2], 1), np.uint8)], 2)
    np.testing.assert_array_equal(seg(rgba, return_probs=True).probs, base.probs)
    np.testing.assert_array_equal(seg(rgb.astype(np.uint16) * 256, return_probs=True).probs, base.probs)
    np.testing.assert_array_equal(seg(rgb[..., ::-1], bgr=True, return_probs=True).probs, base.probs)
    bgr_seg = Segmenter(bundle, backend="onnxruntime", mode="proposal", min_size=None, cache_dir=False, bgr=True)
    np.testing.assert_array_equal(bgr_seg(rgb[..., ::-1], return_probs=True).probs, base.probs)


def test_sdk_runs_without_torch(bundle, tmp_path):
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any "import torch" now raises ImportError
        import numpy as np
        import sdk
        from sdk import Segmenter
        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
        seg = Segmenter({str(bundle)!r}, backend="auto", min_size=None, cache_dir={str(tmp_path)!r})
        result = seg(image, vocabulary=["zebra", "sky, heaven"], return_probs=True)
        assert result.label_map.shape == (50, 70) and result.probs.shape == (2, 50, 70)
        assert seg.backend.name == "onnxruntime"
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules if sys.modules[m] is not None)
        print("OK", sdk.__version__, sorted(result.timings))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("OK")


# ---------------------------------------------------------------------------- one registration, shared options
def test_every_command_is_registered_the_same_way():
    """Each subcommand comes from its module's register(), sets a handler, and shares the Segmenter options."""
    import importlib

    from sdk.cli import COMMANDS, build_parser

    parser = build_parser()
    common = [
        "--bundle",
        "b",
        "--vocab",
        "cat;tree,bush",
        "--precision",
        "int8",
        "--min-size",
        "none",
        "--backend",
        "onnxruntime",
        "--device",
        "cpu",
        "--mode",
        "proposal",
        "--prune-threshold",
        "0.1",
    ]
    argv = {
        "segment": ["segment", "x.png", *common],
        "info": ["info", "b"],
        "demo": ["demo", *common],
        "label": ["label", "in", "--out", "o", *common],
        "relabel": ["relabel", "in", "--out", "o", *common],
        "serve": ["serve", *common],
    }
    assert set(argv) == set(COMMANDS)
    for name in COMMANDS:
        module = importlib.import_module(f"sdk.commands.{name}")
        args = parser.parse_args(argv[name])
        assert callable(args.handler) and callable(module.register)
        if name != "info":
            assert (args.precision, args.vocab, args.min_size, args.mode) == ("int8", "cat;tree,bush", None, "proposal")


@pytest.mark.parametrize(
    "command", [["segment", "x.png"], ["label", "in", "--out", "o"], ["relabel", "in", "--out", "o"]]
)
@pytest.mark.parametrize("alpha, ok", [("0.3", True), ("1", True), ("2", False), ("-0.1", False), ("nan", False)])
def test_output_options_are_checked_alike(command, alpha, ok, capsys):
    """--alpha and --label-png are one declaration for segment and label (label --alpha was unchecked)."""
    from sdk.cli import build_parser

    argv = [*command, "--bundle", "b", "--alpha", alpha, "--label-png", "palette"]
    if ok:
        args = build_parser().parse_args(argv)
        assert args.alpha == float(alpha) and args.label_png == "palette"
    else:
        with pytest.raises(SystemExit):
            build_parser().parse_args(argv)
        assert "not an opacity in [0, 1]" in capsys.readouterr().err


def test_segment_writes_a_palette_label_png(bundle, tmp_path):
    """--label-png palette on segment: the label map is an indexed PNG carrying the class list; the record
    is the one label writes."""
    from sdk.cli import main
    from sdk.formats import load_label_png
    from sdk.outputs import SUFFIXES

    image = tmp_path / "a.png"
    Image.fromarray(block_image(seed=3)).save(image)
    out = tmp_path / "out"
    rc = main(
        [
            "segment",
            str(image),
            "--bundle",
            str(bundle),
            "--out",
            str(out),
            "--min-size",
            "none",
            "--backend",
            "onnxruntime",
            "--vocab",
            "sky;grass, lawn;road",
            "--mode",
            "proposal",
            "--no-progress",
            "--label-png",
            "palette",
            "--alpha",
            "0.2",
        ]
    )
    assert rc == 0 and sorted(p.name for p in out.iterdir()) == sorted(f"a{s}" for s in SUFFIXES)
    labels, names = load_label_png(out / "a.png")
    assert names == ["sky", "grass, lawn", "road"]
    assert Image.open(out / "a.png").mode == "P"
    record = json.loads((out / "a.json").read_text())
    assert {s["index"] for s in record["segments"]} == set(np.unique(labels).tolist())
    assert all(len(s["bbox"]) == 4 and s["rle"]["size"] == list(labels.shape) for s in record["segments"])


def test_a_new_output_format_is_one_registry_entry(bundle, tmp_path, monkeypatch):
    """The docs/extending.md example: one ImageOutput added to sdk.outputs.OUTPUTS is written by segment,
    named in the record, counted for completeness and kept clear of other files' names."""
    from sdk import outputs
    from sdk.cli import main

    def classes_txt(path, ctx):
        path.write_text("".join(f"{s['name']}\t{s['area']}\n" for s in ctx.record["segments"]), encoding="utf-8")

    formats = (*outputs.OUTPUTS[:-1], outputs.ImageOutput("classes", "_classes.txt", classes_txt), outputs.OUTPUTS[-1])
    monkeypatch.setattr(outputs, "OUTPUTS", formats)
    monkeypatch.setattr(outputs, "SUFFIXES", tuple(o.suffix for o in formats))
    out = tmp_path / "o"
    out.mkdir()
    (out / "b_classes.txt").write_text("a file that is not ours")
    for name, seed in (("a.png", 4), ("b.png", 5)):
        Image.fromarray(block_image(seed=seed)).save(tmp_path / name)
    rc = main(
        [
            "segment",
            str(tmp_path / "a.png"),
            str(tmp_path / "b.png"),
            "--bundle",
            str(bundle),
            "--out",
            str(out),
            "--min-size",
            "none",
            "--backend",
            "onnxruntime",
            "--vocab",
            "sky;grass;road",
            "--mode",
            "proposal",
            "--no-progress",
        ]
    )
    assert rc == 0
    record = json.loads((out / "a.json").read_text())
    assert record["classes"] == "a_classes.txt"
    lines = (out / "a_classes.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in lines] == [s["name"] for s in record["segments"]]
    assert (out / "b_classes.txt").read_text() == "a file that is not ours"  # b's outputs went to b_1.*
    assert json.loads((out / "b_1.json").read_text())["classes"] == "b_1_classes.txt"
    assert outputs.is_complete(out, "a") and outputs.is_complete(out, "b_1")
    (out / "a_classes.txt").unlink()
    assert not outputs.is_complete(out, "a")


def test_a_new_subcommand_is_one_module_and_one_name(bundle, monkeypatch, capsys):
    """The docs/extending.md example: a module with register(sub) listed in sdk.cli.COMMANDS."""
    import types

    from sdk import cli
    from sdk.commands.options import add_segmenter_arguments, segmenter_kwargs

    def register(sub):
        p = sub.add_parser("classes", help="print the vocabulary a Segmenter would use")
        add_segmenter_arguments(p)
        p.set_defaults(handler=run)
        return p

    def run(args):
        from sdk import Segmenter

        print("\n".join(Segmenter(**segmenter_kwargs(args)).class_names))
        return 0

    module = types.ModuleType("sdk.commands.classes")
    module.register = register
    monkeypatch.setitem(sys.modules, "sdk.commands.classes", module)
    monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, "classes"))
    assert (
        cli.main(
            [
                "classes",
                "--bundle",
                str(bundle),
                "--vocab",
                "sky; tree,bush",
                "--backend",
                "onnxruntime",
                "--mode",
                "proposal",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.splitlines() == ["sky", "tree, bush"]
    assert cli.main(["classes", "--bundle", str(bundle / "missing")]) == 2  # SegmenterError: one line, exit 2
    assert capsys.readouterr().err.startswith("error: ")
