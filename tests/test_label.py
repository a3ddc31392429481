"""``sdk label`` on a real local Ray (2 CPUs): a killed worker, a killed driver, resuming, errors.

One Ray instance serves the module (its start-up is the slow part); every run is checked against
the serial Segmenter, file by file, and the COCO RLE is decoded back to the label maps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.sdk_helpers import block_image, shared_bundle
from tests.test_formats import decode_rle_string

pytest.importorskip("torch")  # the bundle is exported with torch
REPO = Path(__file__).resolve().parents[1]
VOCAB = "sky;grass, lawn;road;car;person"
GOOD, BAD = 48, ("broken.png", "truncated.jpg")
DATASET_FILES = {"_annotations.coco.json", "_label_config.json", "classes.txt", "errors.jsonl"}


def require(module: str):
    """The optional package, skipped without it (a failure in CI, which installs it)."""
    try:
        return __import__(module)
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{module} is not installed (.ci/run installs the [ray] extra)")
        pytest.skip(f"{module} not installed: pip install 'zegformer-sdk[ray]'")


@pytest.fixture(scope="module")
def ray_address():
    ray = require("ray")
    require("ray.data")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=200 * 1024**2,
        configure_logging=False,
        log_to_driver=False,
    )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return shared_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("label_images")
    for i in range(GOOD):
        Image.fromarray(block_image(48 + 8 * (i % 4), 64 + 8 * (i % 3), seed=100 + i)).save(folder / f"im{i:02d}.png")
    (folder / BAD[0]).write_bytes(b"this is not a PNG")
    (folder / BAD[1]).write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF truncated")
    return folder


@pytest.fixture(scope="module")
def expected(bundle, images):
    """The serial Segmenter's label maps, per output stem."""
    from sdk import Segmenter

    seg = Segmenter(bundle, backend="onnxruntime", min_size=None, threads=1, vocabulary=VOCAB)
    return {f"im{i:02d}": seg(images / f"im{i:02d}.png") for i in range(GOOD)}


def label_args(images: Path, bundle: Path, out: Path, *extra: str):
    return [
        "label",
        str(images),
        "--bundle",
        str(bundle),
        "--out",
        str(out),
        "--vocab",
        VOCAB,
        "--min-size",
        "none",
        "--backend",
        "onnxruntime",
        "--workers",
        "2",
        "--batch-size",
        "2",
        "--no-progress",
        *extra,
    ]


def records(out: Path) -> int:
    return sum(1 for p in os.scandir(out) if p.name.endswith(".json") and not p.name.startswith((".", "_")))


