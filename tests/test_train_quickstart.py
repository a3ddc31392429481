"""The quick start end to end (tiny settings) and its resumability after Ctrl-C at any step."""

import json
from pathlib import Path

import pytest

from train import quickstart
from train.engine import Trainer

SMALL = [
    "model.clip.embed_dim=32",
    "model.clip.image_size=32",
    "model.clip.patch_size=8",
    "model.clip.vision_width=64",
    "model.clip.vision_layers=1",
    "model.clip.vision_heads=1",
    "model.clip.text_width=64",
    "model.clip.text_heads=1",
    "model.clip.text_layers=1",
    "train.checkpoint_period=2",
    "train.progress=false",
]
ARGS = ["--train", "6", "--val", "3", "--clip-steps", "3", "--iters", "5", "--backends", "onnxruntime"]


def run(out, *extra):
    return quickstart.main(["--out", str(out), *ARGS, *extra, *SMALL])


def test_quickstart_resumes_after_interruptions(tmp_path, monkeypatch, capsys):
    out = tmp_path / "qs"
    # Ctrl-C while the world is being written: nothing published, a half-written temporary left
    from train.data import compositional

    original = compositional.generate_folder

    def interrupted_generate(path, *args, **kwargs):
        (path / "train" / "images").mkdir(parents=True)
        (path / "train" / "images" / "00000.png").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(compositional, "generate_folder", interrupted_generate)
    with pytest.raises(KeyboardInterrupt):
        run(out)
    assert not (out / "data").exists() and (out / ".data.tmp").exists()
    monkeypatch.setattr(compositional, "generate_folder", original)

    # Ctrl-C during ZegFormer training, after the checkpoint of step 2
    real_step = Trainer.train_step
    calls = {"n": 0}

    def interrupted_step(self, micro):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_step(self, micro)

    monkeypatch.setattr(Trainer, "train_step", interrupted_step)
    with pytest.raises(KeyboardInterrupt):
        run(out)
    assert (out / "data" / "meta.json").is_file() and not (out / ".data.tmp").exists()
    assert (out / "clip" / "clip.pt").is_file() and (out / "clip" / "clip.json").is_file()
    clip_info = json.loads((out / "clip" / "clip.json").read_text())
    assert 5 <= clip_info["logit_scale"]["calibrated_on_seen"] <= 100
    balance = clip_info["text_balance"]  # every class's attribute cosines; flagged ones are unseen
    classes = [c for c in (out / "data" / "classes.txt").read_text().split("\n") if c]
    assert sorted(balance["classes"]) == sorted(classes)
    assert all(-1 <= v <= 1 for c in balance["classes"].values() for v in c.values())
    unseen = (out / "data" / "unseen.txt").read_text().split("\n")
    assert set(balance["flagged"]) <= set(unseen)
    assert (out / "run" / "last.pth").is_file() and not (out / "run" / "model_final.pth").exists()
    assert not (out / "bundle").exists()
    monkeypatch.setattr(Trainer, "train_step", real_step)

    # a stale temporary of a later step (as a Ctrl-C inside it would leave) does not matter
    (out / ".gzss.json.tmp").write_text("{")
    capsys.readouterr()
    assert run(out) == 0
    text = capsys.readouterr().out
    assert "using " + str(out / "data") in text and "resuming" in text
    assert "unseen mIoU" in text and "cropmask" in text and "proposal" in text
    assert text.count("WARNING: CLIP's text tower embeds the unseen class") == len(balance["flagged"])
    # where the faithful map's pixels went, as recorded in gzss.json
    faithful = json.loads((out / "gzss.json").read_text())["records"][0]
    assert faithful["mode"] == "cropmask" and "takeovers" in faithful
    for t in faithful["takeovers"]:
        assert f"{t['truth']} {100 * t['share']:.0f} %" in text
    assert ("Classes that took 30 %" in text) == bool(faithful["takeovers"])
    assert ("No class lost 30 %" in text) == (not faithful["takeovers"])
    # next to the expected band measured over seeds; tiny settings are not what it was measured with
    assert "Expected (cropmask, seeds" in text and "only indicative" in text and "unseen_mIoU  this run" in text
    repo = Path(__file__).resolve().parents[1]  # the hint works from any folder
    assert (
        f"try it in a browser: pip install -e '{repo}[demo]' && python -m sdk demo --bundle {out / 'bundle'}" in text
        and "http://127.0.0.1:7860" in text
    )
    records = json.loads((out / "gzss.json").read_text())["records"]
    assert [r["mode"] for r in records] == ["cropmask", "pruned", "maskpool", "proposal"]
    assert all(0 <= r["nan_safe"]["mIoU"] <= 1 for r in records)  # 3 images: not every class occurs
    # a 5-step model may leave pruned nothing to ask CLIP; cropmask asks it about every query
    assert 0 <= records[1]["clip_query_fraction"] <= 1 and records[0]["clip_query_fraction"] == 1
    assert (out / "zeroshot_example.png").is_file() and (out / "bundle" / "manifest.json").is_file()
    # the world's calibration (configs/zeroshot-world.yaml), not COCO-Stuff's 0.1, reaches the SDK
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert manifest["inference"]["gzero_calibrate"] == 0.0 and manifest["model"]["config"]["gzero_calibrate"] == 0.0
    log = [json.loads(line) for line in (out / "run" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 5

    # a complete re-run does nothing again
    assert run(out) == 0
    text = capsys.readouterr().out
    assert text.count("using") >= 5 and "training" not in text
