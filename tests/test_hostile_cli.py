"""Hostile use of the command lines and of files on disk: CLI output paths, export publishing,
training config values, run folders and signals. Each ends in a one-line error (or works) and
nothing is lost: inputs and earlier results are compared by hash."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.sdk_helpers import block_image, copy_bundle, shared_bundle

pytest.importorskip("torch")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return shared_bundle(tmp_path_factory)


def hashes(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def images(folder: Path, names=("a.png", "b.jpg")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.fromarray(block_image(40, 56, seed=i)).save(folder / name)
    return folder


def segment(bundle, *args):
    from sdk.cli import main

    return main(
        [
            "segment",
            *map(str, args),
            "--bundle",
            str(bundle),
            "--min-size",
            "none",
            "--mode",
            "proposal",
            "--backend",
            "onnxruntime",
            "--no-progress",
            "--vocab",
            "sky;road",
        ]
    )


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


# ====================================================================== sdk segment: where outputs go
def test_out_equal_to_input_folder_is_refused(bundle, tmp_path, capsys):
    src = images(tmp_path / "photos")
    before = hashes(src)
    assert segment(bundle, src, "--out", src) == 2
    assert "input folder" in one_line_error(capsys.readouterr().err)
    assert hashes(src) == before


def test_out_inside_input_folder_with_recursive_is_refused(bundle, tmp_path, capsys):
    src = images(tmp_path / "photos")
    before = hashes(src)
    assert segment(bundle, src, "--recursive", "--out", src / "results") == 2
    one_line_error(capsys.readouterr().err)
    assert hashes(src) == before


def test_out_inside_input_folder_without_recursive_works(bundle, tmp_path):
    src = images(tmp_path / "photos")
    before = hashes(src)
    assert segment(bundle, src, "--out", src / "results") == 0
    assert {k: v for k, v in hashes(src).items() if not k.startswith("results/")} == before


@pytest.mark.parametrize("kind", ["file", "under-a-file", "nul"])
def test_unusable_out_is_one_line(bundle, tmp_path, capsys, kind):
    src = images(tmp_path / "photos")
    blocker = tmp_path / "blocker"
    blocker.write_text("keep me")
    out = {"file": blocker, "under-a-file": blocker / "sub", "nul": tmp_path / "a\x00b"}[kind]
    rc = segment(bundle, src / "a.png", "--out", out)
    assert rc == 2
    one_line_error(capsys.readouterr().err)
    assert blocker.read_text() == "keep me"


def test_colliding_names_are_made_unique(bundle, tmp_path, caplog):
    """x.png and x_overlay.png (and x.jpg): no output overwrites another, and the log says so."""
    src = images(tmp_path / "photos", ("x.png", "x_overlay.png", "x.jpg"))
    out = tmp_path / "out"
    assert segment(bundle, src, "--out", out) == 0
    records = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert sorted(r["image"] for r in records) == sorted(str(p) for p in src.iterdir())
    written = [name for r in records for name in (r["label_map"], r["overlay"])] + [p.name for p in out.glob("*.json")]
    assert len(written) == len(set(written)) == 9 and len(list(out.iterdir())) == 9
    assert "outputs named" in caplog.text
    assert segment(bundle, src, "--out", out, "--overwrite") == 0  # replaces its own outputs, nothing new
    assert len(list(out.iterdir())) == 9


def _mark(record_path: Path) -> None:
    """Add a field to an earlier run's record (still ours: its label_map names its own PNG)."""
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "marker": 1}))


def test_earlier_run_outputs_need_overwrite_or_skip_existing(bundle, tmp_path, capsys, caplog):
    """A second run into the same --out: refused before any work; --overwrite replaces, --skip-existing resumes."""
    src = images(tmp_path / "photos", ("a.png", "b.jpg", "c.png"))
    out = tmp_path / "out"
    assert segment(bundle, src, "--out", out) == 0
    _mark(out / "a.json")
    before = hashes(out)
    capsys.readouterr()
    assert segment(bundle, src, "--out", out) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "earlier run for 3 of these inputs" in line and "--overwrite" in line and "--skip-existing" in line
    assert hashes(out) == before  # nothing written
    for name in ("b.png", "b_overlay.png", "b.json"):  # b not done yet: --skip-existing does it only
        (out / name).unlink()
    assert segment(bundle, src, "--out", out, "--skip-existing") == 0
    assert json.loads((out / "a.json").read_text())["marker"] == 1  # a: kept
    assert json.loads((out / "b.json").read_text())["image"] == str(src / "b.jpg")
    assert "skipping 2 of 3 images" in caplog.text
    assert sorted(p.name for p in out.iterdir()) == sorted(before)
    assert segment(bundle, src, "--out", out, "--overwrite") == 0
    assert "marker" not in json.loads((out / "a.json").read_text())  # a: replaced
    assert sorted(p.name for p in out.iterdir()) == sorted(before)
    with pytest.raises(SystemExit):
        segment(bundle, src, "--out", out, "--overwrite", "--skip-existing")