def check_outputs(out: Path, expected) -> dict:
    """Every image's files exist once and equal the serial result; the dataset files agree."""
    import cv2

    names = {p.name for p in out.iterdir()}
    want = {f"{s}{suffix}" for s in expected for suffix in (".png", "_overlay.png", ".json")} | DATASET_FILES
    assert names == want, f"missing {sorted(want - names)[:5]}, unexpected {sorted(names - want)[:5]}"
    for stem, result in expected.items():
        labels = cv2.imread(str(out / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(labels, result.label_map), stem
        record = json.loads((out / f"{stem}.json").read_text())
        assert record["class_names"] == list(result.class_names)
        assert [s["index"] for s in record["segments"]] == [s.index for s in result.segments]
        for s in record["segments"]:
            assert np.array_equal(decode_rle_string(s["rle"]), result.label_map == s["index"])
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert sorted(e["image"] for e in errors) == sorted(BAD) and all("ImageError" in e["error"] for e in errors)
    coco = json.loads((out / "_annotations.coco.json").read_text())
    assert [c["name"] for c in coco["categories"]] == VOCAB.split(";")
    assert sorted(im["file_name"] for im in coco["images"]) == [f"{s}.png" for s in sorted(expected)]
    by_image = {im["id"]: im for im in coco["images"]}
    rebuilt = {}
    for ann in coco["annotations"]:
        stem = by_image[ann["image_id"]]["file_name"][:-4]
        canvas = rebuilt.setdefault(stem, np.full(expected[stem].size, -1))
        canvas[decode_rle_string(ann["segmentation"])] = ann["category_id"] - 1
    assert all(np.array_equal(rebuilt[s], r.label_map) for s, r in expected.items())
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
    assert (out / "classes.txt").read_text().splitlines() == VOCAB.split(";")
    return coco


def actor_processes():
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if cmd.startswith("ray::") and "LabelWorker" in cmd:
            found.append(p)
    return found


def test_label_survives_a_killed_worker(ray_address, bundle, images, expected, tmp_path):
    """SIGKILL one Segmenter actor mid-job: Ray restarts it and retries its batch; nothing lost or doubled."""
    from sdk.cli import build_parser

    out = tmp_path / "out"
    killed = {}

    def kill_one_worker():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            done = records(out) if out.is_dir() else 0
            workers = actor_processes()
            if done >= 4 and workers:
                killed.update(pid=workers[0].pid, done=done)
                os.kill(workers[0].pid, signal.SIGKILL)
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one_worker, daemon=True)
    killer.start()
    args = build_parser().parse_args(label_args(images, bundle, out))
    assert args.handler(args) == 1  # 1: some images failed (the planted bad ones)
    killer.join(5)
    assert killed and killed["done"] < GOOD, f"the worker was not killed mid-job: {killed}"
    check_outputs(out, expected)


def test_label_resumes_after_the_driver_is_killed(ray_address, bundle, images, expected, tmp_path):
    """Kill the driver, then plant a partial image and a stale temporary: the re-run completes exactly."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "sdk", *label_args(images, bundle, out, "--ray", ray_address)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    driver = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and driver.poll() is None and (not out.is_dir() or records(out) < 6):
            time.sleep(0.02)
        assert driver.poll() is None, driver.stdout.read().decode()[-3000:]
        driver.kill()
    finally:
        driver.wait(30)
    done = records(out)
    assert 6 <= done < GOOD, f"the driver was not killed mid-job ({done} done)"
    partial = sorted(p.stem for p in out.glob("im*.json"))[0]
    (out / f"{partial}.json").unlink()  # partial: label map without a record
    (out / f"{partial}.png").write_bytes(b"half-written")
    (out / f".{partial}.tmp-0123456789ab.png").write_bytes(b"a killed writer's temporary")

    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    summary = next(line for line in run.stdout.splitlines() if line.startswith(f"{GOOD + 2} images"))
    skipped = int(summary.split(",")[-2].split()[0])
    labelled = int(summary.split(":")[1].split()[0])
    assert skipped >= done - 1 and labelled + skipped == GOOD, summary
    check_outputs(out, expected)

    before = {p.name: p.stat().st_mtime_ns for p in out.glob("im*")}
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert "0 labelled" in again.stdout and f"{GOOD} already complete, 2 errors" in again.stdout, again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("im*")} == before  # complete images untouched


def test_inputs_list_parquet_and_settings(bundle, images, tmp_path):
    """A list file and a Parquet table name the same images; other settings on the same --out are refused."""
    from sdk.errors import SegmenterError
    from sdk.label import check_settings, make_items, read_inputs

    listing = tmp_path / "images.txt"
    listing.write_text(f"# images\n{images}/im01.png\n\n{images}/im00.png\nsub/_annotations.coco.png\n")
    pairs = read_inputs(listing)
    assert [name for _, name in pairs] == [f"{images}/im01.png", f"{images}/im00.png", "sub/_annotations.coco.png"]
    assert pairs[2][0] == str(tmp_path / "sub/_annotations.coco.png")  # relative to the list file
    stems = [it.stem for it in make_items(pairs + [("x/im00.png", "x/im00.png")])]
    assert stems == ["im01", "im00", "_annotations.coco_1", "im00_1"]  # unique, never a dataset file's name
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = tmp_path / "images.parquet"
    pq.write_table(pa.table({"id": [1, 2], "image": [f"{images}/im03.png", f"{images}/im02.png"]}), table)
    assert [p for p, _ in read_inputs(table)] == [f"{images}/im03.png", f"{images}/im02.png"]
    with pytest.raises(SegmenterError, match="--column"):
        read_inputs(table, column="nope")
    check_settings(tmp_path, {"vocabulary": "a;b"})
    check_settings(tmp_path, {"vocabulary": "a;b"})
    with pytest.raises(SegmenterError, match="vocabulary"):
        check_settings(tmp_path, {"vocabulary": "a;c"})
