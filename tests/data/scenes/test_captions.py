"""Captions of the scenes: true short captions, long captions, verified hard negatives.

Truth is checked with an independent parser/evaluator of the caption grammar written here
(the generator's own evaluator is not used), and triangle directions from the polygon's apex.
"""

from __future__ import annotations

import numpy as np
import pytest

from cl_bench.data.scenes.captions import (
    CAPTION_WORDS,
    HARD_NEGATIVE_KINDS,
    hard_negatives,
    long_caption,
    object_phrase,
    short_captions,
    split_sentences,
)
from cl_bench.data.scenes.world import COLOURS, SHAPES, SIZE_RANGES, SceneObject, generate_scenes, shape_polygon

NUMS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
PLURAL = {"circles": "circle", "squares": "square", "triangles": "triangle", "stars": "star",
          "crosses": "cross", "diamonds": "diamond"}
RELS = [" left of ", " right of ", " in front of ", " behind ", " above ", " below "]


@pytest.fixture(scope="module")
def scenes():
    return generate_scenes(300, seed=3, size=64)


def parse_phrase(text: str) -> dict:
    w = text.split()
    crowd = w[:3] == ["a", "group", "of"]
    rest = w[3:] if crowd else w[1:]
    assert (w[0] in ("a", "an")), text
    if not crowd:
        assert w[0] == ("an" if w[1][0] in "aeiou" else "a"), text
    noun = rest[-1]
    shape = PLURAL[noun] if crowd else noun
    assert shape in SHAPES, text
    size = next((x for x in rest[:-1] if x in SIZE_RANGES), None)
    colour = next((x for x in rest[:-1] if x in COLOURS), None)
    assert len(rest[:-1]) == (size is not None) + (colour is not None), text
    return {"shape": shape, "colour": colour, "size": size, "crowd": crowd}


def matches(p: dict, o: SceneObject) -> bool:
    return (o.shape == p["shape"] and o.crowd == p["crowd"] and p["colour"] in (None, o.colour)
            and p["size"] in (None, o.size))


def apex_direction(o: SceneObject) -> str:
    ax, ay = shape_polygon("triangle", o.center[0], o.center[1], o.radius, o.rotation)[0]
    v = np.array([ax - o.center[0], ay - o.center[1]])
    dirs = {"up": (0, -1), "down": (0, 1), "left": (-1, 0), "right": (1, 0)}
    return max(dirs, key=lambda d: float(v @ np.array(dirs[d])))


def related(scene, i: int, rel: str, j: int) -> bool:
    table = {(r["subject"], r["relation"], r["object"]) for r in scene.relations}
    base, swap = {"left of": ("left of", 0), "right of": ("left of", 1), "above": ("above", 0),
                  "below": ("above", 1), "in front of": ("in front of", 0), "behind": ("in front of", 1)}[rel]
    return ((j, base, i) if swap else (i, base, j)) in table


def holds(scene, text: str) -> bool:
    w = text.split()
    objs = scene.objects
    if w[0] in NUMS:
        shape = PLURAL.get(w[1], w[1])
        assert not any(o.crowd and o.shape == shape for o in objs), "count caption for a crowded shape"
        return sum(o.shape == shape and not o.crowd for o in objs) == NUMS[w[0]]
    if " pointing " in text:
        ph, d = text.split(" pointing ")
        p = parse_phrase(ph)
        return any(matches(p, o) and apex_direction(o) == d for o in objs)
    if " and " in text:
        a, b = (parse_phrase(t) for t in text.split(" and "))
        return any(matches(a, o) for o in objs) and any(matches(b, o) for o in objs)
    for rel in RELS:
        if rel in text:
            a, b = (parse_phrase(t) for t in text.split(rel))
            return any(matches(a, oi) and matches(b, oj) and i != j and related(scene, i, rel.strip(), j)
                       for i, oi in enumerate(objs) for j, oj in enumerate(objs))
    p = parse_phrase(text)
    return any(matches(p, o) for o in objs)


def test_object_phrase_articles_and_crowds():
    o = SceneObject("star", "orange", "large", (10.0, 10.0), 5.0, 0.0)
    assert object_phrase(o) == "a large orange star"
    o2 = SceneObject("cross", "orange", "small", (10.0, 10.0), 5.0, 0.0, crowd=True)
    assert object_phrase(o2) == "a group of small orange crosses"


