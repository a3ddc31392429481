"""Does CLIP's text tower compose each unseen class name from both of its words?

The text tower never reads an unseen phrase in training ("yellow checkered" is held out; "yellow"
and "checkered" are not). In some seeds it then embeds the phrase as little more than one of its
words: "yellow checkered" lands with the checkered phrases and far from the yellow ones. Such a
phrase becomes a catch-all: ZegFormer's classifier and CLIP's crop classifier both give it regions
of that word whatever their other attribute (measured: every checkered region of five colours
labelled "yellow checkered"), so its IoU collapses and it takes the seen classes' pixels with it.

The measure, from text embeddings alone (seconds, no images): for each class, the mean cosine to
the other classes sharing its colour and to those sharing its texture; the smaller of the two is its
weakest attribute. Seen classes, which the tower was trained on, set the reference. Over the seven
testbed CLIPs we kept (34 unseen patterned classes, each CLIP with one to three ZegFormers), the three
classes flagged by :data:`MARGIN` scored cropmask IoU 3–32 % with every ZegFormer; the others 39–94 %
with the shipped recipe. A flag just past the margin (0.17, in an 8-colour world) was a milder
catch-all: a third of two classes' pixels, IoU 52 (``benchmarks/results/zeroshot_reproducibility.md``,
fourth pass). An unseen *plain* class is the bare colour, a catch-all by construction, which is why
the world keeps them seen.
This reads the unseen class *names* after training, as evaluation does; nothing here trains.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np

from .data.compositional import phrase

MARGIN = 0.15  # flagged: weakest attribute this far below the weakest seen phrase's
NEUTRAL = "plain"  # "red plain" is the bare colour: it has no texture word to lose


def _siblings(pairs: Sequence[Tuple[str, str]], k: int, slot: int) -> List[int]:
    return [j for j, p in enumerate(pairs) if j != k and p[slot] == pairs[k][slot] and p[1] != NEUTRAL]


def attribute_balance(
    embeddings: np.ndarray, pairs: Sequence[Tuple[str, str]], seen: Sequence[bool]
) -> Dict[str, object]:
    """Per class, mean cosine to its same-colour and same-texture siblings; the unseen classes whose
    weakest attribute sits :data:`MARGIN` below every seen patterned class's (``flagged``, weakest first).

    ``embeddings``: ``[K, D]`` text embeddings of the classes ``pairs`` (colour, texture), in order."""
    e = np.asarray(embeddings, np.float64)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    sim = e @ e.T
    names = [phrase(c, t) for c, t in pairs]
    classes: Dict[str, Dict[str, float]] = {}
    for k, name in enumerate(names):
        same = {attr: _siblings(pairs, k, slot) for slot, attr in enumerate(("colour", "texture"))}
        classes[name] = {attr: float(sim[k, idx].mean()) for attr, idx in same.items() if idx}
    weakest = {n: min(v.values()) for n, v in classes.items() if v}
    seen_ref = [weakest[n] for n, s, p in zip(names, seen, pairs) if s and n in weakest and p[1] != NEUTRAL]
    floor = min(seen_ref) if seen_ref else None  # no seen patterned class: nothing to compare with
    limit = -np.inf if floor is None else floor - MARGIN
    flagged = sorted(
        (n for n, s in zip(names, seen) if not s and weakest.get(n, np.inf) < limit), key=weakest.__getitem__
    )
    lost = {n: min(classes[n], key=classes[n].__getitem__) for n in flagged}  # the weaker attribute
    return {"classes": classes, "seen_floor": floor, "margin": MARGIN, "flagged": flagged, "lost": lost}


def warnings(balance: Dict[str, object]) -> List[str]:
    """One plain sentence per flagged unseen class (what the quick start prints)."""
    out = []
    for name in balance["flagged"]:
        attr = balance["lost"][name]
        colour, texture = name.split(" ", 1)
        lost, kept = (colour, texture) if attr == "colour" else (texture, colour)
        out.append(
            f"CLIP's text tower embeds the unseen class {name!r} almost without {lost!r} (mean cosine "
            f"{balance['classes'][name][attr]:.2f} to the other classes of its {attr}; every seen class "
            f">= {balance['seen_floor']:.2f}): expect it to take {kept} regions of any {attr} (a catch-all) "
            "and to score low. This is a draw of this seed's CLIP, not a fault of the install."
        )
    return out
