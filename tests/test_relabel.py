"""``python -m sdk relabel``: saved features labelled with a new vocabulary, no image graph, resumable.

Every output is checked against ``Segmenter(image, vocabulary)`` on the same images (label maps bit
for bit, COCO RLE decoded back); the image graphs are deleted from the bundle relabel runs with, so
any attempt to run one fails. ``label --save-features`` is checked on a local Ray when Ray is installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.sdk_helpers import block_image, copy_bundle, tiny_bundle
from tests.test_formats import decode_rle_string

REPO = Path(__file__).resolve().parents[1]
FIRST, SECOND = "sky;grass, lawn;road;car;person", "tree;dog, puppy;building;water"
IMAGE_GRAPHS = ("proposal", "clip_image", "clip_dense")
DATASET_FILES = {"_annotations.coco.json", "_label_config.json", "classes.txt", "errors.jsonl"}


@pytest.fixture(autouse=True)
def no_cache(monkeypatch):
    monkeypatch.setenv("ZEGFORMER_CACHE", "off")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def text_only_bundle(bundle, tmp_path_factory):
    """The bundle without its image graphs (files deleted): relabel must never need them."""
    path = copy_bundle(bundle, tmp_path_factory.mktemp("text_only") / "bundle")
    for graph in IMAGE_GRAPHS:
        for f in path.glob(f"{graph}.*"):
            f.unlink()
    return path


def segmenter(bundle, **kw):
    from sdk import Segmenter

    return Segmenter(bundle, backend="onnxruntime", min_size=None, threads=1, **kw)


def make_collection(bundle, root: Path, n: int, mode: str = "cropmask", storage: str = "fp32"):
    """``n`` images and their saved features; returns (images dir, features dir, {stem: image path})."""
    images, features = root / "images", root / "features"
    images.mkdir(parents=True)
    features.mkdir()
    seg = segmenter(bundle, mode=mode, vocabulary=FIRST)
    paths = {}
    for i in range(n):
        path = images / f"im{i:03d}.png"
        Image.fromarray(block_image(48 + 8 * (i % 3), 64 + 8 * (i % 4), seed=200 + i)).save(path)
        seg.encode(path).save(features / f"im{i:03d}.features.npz", storage)
        paths[f"im{i:03d}"] = path
    return images, features, paths


def expected(bundle, paths, vocab=SECOND, mode="cropmask"):
    seg = segmenter(bundle, mode=mode, vocabulary=vocab)
    return {stem: seg(path) for stem, path in paths.items()}


def relabel_args(features: Path, bundle: Path, out: Path, *extra: str):
    return [
        "relabel",
        str(features),
        "--bundle",
        str(bundle),
        "--out",
        str(out),
        "--vocab",
        SECOND,
        "--backend",
        "onnxruntime",
        "--no-progress",
        *extra,
    ]


def records(out: Path) -> int:
    return sum(1 for p in os.scandir(out) if p.name.endswith(".json") and not p.name.startswith((".", "_")))


def check_outputs(out: Path, want, bad=()) -> None:
    """Each image's files equal the Segmenter's result; the COCO JSON decodes back to the label maps."""
    import cv2

    names = {p.name for p in out.iterdir()}
    assert names == {f"{s}{x}" for s in want for x in (".png", "_overlay.png", ".json")} | DATASET_FILES
    for stem, result in want.items():
        assert np.array_equal(cv2.imread(str(out / f"{stem}.png"), cv2.IMREAD_UNCHANGED), result.label_map), stem
        record = json.loads((out / f"{stem}.json").read_text())
        assert record["class_names"] == list(result.class_names) == SECOND.split(";")
        assert [(s["index"], s["area"]) for s in record["segments"]] == [(s.index, s.area) for s in result.segments]
        overlay = np.asarray(Image.open(out / f"{stem}_overlay.png"))
        assert overlay.shape[:2][0] >= result.label_map.shape[0]
    coco = json.loads((out / "_annotations.coco.json").read_text())
    assert [c["name"] for c in coco["categories"]] == SECOND.split(";")
    assert sorted(im["file_name"] for im in coco["images"]) == sorted(f"{s}.png" for s in want)
    by_image = {im["id"]: im["file_name"][:-4] for im in coco["images"]}
    rebuilt = {}
    for ann in coco["annotations"]:
        stem = by_image[ann["image_id"]]
        canvas = rebuilt.setdefault(stem, np.full(want[stem].size, -1))
        canvas[decode_rle_string(ann["segmentation"])] = ann["category_id"] - 1
    assert all(np.array_equal(rebuilt[s], r.label_map) for s, r in want.items())
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert sorted(e["image"] for e in errors) == sorted(bad)


def run_cli(argv, capsys):
    from sdk.cli import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_relabel_equals_the_segmenter_without_image_graphs(bundle, text_only_bundle, tmp_path, capsys):
    _, features, paths = make_collection(bundle, tmp_path, 8)
    (features / "broken.features.npz").write_bytes(b"PK\x03\x04 not a zip at all")
    out = tmp_path / "out"
    code, stdout, _ = run_cli(relabel_args(features, text_only_bundle, out, "--workers", "2"), capsys)
    assert code == 1, stdout  # 1: a file failed
    assert "9 feature files: 8 relabelled" in stdout
    check_outputs(out, expected(bundle, paths), bad=["broken"])
    error = json.loads((out / "errors.jsonl").read_text())
    assert "BundleError" in error["error"] and "broken.features.npz" in error["error"]


@pytest.mark.parametrize("mode", ["pruned", "maskpool", "proposal"])
def test_relabel_other_modes(bundle, text_only_bundle, tmp_path, capsys, mode):
    _, features, paths = make_collection(bundle, tmp_path, 3, mode=mode, storage="fp32")
    out = tmp_path / "out"
    code, stdout, _ = run_cli(relabel_args(features, text_only_bundle, out), capsys)
    assert code == 0, stdout
    check_outputs(out, expected(bundle, paths, mode=mode))


def test_relabel_resumes_after_it_is_killed(bundle, text_only_bundle, tmp_path):
    n = 120
    _, features, paths = make_collection(bundle, tmp_path, n)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "sdk", *relabel_args(features, text_only_bundle, out, "--workers", "1")]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None and (not out.is_dir() or records(out) < 5):
            time.sleep(0.01)
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        proc.kill()
    finally:
        proc.wait(30)
    done = records(out)
    assert 5 <= done < n, f"relabel was not killed mid-run ({done} done)"
    partial = sorted(p.stem for p in out.glob("im*.json"))[0]
    (out / f"{partial}.json").unlink()  # partial: label map without a record
    (out / f"{partial}.png").write_bytes(b"half-written")
    (out / f".{partial}.tmp-0123456789ab.png").write_bytes(b"a killed writer's temporary")

    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = next(line for line in run.stdout.splitlines() if line.startswith(f"{n} feature files"))
    assert f"{n - done + 1} relabelled" in summary and f"{done - 1} already complete" in summary, summary
    check_outputs(out, expected(bundle, paths))

    before = {p.name: p.stat().st_mtime_ns for p in out.glob("im*")}
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert "0 relabelled" in again.stdout and f"{n} already complete, 0 errors" in again.stdout, again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("im*")} == before  # complete images untouched


def test_relabel_refusals_are_one_line(bundle, tmp_path, capsys):
    from sdk.bundle_format import sha256_file

    _, features, _ = make_collection(bundle, tmp_path, 2)
    other = copy_bundle(bundle, tmp_path / "other")  # another bundle: its background differs
    np.save(other / "background.npy", np.load(other / "background.npy") * 2)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["files"]["background.npy"] = sha256_file(other / "background.npy")
    (other / "manifest.json").write_text(json.dumps(manifest))

    for argv, words in [
        (relabel_args(features, other, tmp_path / "o1"), "was encoded with another bundle"),
        (relabel_args(features, bundle, features), "is the input folder"),
        (relabel_args(features, bundle, tmp_path / "o2", "--mode", "maskpool"), "was encoded in mode 'cropmask'"),
        (relabel_args(tmp_path / "images", bundle, tmp_path / "o3"), "no .features.npz files"),
    ]:
        code, _, err = run_cli(argv, capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], err
    assert not (tmp_path / "o1").exists() or not any((tmp_path / "o1").glob("im*"))
    assert sorted(p.name for p in features.iterdir()) == ["im000.features.npz", "im001.features.npz"]


def test_compact_features_relabel_close_to_exact(bundle, tmp_path, capsys):
    _, features, paths = make_collection(bundle, tmp_path, 4, storage="uint8")
    out = tmp_path / "out"
    code, stdout, _ = run_cli(relabel_args(features, bundle, out), capsys)
    assert code == 0, stdout
    want = expected(bundle, paths)
    import cv2

    agree = np.mean(
        [(cv2.imread(str(out / f"{s}.png"), cv2.IMREAD_UNCHANGED) == r.label_map).mean() for s, r in want.items()]
    )
    assert agree >= 0.97, agree


# ---------------------------------------------------------------------------- label --save-features on Ray
def test_label_saves_features_that_relabel_reads(bundle, text_only_bundle, tmp_path, capsys):
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("ray is not installed (.ci/run installs the [ray] extra)")
        pytest.skip("ray not installed: pip install 'zegformer-sdk[ray]'")
    images, _, paths = make_collection(bundle, tmp_path, 4, mode="pruned")
    saved, labels = tmp_path / "saved", tmp_path / "labels"
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=200 * 1024**2,
        configure_logging=False,
        log_to_driver=False,
    )
    try:
        code, stdout, err = run_cli(
            [
                "label",
                str(images),
                "--bundle",
                str(bundle),
                "--out",
                str(labels),
                "--vocab",
                FIRST,
                "--mode",
                "pruned",
                "--min-size",
                "none",
                "--backend",
                "onnxruntime",
                "--workers",
                "2",
                "--batch-size",
                "2",
                "--no-progress",
                "--save-features",
                str(saved),
            ],
            capsys,
        )
    finally:
        ray.shutdown()
    assert code == 0, stdout + err
    assert sorted(p.name for p in saved.iterdir()) == sorted(f"{s}.features.npz" for s in paths)
    first = expected(bundle, paths, vocab=FIRST, mode="pruned")
    import cv2

    for stem, result in first.items():  # label's own outputs are those of seg(image) with --save-features too
        assert np.array_equal(cv2.imread(str(labels / f"{stem}.png"), cv2.IMREAD_UNCHANGED), result.label_map)
    out = tmp_path / "relabelled"
    code, stdout, _ = run_cli(relabel_args(saved, text_only_bundle, out), capsys)
    assert code == 0, stdout
    check_outputs(out, expected(bundle, paths, mode="pruned"))
    shutil.rmtree(out)
