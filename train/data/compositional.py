"""A compositional synthetic world for measurable zero-shot segmentation.

Every region has a **colour** and a **texture** (and, for shapes on top of the background, a
**shape**); a class is a colour × texture phrase such as ``"lime wavy"``. The *unseen* classes are
new combinations of attributes that all occur in seen classes (by default one per colour, on a
diagonal of the colour × texture grid, so every unseen colour and texture is seen with other
partners) — a text encoder can reach them by composition, never by memorising them.

Rules this module enforces (and ``tests/test_zeroshot_world.py`` checks):

* training images (``train`` split) contain seen classes only, and the CLIP crops/captions of
  :func:`sample_scene` exclude the unseen combinations — no unseen phrase is ever a caption or a label;
* validation images contain every class, each about equally often (the official GZSS means need
  every class in the ground truth);
* output is a pure function of the arguments (same seed → same bytes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 135, 20),
    "yellow": (240, 225, 40),
    "lime": (150, 235, 40),
    "teal": (20, 140, 140),
    "blue": (40, 70, 225),
    "purple": (135, 45, 185),
    "pink": (245, 130, 185),
}
TEXTURES = ("plain", "striped", "dotted", "checkered", "wavy")
SHAPES = ("circle", "square", "triangle", "star")
IGNORE = 255


@dataclass(frozen=True)
class World:
    """Attribute vocabularies and which colour × texture pairs are held out (unseen)."""

    # all 8 colours: each word then appears in more seen phrases, and CLIP's text tower composes the
    # unseen ones from both words more often (measured: zeroshot_reproducibility.md, fourth pass)
    colours: Tuple[str, ...] = tuple(COLOURS)
    textures: Tuple[str, ...] = TEXTURES
    unseen_pairs: Tuple[Tuple[str, str], ...] = field(default=())
    # texture period range in pixels (readable in 64-px crops of whole images)
    period: Tuple[float, float] = (13.0, 18.0)
    # the pattern's light tone: the colour blended this far toward white. With 0 (the colour itself) a
    # red or blue pattern shows only in its colour's own channel and the small models learned one
    # texture detector per colour; with 0.3 every texture is a luminance pattern in all three channels
    # (measured: zeroshot_reproducibility.md, fifth pass)
    light: float = 0.3

    def __post_init__(self) -> None:
        if not self.unseen_pairs:  # the diagonal: each colour once, the patterned textures cycling
            # "plain" stays seen: "red plain" is what the text tower makes of the bare colour, so held out
            # it became a catch-all for every red region ZegFormer was unsure of (measured: one seed
            # labelled 99 % of red and blue patterned pixels "red plain" / "blue plain")
            patterned = [t for t in self.textures if t != "plain"] or list(self.textures)
            pairs = tuple((c, patterned[i % len(patterned)]) for i, c in enumerate(self.colours))
            object.__setattr__(self, "unseen_pairs", pairs)
        unknown = [p for p in self.unseen_pairs if p[0] not in COLOURS or p[1] not in TEXTURES]
        if unknown or any(c not in COLOURS for c in self.colours):
            raise ValueError(f"unknown colour/texture in the world: {unknown or self.colours}")

    @property
    def pairs(self) -> List[Tuple[str, str]]:
        """All classes as (colour, texture), colour-major; unseen ones last (dataset convention)."""
        unseen = set(self.unseen_pairs)
        grid = [(c, t) for c in self.colours for t in self.textures]
        return [p for p in grid if p not in unseen] + [p for p in grid if p in unseen]

    @property
    def class_names(self) -> List[str]:
        return [phrase(c, t) for c, t in self.pairs]

    @property
    def seen(self) -> List[bool]:
        unseen = set(self.unseen_pairs)
        return [p not in unseen for p in self.pairs]

    def to_dict(self) -> Dict[str, object]:
        return {
            "colours": list(self.colours),
            "textures": list(self.textures),
            "unseen_pairs": [list(p) for p in self.unseen_pairs],
            "period": list(self.period),
            "light": self.light,
        }

    @classmethod
    def from_dict(cls, d: Dict[str, object]) -> World:
        return cls(
            tuple(d["colours"]),
            tuple(d["textures"]),
            tuple(tuple(p) for p in d["unseen_pairs"]),
            tuple(d.get("period", (10.0, 14.0))),
            float(d.get("light", 0.0)),  # worlds written before the field rendered with 0
        )


def phrase(colour: str, texture: str) -> str:
    return f"{colour} {texture}"


# ---------------------------------------------------------------------------- rendering
def texture_image(
    colour: str,
    texture: str,
    h: int,
    w: int,
    rng: np.random.Generator,
    period: Tuple[float, float] = (10.0, 14.0),
    light: float = 0.0,
) -> np.ndarray:
    """``h×w×3`` float32 image of one colour and texture (random phase, period, ±10° tilt, jitter).

    Textures are two-tone (the colour, blended ``light`` of the way toward white, and a 45 % darker
    version of the colour) with a period drawn from ``period`` (the world's default 13–18 px), so that
    both attributes stay readable in 64-px crops of the whole image (a 144-px background shrinks
    2.25×). Measured (benchmarks/zeroshot.py): at 10–14 px dots and checks blur in CLIP's crops
    (cropmask unseen mIoU 24 %, seen 50 %); at 16–22 px CLIP reads them (unseen 42 %) but the tiny
    ZegFormer segments them worse (seen 27 %); 13–18 px: 43 % / 43 %."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    p = np.float32(rng.uniform(*period))
    theta = np.deg2rad(rng.uniform(-10, 10))  # one orientation per texture: "striped" is vertical stripes
    cos, sin = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    u = xx * cos + yy * sin + np.float32(rng.uniform(0, p))
    v = yy * cos - xx * sin + np.float32(rng.uniform(0, p))
    if texture == "plain":
        dark = np.zeros((h, w), np.float32)
    elif texture == "striped":
        dark = ((u // (p / 2)) % 2).astype(np.float32)
    elif texture == "dotted":
        dark = ((((u % p) - p / 2) ** 2 + ((v % p) - p / 2) ** 2) < (p / 3.2) ** 2).astype(np.float32)
    elif texture == "checkered":
        dark = (((u // (p * 0.6)) + (v // (p * 0.6))) % 2).astype(np.float32)
    elif texture == "wavy":
        dark = (np.sin(2 * np.pi * (u + 0.22 * p * np.sin(2 * np.pi * v / (1.6 * p))) / p) > 0).astype(np.float32)
    else:
        raise ValueError(f"unknown texture {texture!r}")
    base = np.array(COLOURS[colour], np.float32) * rng.uniform(0.92, 1.08)
    noise = rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(5)
    tone = base if texture == "plain" else base + np.float32(light) * (np.float32(255) - base)
    d = dark[..., None]
    return tone * (1.0 - d) + base * np.float32(0.55) * d + noise


def shape_mask(kind: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A bool mask of a circle, square, triangle or star covering roughly 4–25 % of the image."""
    mask = np.zeros((h, w), np.uint8)
    r = rng.uniform(0.16, 0.3) * min(h, w)
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    rot = rng.uniform(0, 2 * np.pi)
    if kind == "circle":
        cv2.circle(mask, (int(cx), int(cy)), int(r), 1, -1)
    else:
        n, radii = {"square": (4, [1.0]), "triangle": (3, [1.1]), "star": (10, [1.15, 0.5])}[kind]
        ang = rot + np.arange(n) * 2 * np.pi / n
        rad = r * np.array([radii[i % len(radii)] for i in range(n)])
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).round().astype(np.int32)
        cv2.fillPoly(mask, [pts], 1)
    return mask.astype(bool)


@dataclass
class Scene:
    image: np.ndarray  # H×W×3 uint8
    label: np.ndarray  # H×W int32 class indices (into World.pairs)
    regions: List[Dict[str, object]]  # per region: class, colour, texture, shape ("background" for the first)


def render_scene(world: World, classes: Sequence[int], rng: np.random.Generator, size: int = 144) -> Scene:
    """Background of ``classes[0]`` with shapes of ``classes[1:]`` on top (later shapes occlude)."""
    pairs = world.pairs
    h = int(size * rng.uniform(0.85, 1.15))
    w = int(size * rng.uniform(0.85, 1.15))
    c0, t0 = pairs[classes[0]]
    image = texture_image(c0, t0, h, w, rng, world.period, world.light)
    label = np.full((h, w), classes[0], np.int32)
    regions = [{"class": int(classes[0]), "colour": c0, "texture": t0, "shape": "background"}]
    for k in classes[1:]:
        c, t = pairs[k]
        kind = str(rng.choice(SHAPES))
        mask = shape_mask(kind, h, w, rng)
        ys, xs = np.nonzero(mask)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        box = mask[y0:y1, x0:x1]  # texture only the shape's box (its phase is random anyway)
        image[y0:y1, x0:x1][box] = texture_image(c, t, y1 - y0, x1 - x0, rng, world.period, world.light)[box]
        label[mask] = k
        regions.append({"class": int(k), "colour": c, "texture": t, "shape": kind})
    return Scene(np.clip(image, 0, 255).astype(np.uint8), label, regions)


class ClassStream:
    """An endless shuffled cycle over ``ids``: every class equally often, in random order."""

    def __init__(self, ids: Sequence[int], rng: np.random.Generator):
        self.ids, self.rng, self.queue = list(ids), rng, []

    def take(self, n: int) -> List[int]:
        """``n`` distinct classes (duplicates drawn meanwhile go back to the queue)."""
        if n > len(set(self.ids)):
            raise ValueError(f"cannot take {n} distinct classes out of {len(set(self.ids))}")
        out: List[int] = []
        deferred: List[int] = []
        while len(out) < n:
            if not self.queue:
                self.queue = [int(k) for k in self.rng.permutation(self.ids)]
            k = self.queue.pop()
            (deferred if k in out else out).append(k)
        self.queue.extend(deferred)
        return out


def scene_classes(world: World, split: str) -> List[int]:
    """Class indices that may appear in a split: seen only for ``train``, all for ``val``."""
    return [i for i, s in enumerate(world.seen) if s or split != "train"]


def generate_folder(
    out: Path,
    world: World,
    num_train: int,
    num_val: int,
    size: int = 144,
    seed: int = 0,
    max_shapes: int = 3,
    progress: bool = False,
    val_seed: Optional[int] = None,
) -> Path:
    """Write the folder dataset (``classes.txt``, ``unseen.txt``, ``{train,val}/{images,labels}``,
    ``meta.json``); the train split holds seen classes only. ``val_seed`` (default ``seed``) draws the
    held-out images: a fixed one keeps the same test set while ``seed`` changes the training images."""
    from PIL import Image

    from .io import write_label

    out.mkdir(parents=True, exist_ok=True)
    names = world.class_names
    (out / "classes.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    (out / "unseen.txt").write_text("".join(n + "\n" for n, s in zip(names, world.seen) if not s), encoding="utf-8")
    val_seed = seed if val_seed is None else val_seed
    for split_id, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        split_seed = seed if split == "train" else val_seed
        (out / split / "images").mkdir(parents=True, exist_ok=True)
        (out / split / "labels").mkdir(parents=True, exist_ok=True)
        stream = ClassStream(scene_classes(world, split), np.random.default_rng([split_seed, split_id, 7]))
        items = range(count)
        if progress:
            from tqdm import tqdm

            items = tqdm(items, desc=f"world {split}", unit="img")
        for i in items:
            rng = np.random.default_rng([split_seed, split_id, i])
            scene = render_scene(world, stream.take(1 + int(rng.integers(1, max_shapes + 1))), rng, size)
            Image.fromarray(scene.image).save(out / split / "images" / f"{i:05d}.png")
            write_label(out / split / "labels" / f"{i:05d}.png", scene.label, len(names))
    meta = {
        "generator": "train.data.compositional",
        "world": world.to_dict(),
        "train": num_train,
        "val": num_val,
        "size": size,
        "seed": seed,
        "val_seed": val_seed,
        "max_shapes": max_shapes,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return out


def read_world(root: Path) -> Optional[World]:
    """The world a folder dataset was generated from (``meta.json``), or ``None``."""
    meta = Path(root) / "meta.json"
    if not meta.is_file():
        return None
    d = json.loads(meta.read_text(encoding="utf-8"))
    return World.from_dict(d["world"]) if "world" in d else None
