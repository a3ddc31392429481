"""Image–caption pairs of the compositional world, for training a small CLIP from scratch.

Images are what the SDK's CLIP branch sees: **masked region crops** of rendered scenes (the region's
mask applied, everything else CLIP-normalised zero, the mask's box resized to the crop size, as
``train.model.postprocess.masked_crops`` does) — with slightly eroded/dilated masks, as predicted
masks are — and **whole images** (scenes of one region only). Captions name the region by some of
its attributes through a template: the official CLIP prompt templates plus plain ones, with the
full phrase (``"lime wavy"``, or ``"wavy lime"``), one attribute alone (``"a lime region"``,
``"something wavy"``), or with the shape (``"a lime wavy star"``), so that each word is grounded on
its own. Single-attribute captions are as frequent as full phrases (``CAPTION_MIX``): with 60 %
full phrases the embeddings memorised seen pairs and held-out crops of unseen pairs were named
among all classes 22 % of the time after 300 steps, 32 % with the balanced mix. Unseen colour ×
texture combinations never appear (scenes draw seen classes only).

A share of crops (``grey``) is shown in grey and captioned by its texture alone. Without them the
image tower tied each texture to the colours it was seen with: a texture named by attribute-only
prompts was right for 15–25 % of held-out crops of unseen pairs (90 % for seen pairs), e.g. lime
checkered read as lime wavy in every seed. With 30 % grey crops and 800 steps, held-out crops of
unseen classes were named among all 30 classes of the 6-colour world 67 / 94 / 73 % of the time over
seeds 0–2 (43 / 56 / 34 % before); in today's world (8 colours, textures in every channel, a one-layer
text tower) 92 / 93 / 93 % among all 40.

A caption is *true* of every crop whose attributes it names (``"something wavy"`` fits all wavy
crops): :func:`positives` gives that matrix for a multi-positive contrastive loss.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..classes import prompt_templates
from .compositional import ClassStream, World, render_scene

Attributes = Tuple[Optional[str], Optional[str], Optional[str]]  # colour, texture, shape (None = unnamed)
EXTRA_TEMPLATES = (
    "{}",
    "a {} region",
    "a {} pattern",
    "a {} texture",
    "something {}",
    "a patch of {}",
    "the {} area",
    "a {} shape",
)


def templates() -> List[str]:
    """Every template captions are drawn from: the official three ensembles plus plain ones."""
    out: List[str] = []
    for kind in ("single", "imagenet_select", "imagenet_select_clip"):
        out += [t for t in prompt_templates(kind) if t not in out]
    return out + [t for t in EXTRA_TEMPLATES if t not in out]


def describe(colour: Optional[str], texture: Optional[str], shape: Optional[str], rng: np.random.Generator) -> str:
    """The words for some attributes, in a random order of colour and texture, shape last."""
    words = [w for w in (colour, texture) if w]
    if len(words) == 2 and rng.random() < 0.25:
        words.reverse()
    if shape:
        words.append(shape)
    return " ".join(words)


CAPTION_MIX = (0.3, 0.3, 0.3, 0.1)  # P(colour+texture), P(colour alone), P(texture alone), P(all + shape)


def sample_caption(
    region: Dict[str, object], rng: np.random.Generator, pool: Sequence[str], mix: Sequence[float] = CAPTION_MIX
) -> Tuple[str, Attributes]:
    """A caption of one region and the attributes it names (which ones: drawn with ``mix``)."""
    colour, texture = str(region["colour"]), str(region["texture"])
    shape = None if region["shape"] == "background" else str(region["shape"])
    r = rng.random() * sum(mix)
    if region.get("grey"):  # a grey crop shows its texture only
        att: Attributes = (None, texture, None)
    elif r < mix[0]:
        att = (colour, texture, None)
    elif r < mix[0] + mix[1]:
        att = (colour, None, None)
    elif r < mix[0] + mix[1] + mix[2]:
        att = (None, texture, None)
    else:
        att = (colour, texture, shape)
    template = pool[int(rng.integers(len(pool)))]
    return template.format(describe(*att, rng)), att


def positives(image_att: Sequence[Tuple[str, str, str]], caption_att: Sequence[Attributes]) -> torch.Tensor:
    """``[N_images, N_captions]`` float: 1 where the caption is true of the image."""
    img = np.array(image_att, dtype=object)
    out = np.ones((len(image_att), len(caption_att)), np.float32)
    for j, att in enumerate(caption_att):
        for a, value in enumerate(att):
            if value is not None:
                out[:, j] *= img[:, a] == value
    return torch.from_numpy(out)


def _jitter_mask(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import cv2

    k = int(rng.integers(0, 4))
    if k == 0:
        return mask
    kernel = np.ones((2 * k + 1, 2 * k + 1), np.uint8)
    op = cv2.dilate if rng.random() < 0.5 else cv2.erode
    out = op(mask.astype(np.uint8), kernel).astype(bool)
    return out if out.any() else mask


def greyscale(image: np.ndarray) -> np.ndarray:
    """The image's luma in all three channels (ITU-R BT.601 weights)."""
    luma = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat(luma[..., None], 3, axis=2)