def test_inputs_inside_out_are_never_replaced(bundle, tmp_path):
    """Explicit inputs living in --out, named like the outputs would be."""
    out = images(tmp_path / "out", ("a.png", "a_overlay.png"))
    (out / "a.json").write_text('{"mine": true}')
    before = hashes(out)
    assert segment(bundle, out / "a.png", out / "a_overlay.png", "--out", out) == 0
    after = hashes(out)
    assert all(after[k] == v for k, v in before.items())
    assert len(after) == len(before) + 6


def test_foreign_files_in_out_are_kept(bundle, tmp_path):
    src = images(tmp_path / "photos", ("a.png",))
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"someone else's file")
    assert segment(bundle, src, "--out", out) == 0
    assert (out / "a.png").read_bytes() == b"someone else's file"
    assert (out / "a_1.json").is_file()


def test_bad_images_are_one_line_each_and_a_summary(bundle, tmp_path, capsys, caplog):
    src = images(tmp_path / "photos")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (src / "empty.jpg").write_bytes(b"")
    rc = segment(bundle, src, "--out", tmp_path / "out")
    err = capsys.readouterr().err
    assert rc == 1
    bad = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(bad) == 2 and all("cannot read image" in m and "\n" not in m for m in bad), bad
    assert "segmented 2 of 4 images" in err.splitlines()[-1]


def test_corrupt_bundle_is_reported_once(bundle, tmp_path, capsys):
    path = copy_bundle(bundle, tmp_path / "b")
    data = bytearray((path / "proposal.onnx").read_bytes())
    data[-50] ^= 0xFF
    (path / "proposal.onnx").write_bytes(bytes(data))
    src = images(tmp_path / "photos", [f"p{i}.png" for i in range(6)])
    rc = segment(path, src, "--out", tmp_path / "out")
    err = capsys.readouterr().err
    assert rc == 2 and err.count("proposal.onnx") == 1, err


def test_info_fails_on_a_damaged_file(bundle, tmp_path, capsys):
    from sdk.cli import main

    path = copy_bundle(bundle, tmp_path / "b")
    assert main(["info", str(path)]) == 0
    (path / "clip_dense.onnx").write_bytes(b"x")
    assert main(["info", str(path)]) == 2
    assert "clip_dense.onnx" in one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize(
    "args",
    [
        ["--alpha", "nan"],
        ["--alpha", "2"],
        ["--threads", "-3"],
        ["--prune-threshold", "nan"],
        ["--min-size", "-5"],
        ["--min-size", "abc"],
    ],
)
def test_bad_cli_numbers(bundle, tmp_path, capsys, args):
    src = images(tmp_path / "photos")
    with pytest.raises(SystemExit) if args[0] in ("--alpha", "--min-size") else _no_raise():
        rc = segment(bundle, src, "--out", tmp_path / "out", *args)
        assert rc == 2
        one_line_error(capsys.readouterr().err)


class _no_raise:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ====================================================================== export publishing
def _fake_bundle(folder: Path, tag: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"format": "zegformer-sdk/bundle", "tag": tag}))
    return folder


def test_publish_swaps_atomically(tmp_path):
    from export.publish import publish_atomic

    out = _fake_bundle(tmp_path / "b", "old")
    staging = _fake_bundle(tmp_path / ".b.tmp-1-x", "new")
    publish_atomic(staging, out)
    assert json.loads((out / "manifest.json").read_text())["tag"] == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_publish_fallback_sequence_and_roll_forward(tmp_path, monkeypatch):
    from export import publish

    monkeypatch.setattr(publish, "_exchange", lambda a, b: False)
    out = _fake_bundle(tmp_path / "b", "old")
    publish.publish_atomic(_fake_bundle(tmp_path / ".b.tmp-1-x", "new"), out)
    assert json.loads((out / "manifest.json").read_text())["tag"] == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    # killed between "out → .old" and ".new → out": the next run rolls forward
    os.rename(out, tmp_path / ".b.old")
    _fake_bundle(tmp_path / ".b.new", "newer")
    publish.recover(out)
    assert json.loads((out / "manifest.json").read_text())["tag"] == "newer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    # killed after "out → .old" with no new bundle: the old one is put back
    os.rename(out, tmp_path / ".b.old")
    publish.recover(out)
    assert json.loads((out / "manifest.json").read_text())["tag"] == "newer"


