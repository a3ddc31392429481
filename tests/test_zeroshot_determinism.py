"""The zero-shot testbed is a pure function of its seed on one machine: world bytes, CLIP and
ZegFormer training (data order, augmentation, initialisation), whatever the number of data processes."""

import functools
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from train.clip_pretrain import ClipTrainConfig, CropBatches, train_clip
from train.config_io import load_config, model_config
from train.data.compositional import World, generate_folder
from train.data.loader import StepPlan
from train.engine import Trainer
from train.quickstart import CONFIG, PORTABLE_KERNELS, train_config
from train.runtime import weights_digest

REPO = Path(__file__).resolve().parents[1]
TINY_CLIP = [
    "model.clip.embed_dim=32",
    "model.clip.image_size=32",
    "model.clip.patch_size=8",
    "model.clip.vision_width=32",
    "model.clip.vision_layers=1",
    "model.clip.vision_heads=1",
    "model.clip.text_width=32",
    "model.clip.text_heads=1",
    "model.clip.text_layers=1",
]
TINY_ZEG = [
    *TINY_CLIP,
    "model.hidden_dim=32",
    "model.dim_feedforward=64",
    "model.conv_dim=32",
    "model.mask_dim=32",
    "model.num_queries=4",
    "data.crop_size=64",
    "solver.batch_size=2",
    "train.log_period=1",
    "train.progress=false",
    "train.tensorboard=false",
    "train.checkpoint_period=0",
    "train.threads=1",
]


def _digests(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.png"))}


def test_world_is_a_pure_function_of_the_seed_and_more_held_out_images_extend_it(tmp_path):
    w = World()
    a = _digests(generate_folder(tmp_path / "a", w, num_train=4, num_val=3, size=64, seed=5))
    b = _digests(generate_folder(tmp_path / "b", w, num_train=4, num_val=6, size=64, seed=5))
    c = _digests(generate_folder(tmp_path / "c", w, num_train=4, num_val=3, size=64, seed=6))
    assert len(a) == 14 and all(b[k] == v for k, v in a.items())  # same seed: same bytes, a prefix of more
    assert not set(a.values()) & set(c.values())  # another seed: other images
    d = _digests(generate_folder(tmp_path / "d", w, num_train=4, num_val=3, size=64, seed=6, val_seed=5))
    assert all(d[k] == a[k] for k in a if k.startswith("val/"))
    assert all(d[k] == c[k] for k in c if k.startswith("train/"))


def test_step_order_is_fixed_by_the_seed():
    def order(seed):
        plan = StepPlan(dataset_len=10, global_batch=4, world=1, accumulate=1, seed=seed)
        return [plan.rank_items(step, 0) for step in range(8)]

    assert order(3) == order(3) and order(3) != order(4)
    items = [idx for micro in order(3)[:5] for _, idx in micro[0]]  # steps 0-4 = 2 epochs of 10
    assert sorted(items[:10]) == sorted(items[10:20]) == list(range(10))


def _train(tmp_path, data, name, workers, seed=0):
    out = tmp_path / name
    cfg = train_config(data, out, None, 3, [*TINY_ZEG, f"data.num_workers={workers}"], seed)
    cfg["init"]["clip"] = None
    trainer = Trainer(cfg)
    assert trainer.run() == 0
    losses = [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    return losses, weights_digest(trainer.model)


def test_zegformer_training_repeats_bit_for_bit_and_the_seed_moves_it(tmp_path):
    data = generate_folder(tmp_path / "data", World(), num_train=6, num_val=1, size=64, seed=0)
    first = _train(tmp_path, data, "a", workers=0)
    assert len(first[0]) == 3 and all(np.isfinite(first[0]))
    assert _train(tmp_path, data, "b", workers=1) == first  # a loader process changes nothing
    assert _train(tmp_path, data, "c", workers=0, seed=1)[1] != first[1]


def test_quickstart_seed_reaches_zegformer_and_clip(tmp_path):
    assert load_config(CONFIG, [])["train"]["seed"] == 0
    assert train_config(tmp_path, tmp_path / "run", tmp_path / "clip.pt", 5, [], seed=7)["train"]["seed"] == 7
    assert (
        train_config(tmp_path, tmp_path / "run", tmp_path / "clip.pt", 5, ["train.seed=2"], seed=7)["train"]["seed"]
        == 2
    )  # an explicit override wins


def _clip(seed, workers=0):
    mcfg = model_config(load_config(CONFIG, TINY_CLIP))
    cfg = ClipTrainConfig(steps=2, batch_size=16, warmup=1, workers=workers, threads=1, seed=seed)
    return train_clip(World(), mcfg, cfg, progress=False)["model"].state_dict()


def test_clip_training_repeats_bit_for_bit_and_the_seed_moves_it():
    a, b, c = _clip(0), _clip(0), _clip(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def _first_batches(mcfg, workers, n):
    cfg = ClipTrainConfig(batch_size=8, workers=workers, seed=0)
    loader = torch.utils.data.DataLoader(CropBatches(World(), mcfg, cfg), batch_size=None, num_workers=workers)
    it = iter(loader)
    return [next(it)[0] for _ in range(n)]


def test_clip_data_processes_draw_different_batches():
    mcfg = model_config(load_config(CONFIG, TINY_CLIP))
    two = _first_batches(mcfg, 2, 2)
    assert not torch.equal(two[0], two[1])  # each process its own stream (they used to repeat each other)
    # one process (the quick start's default) draws what the main process draws: the seed's own stream
    assert torch.equal(_first_batches(mcfg, 1, 1)[0], _first_batches(mcfg, 0, 1)[0])


@pytest.mark.skipif(not torch.cpu._is_avx2_supported(), reason="the pin is for x86 CPUs with AVX2")
def test_quickstart_pins_the_kernels_every_x86_cpu_shares():
    # a fresh process: the kernel path is chosen at the first tensor operation, once per process
    code = "import train.quickstart as q; print(q.pin_cpu_kernels())"
    env = {k: v for k, v in os.environ.items() if k not in PORTABLE_KERNELS}
    run = functools.partial(subprocess.run, capture_output=True, text=True, env=env, check=True, cwd=REPO)
    assert run([sys.executable, "-c", code]).stdout.split() == ["AVX2"]
    native = "import train.quickstart as q; print(q.pin_cpu_kernels(native=True))"
    if "ATEN_CPU_CAPABILITY" not in os.environ:  # this process runs torch's own choice
        assert run([sys.executable, "-c", native]).stdout.split() == [torch.backends.cpu.get_cpu_capability()]