def masked_crop(image: np.ndarray, mask: np.ndarray, size: int, fill: Sequence[float]) -> np.ndarray:
    """``size×size×3`` float32 crop of the mask's box with the outside set to ``fill`` (CLIP's mean
    colour, i.e. 0 after normalisation) — a cheap equivalent of the official cropmask (area
    averaging when shrinking, bilinear when enlarging, like ROI-align's adaptive sampling)."""
    import cv2

    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    box = np.where(mask[y0:y1, x0:x1, None], image[y0:y1, x0:x1].astype(np.float32), np.asarray(fill, np.float32))
    interp = cv2.INTER_AREA if max(y1 - y0, x1 - x0) > size else cv2.INTER_LINEAR
    return cv2.resize(box, (size, size), interpolation=interp)


class CropSampler:
    """Endless batches of (crops ``[B,3,S,S]``, captions, image attributes, caption attributes)."""

    def __init__(
        self,
        world: World,
        crop_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        seed: Union[int, Sequence[int]] = 0,
        image_size: int = 144,
        max_shapes: int = 3,
        whole_image: float = 0.15,
        classes: Optional[Sequence[int]] = None,
        caption_mix: Sequence[float] = CAPTION_MIX,
        grey: float = 0.0,
    ):
        self.world, self.crop_size, self.mean, self.std = world, crop_size, mean, std
        key = [int(x) for x in np.atleast_1d(seed)]  # an int, or (seed, worker) for a data process
        self.rng = np.random.default_rng([*key, 11])
        ids = [i for i, s in enumerate(world.seen) if s] if classes is None else list(classes)
        self.stream = ClassStream(ids, np.random.default_rng([*key, 12]))
        self.image_size, self.max_shapes, self.whole_image = image_size, max_shapes, whole_image
        self.pool, self.caption_mix, self.grey = templates(), tuple(caption_mix), float(grey)

    def regions(self, jitter: bool = True):
        """One scene's masked, CLIP-normalised crops ``[R,3,S,S]`` and region records."""
        rng = self.rng
        n = 1 if rng.random() < self.whole_image else 1 + int(rng.integers(1, self.max_shapes + 1))
        scene = render_scene(self.world, self.stream.take(n), rng, self.image_size)
        crops, keep = [], []
        for region in scene.regions:
            mask = scene.label == region["class"]
            if mask.sum() < 64:  # fully occluded shapes have nothing to show
                continue
            image = scene.image
            if self.grey and rng.random() < self.grey:
                image, region = greyscale(image), {**region, "grey": True}
            crops.append(masked_crop(image, _jitter_mask(mask, rng) if jitter else mask, self.crop_size, self.mean))
            keep.append(region)
        x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)
        return (x - torch.tensor(self.mean).view(1, 3, 1, 1)) / torch.tensor(self.std).view(1, 3, 1, 1), keep

    def batch(self, size: int):
        crops, regions = [], []
        while len(regions) < size:
            c, r = self.regions()
            crops.append(c)
            regions += r
        crops_t = torch.cat(crops)[:size]
        regions = regions[:size]
        captions, cap_att = zip(*(sample_caption(r, self.rng, self.pool, self.caption_mix) for r in regions))
        img_att = [
            ("grey" if r.get("grey") else r["colour"], r["texture"], None if r["shape"] == "background" else r["shape"])
            for r in regions
        ]
        return crops_t, list(captions), img_att, list(cap_att)
