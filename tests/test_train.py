"""Training smoke test, config handling, the non-finite guard, the loss and the matcher."""

import json
import math

import numpy as np
import pytest
import torch

from train.checkpoint import load_model
from train.config import preset
from train.config_io import ConfigError, load_config
from train.data.synthetic import generate
from train.losses import LossConfig, SetCriterion, dice_loss, normalizers, sigmoid_focal_loss
from train.matcher import HungarianMatcher
from train.model import build_model
from train.solver import SolverConfig, build_optimizer, lr_factor

FAST = [
    "data.crop_size=64",
    "data.scales=[1.0]",
    "train.threads=1",
    "train.progress=false",
    "train.tensorboard=false",
    "eval.min_size=0",
    "eval.max_images=2",
    "model.dropout=0.0",
]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return generate(
        tmp_path_factory.mktemp("syn") / "data", num_classes=5, num_unseen=1, num_train=8, num_val=2, size=64, seed=1
    )


def test_smoke_training_writes_exportable_checkpoint(tiny_data, tmp_path):
    from train.train import main

    out = tmp_path / "run"
    rc = main(
        [
            "--config",
            "configs/synthetic-tiny.yaml",
            f"data.root={tiny_data}",
            f"train.output_dir={out}",
            "solver.max_iter=4",
            "solver.batch_size=2",
            "train.eval_period=0",
            "train.log_period=1",
            *FAST,
        ]
    )
    assert rc == 0
    log = [json.loads(line) for line in open(out / "train_log.jsonl")]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all(math.isfinite(r["loss"]) for r in log)
    model, payload = load_model(out / "model_final.pth")  # weights_only load of everything
    assert payload["classes"]["names"][0] == "red plain" and payload["classes"]["seen"] == [True] * 4 + [False]
    state = payload["train_state"]
    assert state["step"] == 4 and "optimizer" in state and "python" in state["rng"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert "official" in metrics["seen"] and "nan_safe" in metrics["gzss"]
    assert json.loads((out / "replicas.json").read_text())["identical"]


def test_config_overrides_and_errors(tmp_path):
    cfg = load_config(
        "configs/synthetic-tiny.yaml", ["solver.max_iter=7", "model.num_queries=5", "data.scales=[0.5, 1.0]"]
    )
    assert cfg["solver"]["max_iter"] == 7 and cfg["model"]["num_queries"] == 5 and cfg["data"]["scales"] == [0.5, 1.0]
    with pytest.raises(ConfigError, match="max_iterz"):
        load_config("configs/synthetic-tiny.yaml", ["solver.max_iterz=1"])
    with pytest.raises(ConfigError, match="model section"):
        load_config("configs/synthetic-tiny.yaml", ["model.not_a_field=1"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(None, ["solver.max_iter"])


@pytest.mark.parametrize("name", ["coco-stuff-r101", "coco-stuff-r50", "voc-r101", "ade-847-r50", "synthetic-tiny"])
def test_shipped_configs_load(name):
    cfg = load_config(f"configs/{name}.yaml")
    assert cfg["solver"]["clip_grad_norm"] == 0.01 and cfg["loss"]["mask_weight"] == 20.0


def test_official_recipe_values():
    cfg = load_config("configs/coco-stuff-r101.yaml")
    s = cfg["solver"]
    assert (s["batch_size"], s["max_iter"], s["lr"], s["weight_decay"], s["backbone_multiplier"]) == (
        32,
        60000,
        1e-4,
        1e-4,
        0.1,
    )
    assert cfg["data"]["crop_size"] == 640 and cfg["model"]["preset"] == "r101-vit16"
    assert load_config("configs/voc-r101.yaml")["solver"]["max_iter"] == 10000


def test_nonfinite_loss_is_skipped_then_stops(tiny_data, tmp_path):
    from train.engine import Trainer

    cfg = load_config(
        "configs/synthetic-tiny.yaml",
        [f"data.root={tiny_data}", f"train.output_dir={tmp_path}", "solver.batch_size=2", *FAST],
    )
    trainer = Trainer(cfg)
    micro = [
        {
            "images": torch.full((2, 3, 64, 64), float("nan")),
            "targets": [{"labels": torch.tensor([0]), "masks": torch.ones(1, 64, 64, dtype=torch.bool)}] * 2,
        }
    ]
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    stats = trainer.train_step(micro)
    assert stats["finite"] == 0.0 and trainer.nonfinite == 1
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    ok = [{"images": torch.full((2, 3, 64, 64), 100.0), "targets": micro[0]["targets"]}]
    assert trainer.train_step(ok)["finite"] == 1.0 and trainer.nonfinite == 0


def test_solver_groups_and_schedule():
    model = build_model(preset("tiny"))
    for p in model.clip.parameters():
        p.requires_grad_(False)
    cfg = SolverConfig(lr=1e-4, backbone_multiplier=0.1, max_iter=100)
    groups = {g["name"]: g for g in build_optimizer(model, cfg).param_groups}
    assert not any(n.startswith("clip.") for n in groups) and "predictor.logit_scale" not in groups
    assert groups["backbone.stem.conv1.weight"]["lr"] == pytest.approx(1e-5)
    assert groups["predictor.query_embed.weight"]["weight_decay"] == 0.0  # embedding
    assert groups["pixel_decoder.layer_1.norm.weight"]["weight_decay"] == 0.0  # GroupNorm
    assert groups["predictor.bg_feature"]["weight_decay"] == 1e-4
    assert lr_factor(0, cfg) == 1.0 and lr_factor(50, cfg) == pytest.approx(0.5**0.9) and lr_factor(100, cfg) == 0


def test_losses_by_hand():
    logits = torch.tensor([[2.0, -1.0]])
    targets = torch.tensor([[1.0, 0.0]])
    p = torch.sigmoid(logits)
    ce = -torch.log(torch.tensor([[p[0, 0], 1 - p[0, 1]]]))
    focal = (0.25 * (1 - p[0, 0]) ** 2 * ce[0, 0] + 0.75 * p[0, 1] ** 2 * ce[0, 1]) / 2
    assert sigmoid_focal_loss(logits, targets).item() == pytest.approx(focal.item(), rel=1e-5)
    dice = 1 - (2 * p[0, 0] + 1) / (p.sum() + 1 + 1)
    assert dice_loss(logits, targets).item() == pytest.approx(dice.item(), rel=1e-5)
    assert normalizers([{"labels": torch.tensor([0, 1])}, {"labels": torch.tensor([], dtype=torch.long)}], 3, 0.1) == (
        2,
        2 + 0.1 + 3 * 0.1,
    )


def test_matcher_finds_the_obvious_assignment_and_loss_uses_it():
    k, q, h = 3, 4, 8
    masks_t = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks_t[0, :8], masks_t[1, 8:] = True, True
    target = [{"labels": torch.tensor([2, 0]), "masks": masks_t}]
    logits = torch.full((1, q, k + 1), -5.0)
    pred = torch.full((1, q, h, h), -8.0)
    logits[0, 1, 2], pred[0, 1, :4] = 5.0, 8.0  # query 1 ↔ target 0 (class 2, top half)
    logits[0, 3, 0], pred[0, 3, 4:] = 5.0, 8.0  # query 3 ↔ target 1 (class 0, bottom half)
    rows, cols = HungarianMatcher()(logits, pred, target)[0]
    assert rows.tolist() == [1, 3] and cols.tolist() == [0, 1]
    crit = SetCriterion(k, LossConfig(), HungarianMatcher())
    _, w = normalizers(target, q, 0.1)
    out = crit(
        {"pred_logits": logits[None].repeat(2, 1, 1, 1), "pred_masks": pred[None].repeat(2, 1, 1, 1, 1)}, target, 2, w
    )
    assert set(out) == {"loss", "loss_ce", "loss_mask", "loss_dice", "loss_ce_0", "loss_mask_0", "loss_dice_0"}
    assert out["loss_ce"] < 0.2 and out["loss_dice"] < 0.1
    torch.testing.assert_close(out["loss"], sum(v for k_, v in out.items() if k_ != "loss"))


def test_torchvision_resnet_weights_load_into_backbone(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    from train.init_weights import load_backbone

    tv = torchvision.models.resnet50(weights=None).eval()
    with torch.no_grad():  # non-trivial BN statistics
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    torch.save(tv.state_dict(), tmp_path / "r50.pth")
    model = build_model(preset("r50-vit16"))
    load_backbone(model, tmp_path / "r50.pth")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours = model.backbone(x)["res5"]
        theirs = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))))
    scale = theirs.abs().max().item()  # float32 summation-order noise of a 50-layer random network
    torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-4 * scale)


