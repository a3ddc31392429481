"""The compositional zero-shot world and its small CLIP: splits, no leakage, format, zero-shot > chance."""

import hashlib

import numpy as np
import pytest
import torch

from train.clip_pretrain import (
    ClipTrainConfig,
    encode_text_short,
    multi_positive_loss,
    save_clip,
    train_clip,
    zero_shot_accuracy,
)
from train.config_io import load_config, model_config
from train.data import build_dataset
from train.data.captions import CropSampler, positives, templates
from train.data.compositional import COLOURS, World, generate_folder, read_world, texture_image
from train.model.clip import build_clip, encode_text
from train.model.text import tokenize

CONFIG = "configs/zeroshot-world.yaml"
# a reduced CLIP for tests: same graph kinds (ViT + 77-token text transformer), seconds to train
SMALL = [
    "model.clip.embed_dim=32",
    "model.clip.image_size=32",
    "model.clip.patch_size=8",
    "model.clip.vision_width=64",
    "model.clip.vision_layers=2",
    "model.clip.vision_heads=1",
    "model.clip.text_width=64",
    "model.clip.text_heads=1",
    "model.clip.text_layers=2",
]


def test_unseen_classes_are_new_combinations_of_seen_attributes():
    w = World()
    seen = [p for p, s in zip(w.pairs, w.seen) if s]
    unseen = [p for p, s in zip(w.pairs, w.seen) if not s]
    assert len(unseen) == len(w.colours) == 8 and len(w.class_names) == len(set(w.class_names)) == 40
    for colour, texture in unseen:
        assert sum(c == colour for c, _ in seen) >= 3 and sum(t == texture for _, t in seen) >= 3
    assert w.seen[-len(unseen) :] == [False] * len(unseen) and all(w.seen[: -len(unseen)])
    assert World.from_dict(w.to_dict()) == w


def test_light_tone_puts_the_pattern_in_every_channel():
    """Blending the pattern's light tone toward white makes a red or blue texture a luminance pattern
    (visible in all three channels), not one that lives in the colour's own channel."""

    def tones(colour, light):
        img = texture_image(colour, "striped", 64, 64, np.random.default_rng(0), (13.0, 18.0), light)
        dark = img.sum(-1) < np.median(img.sum(-1))
        return img[~dark].mean(0), img[dark].mean(0)

    for colour in ("red", "blue"):
        base = np.array(COLOURS[colour], np.float64)
        bright, dark = tones(colour, 0.0)
        assert (bright - dark).min() < 25 < (bright - dark).max()  # light 0: the weak channels barely change
        bright, dark = tones(colour, 0.3)
        assert (bright - dark).min() > 60, (colour, bright, dark)
        assert np.abs(bright - (base + 0.3 * (255 - base))).max() < 12 and np.abs(dark - 0.55 * base).max() < 12
        plain = texture_image(colour, "plain", 32, 32, np.random.default_rng(0), (13.0, 18.0), 0.3)
        assert np.abs(plain.mean((0, 1)) - base).max() < 0.1 * base.max()  # plain keeps the colour itself
    w = World(light=0.3)
    assert World.from_dict(w.to_dict()) == w
    old = {k: v for k, v in World().to_dict().items() if k != "light"}  # a world written before the field
    assert World.from_dict(old).light == 0.0


def test_folder_world_train_split_has_no_unseen_class_and_is_deterministic(tmp_path):
    w = World()
    a = generate_folder(tmp_path / "a", w, num_train=12, num_val=10, size=96, seed=3)
    b = generate_folder(tmp_path / "b", w, num_train=12, num_val=10, size=96, seed=3)
    for f in sorted(p.relative_to(a) for p in a.rglob("*.png")):
        assert hashlib.sha256((a / f).read_bytes()).digest() == hashlib.sha256((b / f).read_bytes()).digest()
    assert read_world(a) == w
    train, val = build_dataset("folder", str(a), "train"), build_dataset("folder", str(a), "val")
    assert train.class_names == w.class_names and train.seen == w.seen
    unseen_ids = {i for i, s in enumerate(w.seen) if not s}
    in_train = set().union(*(np.unique(train.load(i)[1]).tolist() for i in range(len(train))))
    in_val = set().union(*(np.unique(val.load(i)[1]).tolist() for i in range(len(val))))
    assert not in_train & unseen_ids and in_train <= set(range(40))
    # 10 images x 3-5 regions (background and 2-4 shapes) from a shuffled cycle over all 40 classes:
    # at least 30 distinct draws, of which a shape may lie hidden under a later one
    assert len(in_val) >= 28


