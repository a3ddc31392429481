"""Flagging unseen class names the text tower embedded without one of their words (train.text_geometry)."""

import numpy as np
import pytest

from train.text_geometry import MARGIN, attribute_balance, warnings

COLOURS, TEXTURES = ("red", "teal", "blue"), ("plain", "striped", "dotted", "wavy")
PAIRS = [(c, t) for c in COLOURS for t in TEXTURES]
UNSEEN = {("red", "striped"), ("teal", "dotted")}
SEEN = [p not in UNSEEN for p in PAIRS]


def composed(pairs, drop=None):
    """Each class = its colour axis + its texture axis (one-hot, orthogonal); ``drop`` = {pair: word slot}."""
    axes = {w: i for i, w in enumerate(COLOURS + TEXTURES)}
    e = np.zeros((len(pairs), len(axes)))
    for k, (c, t) in enumerate(pairs):
        for slot, word in enumerate((c, t)):
            if (drop or {}).get((c, t)) != slot:
                e[k, axes[word]] = 1.0
    return e


def test_balanced_phrases_have_the_cosines_of_two_orthogonal_words():
    b = attribute_balance(composed(PAIRS), PAIRS, SEEN)
    # (c + t)/√2 against (c + t')/√2 = 1/2; against (c' + t)/√2 = 1/2; plain siblings are left out
    assert b["classes"]["red striped"] == {"colour": pytest.approx(0.5), "texture": pytest.approx(0.5)}
    assert b["classes"]["red plain"] == {"colour": pytest.approx(0.5)}  # no texture word to lose
    assert b["seen_floor"] == pytest.approx(0.5)
    assert b["flagged"] == [] and warnings(b) == []


def test_an_unseen_phrase_without_its_colour_is_flagged_and_named():
    b = attribute_balance(composed(PAIRS, drop={("red", "striped"): 0}), PAIRS, SEEN)
    # "red striped" is now the striped axis alone: cos to "red dotted" (red+dotted)/√2 is 0
    assert b["classes"]["red striped"]["colour"] == pytest.approx(0.0)
    assert b["classes"]["red striped"]["texture"] == pytest.approx(1 / np.sqrt(2))
    assert b["flagged"] == ["red striped"] and b["lost"] == {"red striped": "colour"}
    (line,) = warnings(b)
    assert "'red striped' almost without 'red'" in line and "take striped regions of any colour" in line


def test_a_seen_phrase_that_loses_a_word_is_not_flagged_but_lowers_the_reference():
    b = attribute_balance(composed(PAIRS, drop={("blue", "wavy"): 1}), PAIRS, SEEN)
    assert b["flagged"] == []  # only unseen classes are flagged ...
    assert b["seen_floor"] == pytest.approx(0.0)  # ... and a seen class that lost its texture sets the floor


def test_the_margin_decides_near_the_floor():
    e = composed(PAIRS)
    k = PAIRS.index(("teal", "dotted"))
    # blend the phrase towards its texture alone until its colour cosine sits just inside / outside the margin
    for weight, expect in ((0.8, []), (0.05, ["teal dotted"])):
        e2 = e.copy()
        e2[k, COLOURS.index("teal")] = weight
        b = attribute_balance(e2, PAIRS, SEEN)
        gap = b["seen_floor"] - min(b["classes"]["teal dotted"].values())
        assert (gap > MARGIN) == bool(expect) and b["flagged"] == expect
