"""``train.backbone_norm=train``: a backbone trained from scratch learns its BatchNorm, and what it
learned is an ordinary checkpoint of the official (frozen-BatchNorm) architecture."""

import pytest
import torch
from torch import nn

from tests.test_train import FAST  # the small, single-threaded training settings
from train.checkpoint import load_model, read_checkpoint
from train.config_io import ConfigError, load_config
from train.data.synthetic import generate
from train.model.layers import FrozenBatchNorm2d, TrainableBatchNorm2d, thaw_batchnorm


def _frozen_net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), FrozenBatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1), FrozenBatchNorm2d(2))
    with torch.no_grad():  # loaded statistics, as an ImageNet backbone has
        net[1].running_mean.copy_(torch.tensor([0.5, -1.0, 0.0, 2.0]))
        net[1].weight.copy_(torch.tensor([1.0, 2.0, 0.5, 1.5]))
    return net


def test_thawed_layers_start_as_the_frozen_ones_and_learn():
    net, x = _frozen_net(), torch.randn(8, 3, 12, 12)
    before = net(x)
    keys = list(net.state_dict())
    assert thaw_batchnorm(net) == 2 and isinstance(net[1], TrainableBatchNorm2d)
    assert list(net.state_dict()) == keys  # no num_batches_tracked: checkpoints keep the official keys
    assert torch.equal(net.eval()(x), before)  # eval mode is the frozen layer with the same numbers

    net.train()
    net(x).square().mean().backward()
    assert net[1].weight.grad is not None and net[1].weight.grad.abs().sum() > 0
    assert not torch.equal(net[1].running_mean, torch.tensor([0.5, -1.0, 0.0, 2.0]))  # statistics moved
    batch_mean = nn.functional.conv2d(x, net[0].weight, net[0].bias).mean((0, 2, 3))
    expected = 0.9 * torch.tensor([0.5, -1.0, 0.0, 2.0]) + 0.1 * batch_mean  # BatchNorm's momentum 0.1
    assert torch.allclose(net[1].running_mean, expected, atol=1e-6)


def test_trained_statistics_load_into_the_frozen_architecture_strictly():
    net, x = _frozen_net(), torch.randn(8, 3, 12, 12)
    thaw_batchnorm(net)
    net.train()
    for _ in range(3):
        net(x)
    frozen = _frozen_net()
    frozen.load_state_dict(net.state_dict())  # strict
    assert torch.allclose(frozen(x), net.eval()(x), atol=1e-6)
    net.load_state_dict(_frozen_net().state_dict())  # and back: a frozen checkpoint resumes a thawed model


def test_training_with_trained_backbone_norm_writes_an_official_checkpoint(tmp_path):
    from train.train import main

    data = generate(tmp_path / "data", num_classes=4, num_unseen=1, num_train=6, num_val=1, size=64, seed=3)
    out = tmp_path / "run"
    args = [
        "--config",
        "configs/synthetic-tiny.yaml",
        f"data.root={data}",
        f"train.output_dir={out}",
        "train.backbone_norm=train",
        "solver.max_iter=3",
        "solver.batch_size=2",
        "train.eval_period=0",
        "eval.protocols=[]",
        *FAST,
    ]
    assert main(args) == 0
    model, _ = load_model(out / "model_final.pth")  # the frozen architecture, strict load
    norms = [m for m in model.backbone.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert norms and not any(isinstance(m, TrainableBatchNorm2d) for m in model.modules())
    assert all(m.running_mean.abs().sum() > 0 for m in norms)  # every layer learned statistics
    stem = read_checkpoint(out / "model_final.pth")["model"]["backbone.stem.conv1.norm.weight"]
    assert not torch.equal(stem, torch.ones_like(stem))  # and its affine


def test_backbone_norm_rejects_other_values():
    with pytest.raises(ConfigError, match="frozen or train"):
        load_config("configs/synthetic-tiny.yaml", ["train.backbone_norm=batch"])
