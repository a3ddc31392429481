"""``sdk label`` under hostile input: every mistake is one ``error:`` line and exit 2, found in the
driver before Ray starts, and no input file is touched.

Ray is never started here: ``sdk.label.connect`` is replaced by a tripwire, so a check that
happened inside the actors (after Ray started) fails the test. Runs on the checked-in tiny bundle.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.sdk_helpers import block_image, tiny_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


@pytest.fixture
def no_ray(monkeypatch):
    import sdk.label

    def tripwire(address):
        raise AssertionError("Ray was started: the mistake was not found in the driver")

    monkeypatch.setattr(sdk.label, "connect", tripwire)


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(block_image(32, 40, seed=i)).save(folder / f"im{i}.png")
    Image.fromarray(block_image(32, 40, seed=9)).save(folder / "sub" / "deep.png")
    return folder


def snapshot(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run_label(capsys, *args: str) -> str:
    """``python -m sdk label ...`` in-process: exit 2 with one ``error:`` line, no traceback; returns it."""
    from sdk.cli import main

    try:
        rc = main(["label", *map(str, args), "--no-progress"])
    except SystemExit as e:  # refused by argparse: its usage line, then one error line
        rc = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith((" ", "usage:"))]
    assert rc == 2, err
    assert len(lines) == 1 and "error: " in lines[0] and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------------------------------- nothing overwritten
@pytest.mark.parametrize("where", ["same", "same_trailing_slash", "inside_recursive", "via_symlink", "dot"])
def test_out_may_not_be_the_input_folder(capsys, no_ray, bundle, images, tmp_path, monkeypatch, where):
    before = snapshot(images)
    extra = []
    if where == "same":
        out = images
    elif where == "same_trailing_slash":
        out = f"{images}/"
    elif where == "inside_recursive":
        out, extra = images / "sub" / "labels", ["--recursive"]
    elif where == "via_symlink":
        out = tmp_path / "link"
        out.symlink_to(images)
    else:
        monkeypatch.chdir(images)
        out = "."
    line = run_label(capsys, images, "--out", out, "--bundle", bundle, *extra)
    assert "input folder" in line
    assert snapshot(images) == before


@pytest.mark.parametrize("kind", ["txt", "csv", "parquet"])
def test_out_may_not_be_a_folder_of_listed_images(capsys, no_ray, bundle, images, tmp_path, kind):
    before = snapshot(images)
    names = [str(images / "im0.png"), "images/im1.png"]  # absolute, and relative to the list
    if kind == "parquet":
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        source = tmp_path / "list.parquet"
        pq.write_table(pa.table({"path": names}), source)
    else:
        source = tmp_path / f"list.{kind}"
        source.write_text("\n".join(names) + "\n")
    run_label(capsys, source, "--out", images, "--bundle", bundle)
    assert snapshot(images) == before


def test_out_that_is_a_file_is_refused(capsys, no_ray, bundle, images, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{images / 'im0.png'}\n")
    before = listing.read_bytes()
    assert "not a directory" in run_label(capsys, listing, "--out", listing, "--bundle", bundle)
    assert listing.read_bytes() == before


# ---------------------------------------------------------------------------------------- inputs
def _parquet(target: Path, **columns) -> Path:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), target)
    return target


def bad_inputs(tmp_path: Path, images: Path) -> dict:
    good = images / "im0.png"
    cases = {
        "list_not_utf8": (tmp_path / "a.txt", b"\xff\xfe" + str(good).encode() + b"\n"),
        "list_latin1": (tmp_path / "b.txt", f"{good}\ncaf\xe9.png\n".encode("latin-1")),
        "list_nul": (tmp_path / "c.txt", f"{good}\nx\0y.png\n".encode()),
        "list_binary": (tmp_path / "d.lst", bytes(range(256)) * 4),
        "parquet_random": (tmp_path / "e.parquet", np.random.default_rng(0).bytes(500)),
        "parquet_empty_file": (tmp_path / "f.parquet", b""),
        "parquet_magic_only": (tmp_path / "g.parquet", b"PAR1garbagePAR1"),
        "unknown_suffix": (tmp_path / "h.zip", b"PK\x03\x04"),
    }
    out = {}
    for name, (path, data) in cases.items():
        path.write_bytes(data)
        out[name] = path
    good_table = _parquet(tmp_path / "good.parquet", path=[str(good)])
    data = good_table.read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    out["parquet_truncated"] = tmp_path / "cut.parquet"
    out["parquet_int_paths"] = _parquet(tmp_path / "ints.parquet", path=[1, 2])
    out["parquet_binary_paths"] = _parquet(tmp_path / "bin.parquet", path=[b"a.png"])
    out["parquet_no_path_column"] = _parquet(tmp_path / "cols.parquet", other=["a.png"])
    out["missing"] = tmp_path / "missing.txt"
    out["empty_folder"] = tmp_path / "empty_folder"
    out["empty_folder"].mkdir()
    out["empty_list"] = tmp_path / "empty.txt"
    out["empty_list"].write_text("# nothing\n\n")
    return out


INPUT_CASES = [
    "list_not_utf8",
    "list_latin1",
    "list_nul",
    "list_binary",
    "parquet_random",
    "parquet_empty_file",
    "parquet_magic_only",
    "unknown_suffix",
    "parquet_truncated",
    "parquet_int_paths",
    "parquet_binary_paths",
    "parquet_no_path_column",
    "missing",
    "empty_folder",
    "empty_list",
]


@pytest.mark.parametrize("case", INPUT_CASES)
def test_unreadable_inputs_are_one_line(capsys, no_ray, bundle, images, tmp_path, case):
    source = bad_inputs(tmp_path, images)[case]
    line = run_label(capsys, source, "--out", tmp_path / "out", "--bundle", bundle)
    assert source.name in line or str(source) in line
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------- bundle, vocabulary, options
def _broken_bundles(bundle: Path, tmp_path: Path) -> dict:
    from tests.hostile_helpers import manifest_of, write_manifest

    out = {"not_a_bundle": tmp_path, "missing": tmp_path / "nope"}
    tampered = shutil.copytree(bundle, tmp_path / "tampered")
    with open(tampered / "clip_image.onnx", "ab") as f:
        f.write(b"x")
    out["tampered_graph"] = tampered
    bad_json = shutil.copytree(bundle, tmp_path / "bad_json")
    (bad_json / "manifest.json").write_text("{not json")
    out["manifest_not_json"] = bad_json
    wrong_type = shutil.copytree(bundle, tmp_path / "wrong_type")
    m = manifest_of(wrong_type)
    m["graphs"]["proposal"]["variants"] = "int8"
    write_manifest(wrong_type, m)
    out["variants_wrong_type"] = wrong_type
    return out


@pytest.mark.parametrize(
    "case", ["not_a_bundle", "missing", "tampered_graph", "manifest_not_json", "variants_wrong_type"]
)
def test_bad_bundles_are_found_before_ray(capsys, no_ray, bundle, images, tmp_path, case):
    target = _broken_bundles(bundle, tmp_path)[case]
    run_label(capsys, images, "--out", tmp_path / "out", "--bundle", target)
    assert not (tmp_path / "out").exists()


def vocab_cases(tmp_path: Path) -> dict:
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (tmp_path / "dup.txt").write_text("cat\ncat\n")
    (tmp_path / "empty.txt").write_text("# none\n")
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "dict.json").write_text('{"names": 3}')
    return {
        "unknown_name": "no_such_vocabulary",
        "only_separators": ";;;",
        "latin1_file": str(tmp_path / "latin1.txt"),
        "duplicate": str(tmp_path / "dup.txt"),
        "empty_file": str(tmp_path / "empty.txt"),
        "bad_json": str(tmp_path / "bad.json"),
        "json_not_list": str(tmp_path / "dict.json"),
        "too_long_name": "x" * 1001 + ";y",
        "too_many": ";".join(f"n{i}" for i in range(10_001)),
    }


@pytest.mark.parametrize(
    "case",
    [
        "unknown_name",
        "only_separators",
        "latin1_file",
        "duplicate",
        "empty_file",
        "bad_json",
        "json_not_list",
        "too_long_name",
        "too_many",
    ],
)
def test_bad_vocabularies_are_found_before_ray(capsys, no_ray, bundle, images, tmp_path, case):
    run_label(capsys, images, "--out", tmp_path / "out", "--bundle", bundle, "--vocab", vocab_cases(tmp_path)[case])
    assert not (tmp_path / "out").exists()


BAD_OPTIONS = {
    "precision_unknown": ["--precision", "int9"],
    "precision_missing_files": ["--precision", "int8"],
    "precision_mixed": ["--precision", "int8,clip_image=fp32"],
    "precision_unknown_graph": ["--precision", "head=int8"],
    "precision_backend": ["--backend", "onnxruntime", "--device", "cpu", "--precision", "bf16"],
    "precision_empty_tier": ["--precision", "clip_image="],
    "device": ["--device", "gpu7"],
    "device_cpu_tensorrt": ["--backend", "tensorrt", "--device", "cpu"],
    "workers_zero": ["--workers", "0"],
    "workers_negative": ["--workers", "-2"],
    "batch_size_zero": ["--batch-size", "0"],
    "cpus_zero": ["--cpus-per-worker", "0"],
    "cpus_nan": ["--cpus-per-worker", "nan"],
    "gpus_negative": ["--gpus-per-worker", "-1"],
    "gpus_inf": ["--gpus-per-worker", "inf"],
    "alpha_above_1": ["--alpha", "2"],
    "alpha_nan": ["--alpha", "nan"],
    "prune_negative": ["--prune-threshold", "-1"],
    "maskpool_without_dense": None,  # filled in below (needs a bundle without clip_dense)
}


@pytest.mark.parametrize("case", sorted(k for k, v in BAD_OPTIONS.items() if v))
def test_bad_options_are_found_before_ray(capsys, no_ray, bundle, images, tmp_path, case):
    run_label(capsys, images, "--out", tmp_path / "out", "--bundle", bundle, *BAD_OPTIONS[case])
    assert not (tmp_path / "out").exists()


def test_maskpool_without_dense_graph_is_found_before_ray(capsys, no_ray, bundle, images, tmp_path):
    from tests.hostile_helpers import manifest_of, write_manifest

    copy = shutil.copytree(bundle, tmp_path / "no_dense")
    m = manifest_of(copy)
    del m["graphs"]["clip_dense"]
    write_manifest(copy, m)
    assert "clip_dense" in run_label(capsys, images, "--out", tmp_path / "out", "--bundle", copy, "--mode", "maskpool")


def test_ray_failures_are_one_line():
    from sdk.label_checks import ray_failure

    class RayTaskError(Exception):
        def __init__(self, text, cause):
            super().__init__(text)
            self.cause = cause

    inner = ValueError("the real reason")
    wrapped = RayTaskError("ray::MapWorker()\nTraceback (most recent call last):\n  File ...\nValueError: x", inner)
    assert ray_failure(wrapped) == "ValueError: the real reason"
    assert ray_failure(RuntimeError("line one\n\nlast line  ")) == "RuntimeError: last line"


def test_a_valid_job_passes_every_check(no_ray, bundle, images, tmp_path):
    """The checks refuse only what is wrong: a correct job reaches the point where Ray would start."""
    from sdk.label_checks import check_job, check_out, read_inputs

    pairs = read_inputs(images)
    check_out(tmp_path / "out", images, pairs, recursive=True)
    check_job(
        {
            "bundle_dir": str(bundle),
            "backend": "onnxruntime",
            "device": "cpu",
            "mode": "cropmask",
            "min_size": None,
            "prune_threshold": 0.02,
            "vocabulary": "sky;road",
            "precision": "fp32",
        }
    )
    check_job({"bundle_dir": str(bundle), "backend": "auto", "device": "auto", "vocabulary": None, "precision": "auto"})
    assert (tmp_path / "out").is_dir() and json.dumps([p for p, _ in pairs])