def test_short_captions_are_true_distinct_and_mention_the_largest(scenes):
    distinct = 0
    for s in scenes:
        caps = short_captions(s, 5, seed=0)
        assert len(caps) == 5
        for c in caps:
            assert holds(s, c), (s.scene_id, c)
            assert set(c.split()) <= set(CAPTION_WORDS)
            assert "." not in c
        distinct += len(set(caps)) == 5
        big = max(s.objects, key=lambda o: o.area)
        first = caps[0]
        assert big.shape in first or (big.crowd and any(PLURAL[w] == big.shape for w in first.split() if w in PLURAL))
    assert distinct == len(scenes)  # even a one-object scene supports 5 different captions


def test_short_captions_deterministic_and_seeded(scenes):
    assert short_captions(scenes[0], 5, 1) == short_captions(scenes[0], 5, 1)
    assert any(short_captions(s, 5, 1) != short_captions(s, 5, 2) for s in scenes[:20])
    small = min(scenes, key=lambda s: len(s.objects))
    caps = short_captions(small, 40, 0)  # more than the scene supports: cycles, still true
    assert len(caps) == 40 and all(holds(small, c) for c in caps)
    with pytest.raises(ValueError):
        short_captions(small, 0, 0)


def test_long_caption_mentions_every_object(scenes):
    for s in scenes[:100]:
        text = long_caption(s)
        assert text.endswith(".") and ". " in text
        sents = split_sentences(text)
        assert ". ".join(sents) + "." == text
        assert len(sents) >= 1 + len(s.objects)
        assert sents[0].startswith("a street scene with") and sents[0].endswith("under the sky")
        for o in s.objects:
            assert f"there is {object_phrase(o)}" in text
        assert set(text.replace(".", "").split()) <= set(CAPTION_WORDS)
        for sent in sents:
            if sent.startswith("the ") and " is " in sent:  # relation sentences are true
                a, rest = sent[4:].split(" is ", 1)
                rel = next(r.strip() for r in RELS if rest.startswith(r.strip() + " "))
                b = rest[len(rel) + 5:]
                art = lambda t: ("an " if t[0] in "aeiou" and not t.startswith("group") else "a ") + t
                assert holds(s, f"{art(a)} {rel} {art(b)}"), sent


def test_hard_negatives_false_one_swap_positive_true(scenes):
    kinds: dict[str, int] = {}
    swap_words = {"colour": set(COLOURS), "shape": set(SHAPES) | set(PLURAL), "left_right": {"left", "right"},
                  "orientation": {"up", "down", "left", "right"}}
    for s in scenes:
        negs = hard_negatives(s, seed=0)
        assert len(negs) >= 2
        assert [n["kind"] for n in negs] == [k for k in HARD_NEGATIVE_KINDS if k in {n["kind"] for n in negs}]
        for n in negs:
            kinds[n["kind"]] = kinds.get(n["kind"], 0) + 1
            assert holds(s, n["positive"]), n
            assert not holds(s, n["text"]), n
            assert set(n["text"].split()) <= set(CAPTION_WORDS)
            p, t = n["positive"].split(), n["text"].split()
            assert len(p) == len(t), n
            diff = [(x, y) for x, y in zip(p, t) if x != y]
            if n["kind"] == "count":
                assert NUMS[t[0]] == NUMS[p[0]] + 1 and PLURAL.get(t[1], t[1]) == PLURAL.get(p[1], p[1])
            else:
                diff = [(x, y) for x, y in diff if {x, y} != {"a", "an"}]  # "a red" -> "an orange"
                assert len(diff) == 1, n
                assert set(diff[0]) <= swap_words[n["kind"]], n
    assert set(kinds) == set(HARD_NEGATIVE_KINDS), kinds
    assert all(v >= 10 for v in kinds.values()), kinds


def test_caption_words_cover_every_colour_shape_and_number():
    words = set(CAPTION_WORDS)
    assert set(COLOURS) | set(SHAPES) | set(PLURAL) | set(SIZE_RANGES) <= words
    assert {"one", "two", "three", "four", "five", "left", "right", "pointing"} <= words
    assert list(CAPTION_WORDS) == sorted(words)