def test_stale_staging_of_dead_exporters_is_removed(tmp_path):
    from export.publish import recover

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    stale = _fake_bundle(tmp_path / f".b.tmp-{dead}-abc", "half")
    alive = _fake_bundle(tmp_path / f".b.tmp-{os.getppid()}-abc", "running")  # a live process's: kept
    foreign = _fake_bundle(tmp_path / ".b.tmp-notapid", "unknown")
    recover(tmp_path / "b")
    assert not stale.exists() and alive.exists() and foreign.exists()


def test_export_force_replaces_and_never_leaves_no_bundle(bundle, tmp_path):
    from export.__main__ import main
    from tests.sdk_helpers import tiny_checkpoint

    ckpt = tiny_checkpoint(tmp_path / "tiny.pth")
    out = copy_bundle(bundle, tmp_path / "out")
    old = hashes(out)
    (tmp_path / "bad.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    rc = main(
        [
            "--checkpoint",
            str(ckpt),
            "--out",
            str(out),
            "--force",
            "--image-size",
            "64x96",
            "--dense-size",
            "64x64",
            "--no-progress",
            "-q",
            "--vocab",
            str(tmp_path / "bad.txt"),
        ]
    )
    assert rc == 2 and hashes(out) == old  # a failed export leaves the old bundle as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt", "out", "tiny.pth"]


# ====================================================================== training configs and run folders
@pytest.mark.parametrize(
    "override, key",
    [
        ("solver.max_iter=ten", "solver.max_iter"),
        ("solver.lr=abc", "solver.lr"),
        ("solver.lr=.nan", "solver.lr"),
        ("solver.batch_size=0", "solver.batch_size"),
        ("solver.betas=[0.9]x", "solver.betas"),
        ("loss.deep_supervision=maybe", "loss.deep_supervision"),
        ("train.amp=sometimes", "train.amp"),
        ("data.scales=1.0", "data.scales"),
        ("data.crop_size=-1", "data.crop_size"),
        ("model.num_queries=many", "model.num_queries"),
        ("model.clip.embed_dim=[1]", "model.clip.embed_dim"),
        ("eval.protocols=[all]", "eval.protocols"),
        ("train.seed=1.5", "train.seed"),
        ("data=3", "data"),
        ("solver.lr=[", "solver.lr"),
        ("init.checkpoint=3", "init.checkpoint"),
    ],
)
def test_config_values_are_type_checked(override, key):
    from train.config_io import ConfigError, load_config

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as e:
        load_config(REPO / "configs/synthetic-tiny.yaml", [override])
    assert "\n" not in str(e.value)


def test_every_shipped_config_passes_the_type_checks():
    from train.config_io import load_config

    for path in sorted((REPO / "configs").glob("*.yaml")):
        load_config(path)


def _train(*args, cwd, timeout=300, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, str(REPO / "train/train.py"), *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def test_missing_synthetic_data_names_the_command(tmp_path):
    proc = _train("--config", REPO / "configs/synthetic-tiny.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "python -m train.data.synthetic --out data/synthetic" in proc.stderr


def test_bad_config_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"solver: [unclosed\n")
    proc = _train("--config", bad, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr


def test_sigint_checkpoints_and_rerun_resumes_or_refuses(tmp_path):
    """Ctrl-C (SIGINT to the process group, loader worker included) → last.pth, exit 130; the same
    command continues; another config in that folder is refused and the checkpoint kept."""
    from tests.test_train_resume import _cmd, _start_and_signal
    from train.checkpoint import read_checkpoint
    from train.data.synthetic import generate

    data = generate(tmp_path / "data", num_classes=4, num_unseen=1, num_train=6, num_val=1, size=64, seed=5)
    run = tmp_path / "run"
    cmd = _cmd(data, run, "train.checkpoint_period=1000", "data.num_workers=1")
    proc = _start_and_signal(cmd, run, signal.SIGINT, after_step=1, need_checkpoint=False, group=True)
    assert proc.returncode == 130, (tmp_path / "run.stderr").read_text()[-2000:]
    stopped = read_checkpoint(run / "last.pth")["train_state"]["step"]
    assert stopped >= 1
    kept = hashes(run)
    other = subprocess.run(
        cmd + ["solver.lr=0.5"],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert other.returncode == 2 and "another config" in other.stderr and "solver.lr" in other.stderr
    assert hashes(run) == kept
    again = subprocess.run(
        cmd,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"at step {stopped}" in again.stderr
    steps = [json.loads(line)["step"] for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)), "the resumed run's log continues the old one without repeats"
    assert np.isfinite(read_checkpoint(run / "model_final.pth")["train_state"]["step"])
