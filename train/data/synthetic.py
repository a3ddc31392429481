"""Synthetic segmentation data: textured shapes whose colour and texture depend on the class.

    python -m train.data.synthetic --out DIR [--classes 12] [--unseen 3] [--train 200] [--val 50]
    python -m train.data.synthetic --world compositional --out DIR [--train 400] [--val 60]

``--world compositional`` writes the zero-shot world of ``train.data.compositional`` instead:
classes are colour × texture phrases ("lime wavy"), the unseen ones new combinations of seen
attributes, the train split holds seen classes only (``--classes``/``--unseen`` do not apply).

Writes the folder format (``train/data/datasets.py``): ``classes.txt``, ``unseen.txt`` (the last
``--unseen`` classes), ``train/{images,labels}``, ``val/{images,labels}`` and ``meta.json``.
Every image has a background class filling it and a few shapes of other classes on top. The
output is a pure function of the arguments (``--seed``): same arguments, same bytes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image

from .io import write_label

log = logging.getLogger(__name__)

COLOURS: Tuple[Tuple[str, Tuple[int, int, int]], ...] = (
    ("red", (220, 40, 40)),
    ("green", (40, 170, 60)),
    ("blue", (40, 70, 220)),
    ("yellow", (235, 220, 50)),
    ("cyan", (50, 210, 220)),
    ("magenta", (210, 50, 200)),
    ("orange", (245, 140, 30)),
    ("purple", (120, 50, 170)),
    ("white", (240, 240, 240)),
    ("gray", (128, 128, 128)),
    ("brown", (120, 75, 35)),
    ("pink", (250, 160, 190)),
    ("navy", (20, 25, 100)),
    ("lime", (170, 240, 60)),
    ("teal", (20, 120, 120)),
    ("black", (20, 20, 20)),
)
TEXTURES = ("plain", "striped", "dotted", "checkered", "wavy", "speckled")


@dataclass(frozen=True)
class ClassStyle:
    name: str
    colour: Tuple[int, int, int]
    texture: str
    period: int
    angle: float


def class_styles(num_classes: int) -> List[ClassStyle]:
    """Names and appearances of ``num_classes`` classes (distinct colours first, then textures)."""
    styles = []
    nc, nt = len(COLOURS), len(TEXTURES)
    for i in range(num_classes):
        cname, rgb = COLOURS[i % nc]
        texture = TEXTURES[(i + i // nc) % nt]  # unique (colour, texture) pairs for i < nc·nt
        round_ = i // (nc * nt)
        if round_:  # beyond every combination: shift the colour and number the name
            rgb = tuple(int((v + 37 * round_) % 256) for v in rgb)
        name = f"{cname} {texture}" + (f" {round_ + 1}" if round_ else "")
        styles.append(ClassStyle(name, rgb, texture, period=6 + (i * 5) % 9, angle=(i * 47) % 180))
    return styles


def _texture(style: ClassStyle, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """``h×w×3`` float image of one class's texture (random phase and slight colour jitter)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = np.deg2rad(style.angle)
    u = xx * np.cos(theta) + yy * np.sin(theta) + rng.uniform(0, style.period)
    v = -xx * np.sin(theta) + yy * np.cos(theta) + rng.uniform(0, style.period)
    p = float(style.period)
    if style.texture == "plain":
        mod = np.zeros((h, w), np.float32)
    elif style.texture == "striped":
        mod = ((u // (p / 2)) % 2) * 2 - 1
    elif style.texture == "dotted":
        mod = (((u % p) - p / 2) ** 2 + ((v % p) - p / 2) ** 2 < (p / 4) ** 2) * 2.0 - 1
    elif style.texture == "checkered":
        mod = (((u // p) + (v // p)) % 2) * 2 - 1
    elif style.texture == "wavy":
        mod = np.sin(2 * np.pi * (u + 2 * np.sin(2 * np.pi * v / (3 * p))) / p)
    else:  # speckled
        mod = rng.uniform(-1, 1, (h, w)).astype(np.float32)
    base = np.array(style.colour, np.float32) * rng.uniform(0.9, 1.1)
    out = base[None, None, :] * (1 + 0.35 * mod[..., None]) + rng.normal(0, 6, (h, w, 3))
    return out


def _shape_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A random ellipse, rectangle, triangle or polygon covering roughly 3–30 % of the image."""
    mask = np.zeros((h, w), np.uint8)
    cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
    rx, ry = rng.uniform(0.1, 0.3) * w, rng.uniform(0.1, 0.3) * h
    kind = rng.integers(4)
    if kind == 0:
        cv2.ellipse(mask, (int(cx), int(cy)), (int(rx), int(ry)), float(rng.uniform(0, 180)), 0, 360, 1, -1)
    elif kind == 1:
        cv2.rectangle(mask, (int(cx - rx), int(cy - ry)), (int(cx + rx), int(cy + ry)), 1, -1)
    else:
        n = 3 if kind == 2 else int(rng.integers(5, 8))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = rng.uniform(0.6, 1.0, n)
        pts = np.stack([cx + rx * rad * np.cos(ang), cy + ry * rad * np.sin(ang)], 1).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1)
    return mask.astype(bool)


def render(
    styles: Sequence[ClassStyle], rng: np.random.Generator, size: int, max_shapes: int = 4
) -> Tuple[np.ndarray, np.ndarray]:
    """One ``(image H×W×3 uint8, label H×W int32)`` pair."""
    h = int(size * rng.uniform(0.8, 1.25))
    w = int(size * rng.uniform(0.8, 1.25))
    k = len(styles)
    background = int(rng.integers(k))
    label = np.full((h, w), background, np.int32)
    image = _texture(styles[background], h, w, rng)
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        cls = int(rng.integers(k))
        mask = _shape_mask(h, w, rng)
        label[mask] = cls
        image[mask] = _texture(styles[cls], h, w, rng)[mask]
    return np.clip(image, 0, 255).astype(np.uint8), label


def generate(
    out: Path,
    num_classes: int = 12,
    num_unseen: int = 3,
    num_train: int = 200,
    num_val: int = 50,
    size: int = 160,
    seed: int = 0,
    max_shapes: int = 4,
    progress: bool = False,
) -> Path:
    """Write a synthetic dataset to ``out``; returns ``out``."""
    if num_classes < 1 or not 0 <= num_unseen < num_classes:
        raise ValueError("need at least one class and 0 <= unseen < classes (some classes must be seen)")
    styles = class_styles(num_classes)
    out.mkdir(parents=True, exist_ok=True)
    names = [s.name for s in styles]
    (out / "classes.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    (out / "unseen.txt").write_text("".join(n + "\n" for n in names[num_classes - num_unseen :]), encoding="utf-8")
    for split_id, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        (out / split / "images").mkdir(parents=True, exist_ok=True)
        (out / split / "labels").mkdir(parents=True, exist_ok=True)
        items = range(count)
        if progress:
            from tqdm import tqdm

            items = tqdm(items, desc=f"synthetic {split}", unit="img")
        for i in items:
            image, label = render(styles, np.random.default_rng([seed, split_id, i]), size, max_shapes)
            Image.fromarray(image).save(out / split / "images" / f"{i:05d}.png")
            write_label(out / split / "labels" / f"{i:05d}.png", label, num_classes)
    meta = {
        "generator": "train.data.synthetic",
        "classes": num_classes,
        "unseen": num_unseen,
        "train": num_train,
        "val": num_val,
        "size": size,
        "seed": seed,
        "max_shapes": max_shapes,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m train.data.synthetic", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", required=True, type=Path, help="output folder (created)")
    ap.add_argument("--classes", type=int, default=12, help="number of classes (default 12)")
    ap.add_argument("--unseen", type=int, default=3, help="how many (the last ones) are unseen (default 3)")
    ap.add_argument("--train", type=int, default=200, help="training images (default 200)")
    ap.add_argument("--val", type=int, default=50, help="validation images (default 50)")
    ap.add_argument("--size", type=int, default=160, help="nominal image side in pixels (default 160)")
    ap.add_argument("--max-shapes", type=int, default=4, help="most shapes per image (default 4)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--world",
        choices=["classic", "compositional"],
        default="classic",
        help="classic: numbered colour/texture classes (default); compositional: the zero-shot world",
    )
    a = ap.parse_args(argv)
    if a.world == "compositional":
        from .compositional import World, generate_folder

        world = World()
        generate_folder(a.out, world, a.train, a.val, a.size, a.seed, min(a.max_shapes, 3), progress=True)
        print(
            f"wrote {a.train} train + {a.val} val images of the compositional world "
            f"({len(world.class_names)} classes, {len(world.unseen_pairs)} unseen) to {a.out}"
        )
        return 0
    generate(a.out, a.classes, a.unseen, a.train, a.val, a.size, a.seed, a.max_shapes, progress=True)
    print(f"wrote {a.train} train + {a.val} val images, {a.classes} classes ({a.unseen} unseen) to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
