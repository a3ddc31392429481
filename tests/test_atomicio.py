"""sdk.atomicio: the one atomic write (SDK, exporter and training write through it)."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest

from sdk.atomicio import (
    TEMP_MARK,
    atomic_path,
    current_umask,
    remove_stale_temps,
    write_bytes_atomic,
    write_json_atomic,
    write_npz_atomic,
    write_text_atomic,
)

REPO = Path(__file__).resolve().parents[1]


def test_writes_replace_the_target_whole(tmp_path):
    target = tmp_path / "x.json"
    write_json_atomic(target, {"a": "é", "b": [1, 2]})
    assert target.read_text(encoding="utf-8") == '{\n  "a": "é",\n  "b": [\n    1,\n    2\n  ]\n}\n'
    write_text_atomic(target, "second")
    assert target.read_text() == "second"
    write_bytes_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01" and os.listdir(tmp_path) == ["x.json"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.pth"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".pth" and TEMP_MARK in tmp.name
            tmp.write_bytes(b"half")
            raise RuntimeError("the writer died")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["model.pth"]


def test_new_files_follow_the_umask(tmp_path):
    write_text_atomic(tmp_path / "shared.txt", "x")
    assert stat.S_IMODE((tmp_path / "shared.txt").stat().st_mode) == 0o666 & ~current_umask()


def test_npz_keeps_its_name_and_arrays(tmp_path):
    target = tmp_path / "cache.bin"  # not .npz: numpy must not append a suffix
    write_npz_atomic(target, {"names": np.array(["a", "b"]), "x": np.eye(2, dtype=np.float32)})
    with np.load(target, allow_pickle=False) as z:
        assert list(z["names"]) == ["a", "b"] and np.array_equal(z["x"], np.eye(2))
    assert os.listdir(tmp_path) == ["cache.bin"]


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / f".a{TEMP_MARK}0123456789ab.png").write_bytes(b"killed writer")
    (tmp_path / "a.png").write_bytes(b"kept")
    (tmp_path / ".hidden").write_bytes(b"kept")
    assert remove_stale_temps(tmp_path) == 1
    assert sorted(os.listdir(tmp_path)) == [".hidden", "a.png"]


def test_one_definition_of_the_atomic_rename():
    """os.replace of a file appears only in sdk/atomicio.py across sdk/, export/ and train/ (the
    directory swaps of export/publish.py and the run folders are renames of whole directories)."""
    hits = []
    for folder in ("sdk", "export", "train"):
        for path in (REPO / folder).rglob("*.py"):
            for line in path.read_text(encoding="utf-8").splitlines():
                if re.search(r"\bos\.replace\(|mkstemp\(", line):
                    hits.append(f"{path.relative_to(REPO)}: {line.strip()}")
    allowed = (
        "sdk/atomicio.py",
        "export/publish.py",
        "train/quickstart.py: os.replace(tmp, data)",
        "train/clip_pretrain.py: os.replace(tmp, out)",
    )
    assert [h for h in hits if not h.startswith(allowed)] == []
    assert any(h.startswith("sdk/atomicio.py") for h in hits)