def test_evaluate_cli_cross_dataset_vocabulary(tiny_data, tmp_path):
    """A model evaluated on another dataset classifies into that dataset's classes; a target class
    is 'seen' for the model when it is one of its training classes."""
    from PIL import Image

    from train.evaluate import TorchPredictor
    from train.evaluate import main as evaluate_main
    from train.train import main as train_main

    run = tmp_path / "run"
    assert (
        train_main(
            [
                "--config",
                "configs/synthetic-tiny.yaml",
                f"data.root={tiny_data}",
                f"train.output_dir={run}",
                "solver.max_iter=1",
                "solver.batch_size=2",
                "eval.protocols=[]",
                *FAST,
            ]
        )
        == 0
    )
    other = tmp_path / "other"
    (other / "images").mkdir(parents=True)
    (other / "labels").mkdir()
    (other / "classes.txt").write_text("zebra\nred plain\n")
    (other / "unseen.txt").write_text("zebra\n")
    Image.fromarray(np.full((40, 50, 3), 200, np.uint8)).save(other / "images" / "a.png")
    Image.fromarray(np.tile(np.array([0, 1], np.uint8), (40, 25))).save(other / "labels" / "a.png")
    out = tmp_path / "eval"
    assert (
        evaluate_main(
            [
                "--checkpoint",
                str(run / "model_final.pth"),
                "--dataset",
                str(other),
                "--split",
                "all",
                "--mode",
                "cropmask",
                "--min-size",
                "32",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert [c["name"] for c in metrics["per_class"]] == ["zebra", "red plain"]
    assert (out / "metrics.md").read_text().startswith("# ")
    model, _ = load_model(run / "model_final.pth")
    predictor = TorchPredictor(model, ["zebra", "red plain"], ["red plain", "green striped"], mode="proposal")
    assert predictor.seen == [False, True]


def test_bundle_evaluation_matches_checkpoint(tiny_data, tmp_path):
    """Export the trained checkpoint with ``python -m export`` and evaluate it through the SDK."""
    export_main = pytest.importorskip("export.__main__").main
    pytest.importorskip("sdk")
    pytest.importorskip("onnxruntime")
    from train.evaluate import main as evaluate_main
    from train.train import main as train_main

    run = tmp_path / "run"
    assert (
        train_main(
            [
                "--config",
                "configs/synthetic-tiny.yaml",
                f"data.root={tiny_data}",
                f"train.output_dir={run}",
                "solver.max_iter=2",
                "solver.batch_size=2",
                "eval.protocols=[]",
                *FAST,
            ]
        )
        == 0
    )
    assert (
        export_main(
            ["--checkpoint", str(run / "model_final.pth"), "--out", str(tmp_path / "bundle"), "--no-progress", "-q"]
        )
        == 0
    )
    common = ["--dataset", str(tiny_data), "--mode", "proposal", "--min-size", "0"]
    assert evaluate_main(["--checkpoint", str(run / "model_final.pth"), *common, "--out", str(tmp_path / "a")]) == 0
    assert (
        evaluate_main(
            ["--bundle", str(tmp_path / "bundle"), "--backend", "onnxruntime", *common, "--out", str(tmp_path / "b")]
        )
        == 0
    )
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    ga = [c["pred_pixels"] for c in a["per_class"]]
    gb = [c["pred_pixels"] for c in b["per_class"]]
    assert sum(abs(x - y) for x, y in zip(ga, gb)) <= 0.01 * sum(ga)  # near-tie pixels may flip


def test_repeated_nonfinite_losses_stop_training(tiny_data, tmp_path, monkeypatch):
    from train.engine import Trainer, TrainingStopped

    cfg = load_config(
        "configs/synthetic-tiny.yaml",
        [
            f"data.root={tiny_data}",
            f"train.output_dir={tmp_path}",
            "solver.batch_size=2",
            "train.max_nonfinite=3",
            "data.num_workers=0",
            *FAST,
        ],
    )
    trainer = Trainer(cfg)

    def broken_step(micro):
        trainer.nonfinite += 1
        return {
            "loss": float("nan"),
            "loss_ce": float("nan"),
            "loss_mask": 0.0,
            "loss_dice": 0.0,
            "finite": 0.0,
            "lr": 1e-3,
        }

    monkeypatch.setattr(trainer, "train_step", broken_step)
    with pytest.raises(TrainingStopped, match="3 consecutive non-finite"):
        trainer.run()
    assert (tmp_path / "last.pth").is_file()


@pytest.mark.slow
def test_official_size_model_trains_one_step(tiny_data, tmp_path):
    """R50 + ViT-B/16 shapes (100 queries, 6 decoder layers, random weights): one step end to end."""
    from train.train import main

    out = tmp_path / "r50"
    assert (
        main(
            [
                "--config",
                "configs/coco-stuff-r50.yaml",
                "data.dataset=synthetic",
                f"data.root={tiny_data}",
                f"train.output_dir={out}",
                "init.clip=null",
                "solver.batch_size=2",
                "solver.max_iter=1",
                "train.eval_period=0",
                "eval.protocols=[seen]",
                "data.num_workers=0",
                "train.log_period=1",
                *FAST,
            ]
        )
        == 0
    )
    record = json.loads(open(out / "train_log.jsonl").readline())
    assert math.isfinite(record["loss"]) and "loss_ce" in record