def test_captions_never_name_an_unseen_combination():
    w = World()
    unseen = set(w.unseen_pairs)
    sampler = CropSampler(w, 32, (122.8, 116.7, 104.1), (68.5, 66.6, 70.3), seed=5)
    saw_alone = set()
    for _ in range(6):
        crops, captions, img_att, cap_att = sampler.batch(64)
        assert crops.shape == (64, 3, 32, 32) and torch.isfinite(crops).all()
        for (c, t, _), _text in zip(img_att, captions):
            assert (c, t) not in unseen
        for (c, t, _), text in zip(cap_att, captions):
            assert (c, t) not in unseen
            assert not any(f"{uc} {ut}" in text or f"{ut} {uc}" in text for uc, ut in unseen)
            if (c is None) != (t is None):
                saw_alone.add(c or t)
    assert len(saw_alone) >= 8  # single attribute words are captions on their own
    assert "a bad photo of the {}." in templates() and "something {}" in templates()


def test_grey_crops_show_and_name_only_their_texture():
    w, mean, std = World(), (122.8, 116.7, 104.1), (68.5, 66.6, 70.3)
    sampler = CropSampler(w, 32, mean, std, seed=5, grey=0.5)
    crops, captions, img_att, cap_att = sampler.batch(256)
    pixels = crops * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    grey = np.array([c == "grey" for c, _, _ in img_att])
    assert 0.35 < grey.mean() < 0.65
    spread = (pixels.max(1).values - pixels.min(1).values).flatten(1).max(1).values  # max |R-G|, |G-B|, ...
    fill = max(mean) - min(mean)  # a grey pixel blended with the fill at the mask's edge spreads at most this
    assert (spread[grey] <= fill + 0.05).all() and (spread[~grey] > 60).all()
    for i in np.flatnonzero(grey):
        assert cap_att[i][0] is None and cap_att[i][1] == img_att[i][1]  # texture alone
        assert not set(captions[i].replace(".", " ").split()) & set(w.colours)
    pos = positives(img_att, cap_att).numpy()
    names_colour = np.array([c is not None for c, _, _ in cap_att])
    assert not pos[np.ix_(grey, names_colour)].any()  # a grey crop fits no caption that names a colour
    colour_crops = [img_att[i][0] for i in np.flatnonzero(~grey)]
    assert set(colour_crops) <= set(w.colours) and len(set(colour_crops)) == len(w.colours)


def test_positives_follow_the_named_attributes():
    img = [("red", "wavy", None), ("red", "plain", "star"), ("blue", "wavy", "circle")]
    cap = [("red", None, None), (None, "wavy", None), ("red", "plain", "star"), ("blue", "wavy", None)]
    assert positives(img, cap).tolist() == [[1, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1]]
    emb = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    assert torch.isfinite(multi_positive_loss(emb, emb[[0, 0, 1, 2]], positives(img, cap), torch.tensor(10.0)))


def test_short_text_encoding_equals_the_77_token_graph():
    m = model_config(load_config(CONFIG, SMALL))
    clip = build_clip(vars(m.clip))
    tokens = tokenize(["a lime wavy star", "This is a masked photo of a small red dotted", "wavy"])
    assert tokens.shape == (3, 77)
    with torch.no_grad():
        torch.testing.assert_close(encode_text_short(clip, tokens), encode_text(clip, tokens), atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def small_clip():
    """A reduced world (3 colours x 3 textures, 3 unseen) and CLIP, trained for a few seconds."""
    world = World(colours=("red", "yellow", "blue"), textures=("plain", "striped", "dotted"))
    mcfg = model_config(load_config(CONFIG, SMALL))
    run = train_clip(
        world, mcfg, ClipTrainConfig(steps=150, batch_size=48, lr=1e-3, warmup=10, workers=0, threads=1), progress=False
    )
    return world, mcfg, run


def test_small_clip_names_unseen_crops_above_chance(small_clip):
    world, mcfg, run = small_clip
    z = zero_shot_accuracy(run["model"], world, mcfg, per_class=20)
    assert z["unseen_classes"] == 3 and z["chance_unseen_only"] == pytest.approx(1 / 3)
    # unseen crops named among the unseen classes: well above chance (1/3)
    assert z["unseen_acc_unseen_only"] >= 0.6, z
    assert z["seen_acc_all"] > 2 * z["chance_all"], z


def test_saved_clip_is_what_training_and_the_converter_read(small_clip, tmp_path):
    from train.convert_official import infer_clip_config, load_clip_source
    from train.init_weights import load_clip
    from train.model import build_model

    world, mcfg, run = small_clip
    out = save_clip(tmp_path / "clip", run["model"], {"world": world.to_dict()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip"]  # no temporary left behind
    sd = load_clip_source(str(out / "clip.pt"))
    assert infer_clip_config({"clip." + k: v for k, v in sd.items()}, mcfg.clip) == mcfg.clip
    model = build_model(mcfg)
    load_clip(model, str(out / "clip.pt"))
    for k, v in run["model"].state_dict().items():
        assert torch.equal(model.clip.state_dict()[k], v), k
