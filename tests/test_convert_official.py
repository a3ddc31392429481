"""``train.convert_official`` and our checkpoint format: round trips and every failure mode."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from train.checkpoint import CheckpointError, load_model, read_checkpoint, save_checkpoint
from train.config import preset
from train.convert_official import convert, to_official_names
from train.model import build_model


def official_names(state_dict):
    return {k: v.clone() for k, v in to_official_names(state_dict).items()}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model(preset("tiny")).eval()


@pytest.fixture
def official_file(tiny, tmp_path):
    sd = official_names(tiny.state_dict())
    sd["criterion.empty_weight"] = torch.ones(16)  # 15 seen + background: a VOC training checkpoint
    path = tmp_path / "official.pth"
    torch.save({"model": sd, "iteration": 10}, path)
    return path


def test_round_trip_same_outputs(tiny, official_file, tmp_path):
    out = tmp_path / "ours.pth"
    cfg = convert(official_file, out, template=preset("tiny"))
    assert cfg == tiny.cfg
    model, payload = load_model(out)
    assert payload["source"]["dataset"] == "voc"  # detected from criterion.empty_weight
    assert sum(payload["classes"]["seen"]) == 15 and len(payload["classes"]["names"]) == 20
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        a, b = tiny.proposals(tiny.normalize(x)), model.proposals(model.normalize(x))
    torch.testing.assert_close(a["pred_masks"], b["pred_masks"], rtol=0, atol=0)


def test_bare_state_dict_and_fp16_clip(tiny, tmp_path):
    sd = official_names(tiny.state_dict())
    for k in sd:
        if ".clip_model." in k and sd[k].dtype == torch.float32 and sd[k].ndim == 2:
            sd[k] = sd[k].half()  # the official clip.load keeps CLIP matrices in float16
    torch.save(sd, tmp_path / "bare.pth")
    convert(tmp_path / "bare.pth", tmp_path / "ours.pth", template=preset("tiny"))
    model, _ = load_model(tmp_path / "ours.pth")
    assert all(p.dtype == torch.float32 for p in model.state_dict().values() if p.is_floating_point())


def test_training_checkpoint_needs_clip(tiny, tmp_path):
    sd = official_names(tiny.state_dict())
    clip = {k.split("clip_model.", 1)[1]: sd.pop(k) for k in list(sd) if ".clip_model." in k}
    torch.save({"model": sd}, tmp_path / "train.pth")
    with pytest.raises(CheckpointError, match="--clip"):
        convert(tmp_path / "train.pth", tmp_path / "ours.pth")
    torch.save(clip, tmp_path / "openai_clip.pt")  # OpenAI naming, no prefix
    convert(
        tmp_path / "train.pth", tmp_path / "ours.pth", clip=str(tmp_path / "openai_clip.pt"), template=preset("tiny")
    )
    model, payload = load_model(tmp_path / "ours.pth")
    assert payload["source"]["clip"].endswith("openai_clip.pt")
    torch.testing.assert_close(model.clip.visual.proj, tiny.clip.visual.proj)


def test_unknown_missing_and_misshaped_keys_are_listed(tiny, tmp_path):
    sd = official_names(tiny.state_dict())
    sd["sem_seg_head.predictor.extra_head.weight"] = torch.zeros(3)
    torch.save(sd, tmp_path / "a.pth")
    with pytest.raises(CheckpointError, match="extra_head"):
        convert(tmp_path / "a.pth", tmp_path / "o.pth")
    sd = official_names(tiny.state_dict())
    del sd["sem_seg_head.predictor.mask_embed.layers.1.bias"]
    sd["sem_seg_head.predictor.projection_layer.bias"] = torch.zeros(7)
    torch.save(sd, tmp_path / "b.pth")
    with pytest.raises(CheckpointError, match=r"mask_embed\.layers\.1\.bias.*projection_layer\.bias"):
        convert(tmp_path / "b.pth", tmp_path / "o.pth", template=preset("tiny"))
    assert not (tmp_path / "o.pth").exists()


def test_truncated_foreign_and_missing_files(official_file, tmp_path):
    data = official_file.read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        convert(tmp_path / "trunc.pth", tmp_path / "o.pth")
    torch.save({"weights": [1, 2, 3]}, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError, match="no state dict"):
        convert(tmp_path / "foreign.pth", tmp_path / "o.pth")
    with pytest.raises(CheckpointError, match="not found"):
        convert(tmp_path / "nope.pth", tmp_path / "o.pth")
    with pytest.raises(CheckpointError, match="not a zegformer-sdk checkpoint"):
        read_checkpoint(official_file)  # official files must be converted first


def test_cli_one_line_error_and_exit_code(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "train.convert_official",
            "--official",
            str(tmp_path / "junk.pth"),
            "--out",
            str(tmp_path / "o.pth"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "junk.pth" in proc.stderr
    assert not (tmp_path / "o.pth").exists()


def test_checkpoint_records_config_classes_versions(tiny, tmp_path):
    save_checkpoint(tmp_path / "c.pth", tiny, ["a", "b, c"], [True, False])
    payload = read_checkpoint(tmp_path / "c.pth")
    assert payload["config"]["num_queries"] == 10
    assert payload["classes"] == {"names": ["a", "b, c"], "seen": [True, False]}
    assert set(payload["versions"]) >= {"torch", "open_clip"}
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temporary file
