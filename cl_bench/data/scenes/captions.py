"""Captions of the procedural scenes (:mod:`cl_bench.data.scenes.world`): short captions, long
multi-sentence descriptions and verified hard negatives.

Every text is lower case, words separated by single spaces, with no punctuation except the
``.`` that ends each sentence of a long caption (sentences are joined by ``". "``, so
:func:`split_sentences` recovers them — DreamLIP samples sub-captions that way). Every word
the generator (and the counterfactual twins of :mod:`cl_bench.data.scenes.captioned`) can emit
is in :data:`CAPTION_WORDS`.

The grammar of a short caption or a hard negative (existential semantics: "a red star left
of a blue circle" holds iff SOME red star is left of SOME blue circle)::

    caption  := phrase | phrase " and " phrase | phrase " " REL " " phrase
              | NUMBER " " shape(s)                  (exactly that many single objects)
              | phrase " pointing " DIRECTION         (triangles: the apex direction)
    phrase   := ("a" | "an") [size] [colour] shape | "a group of " [size] [colour] shapes
    REL      := "left of" | "right of" | "above" | "below" | "in front of" | "behind"

"X left of Y" / "X above Y" / "X in front of Y" are the scene's own relation table
(:func:`cl_bench.data.scenes.world.generate_scene`: centres apart by half the summed radii; drawn
later and overlapping); "X right of Y" is "Y left of X", "below" and "behind" likewise.
A crowd (a cluster of tiny same-shape objects) is only ever "a group of ..." and is not
counted by NUMBER captions (no count caption is made for a shape that has a crowd).

A hard negative swaps exactly one attribute or relation of a true caption (its
``positive``) — colour, shape, count (k -> k + 1, false under both "exactly" and "at least"
readings), left/right, or a triangle's direction (-> the opposite one) — and is kept only
if the swapped statement is false for the scene under the semantics above.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace

import numpy as np

from cl_bench.data.scenes.world import COLOURS, SHAPES, SIZE_RANGES, Scene, SceneObject

NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                                 "ten")
PLURALS: dict[str, str] = {s: (s + "es" if s.endswith(("s", "x", "ch", "sh")) else s + "s") for s in SHAPES}
DIRECTIONS: dict[str, float] = {"right": 0.0, "down": 90.0, "left": 180.0, "up": 270.0}  # image coords, y down
OPPOSITE: dict[str, str] = {"right": "left", "left": "right", "up": "down", "down": "up"}
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below", "in front of", "behind")
# the relation of the scene table that a word relation reads, and whether subject/object swap
_REL_TABLE: dict[str, tuple[str, bool]] = {
    "left of": ("left of", False), "right of": ("left of", True), "above": ("above", False),
    "below": ("above", True), "in front of": ("in front of", False), "behind": ("in front of", True),
}
BACKGROUND_WORDS: dict[str, str] = {  # scenes region name -> the word a caption uses
    "sky": "sky", "building": "building", "wall": "wall", "vegetation": "trees", "terrain": "grass",
    "sidewalk": "sidewalk", "road": "road", "ground": "ground",
}
HARD_NEGATIVE_KINDS: tuple[str, ...] = ("colour", "shape", "count", "left_right", "orientation")
MAX_LONG_RELATIONS = 4  # relation sentences in a long caption
_ORIENTATION_TOLERANCE = 30.0  # a triangle is described only within this many degrees of a direction

_FUNCTION_WORDS = ("a", "an", "the", "and", "of", "group", "there", "is", "are", "pointing", "on", "in", "with",
                   "under", "street", "scene", "middle", "front", "behind", "above", "below", "left", "right",
                   "up", "down", "no")  # "no": only in the counterfactual twins' "there is no X" (captioned.py)
CAPTION_WORDS: tuple[str, ...] = tuple(sorted(set(
    _FUNCTION_WORDS + SHAPES + tuple(PLURALS.values()) + tuple(COLOURS) + tuple(SIZE_RANGES)
    + NUMBER_WORDS[1:] + tuple(BACKGROUND_WORDS.values())
)))


@dataclass(frozen=True)
class Phrase:
    """A noun phrase: the objects with this shape (and colour / size when given)."""

    shape: str
    colour: str | None = None
    size: str | None = None
    crowd: bool = False

    def text(self) -> str:
        words = [w for w in (self.size, self.colour) if w]
        if self.crowd:
            return " ".join(["a group of", *words, PLURALS[self.shape]])
        return " ".join([_article(words[0] if words else self.shape), *words, self.shape])

    def matches(self, o: SceneObject) -> bool:
        return (o.shape == self.shape and o.crowd == self.crowd and self.colour in (None, o.colour)
                and self.size in (None, o.size))


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def object_phrase(obj: SceneObject) -> str:
    """``"a large red star"``; a crowd: ``"a group of small red stars"``."""
    return Phrase(obj.shape, obj.colour, obj.size, obj.crowd).text()


def triangle_direction(obj: SceneObject) -> str | None:
    """Where a triangle's apex points ("up", "right", "down", "left"), or None when the apex is
    more than 30 degrees from every direction (or the object is not a single triangle)."""
    if obj.shape != "triangle" or obj.crowd:
        return None
    apex = (270.0 + obj.rotation) % 360.0
    for name, angle in DIRECTIONS.items():
        if abs((apex - angle + 180.0) % 360.0 - 180.0) <= _ORIENTATION_TOLERANCE:
            return name
    return None


def _nearest_direction(obj: SceneObject) -> str:
    apex = (270.0 + obj.rotation) % 360.0
    return min(DIRECTIONS, key=lambda n: abs((apex - DIRECTIONS[n] + 180.0) % 360.0 - 180.0))


# ----------------------------------------------------------------------------- statements


@dataclass(frozen=True)
class _Statement:
    """One short caption in structured form (kind: one | and | rel | count | orient)."""

    kind: str
    a: Phrase | None = None
    b: Phrase | None = None
    rel: str = ""
    count: int = 0
    shape: str = ""
    direction: str = ""

    def text(self) -> str:
        if self.kind == "one":
            return self.a.text()
        if self.kind == "and":
            return f"{self.a.text()} and {self.b.text()}"
        if self.kind == "rel":
            return f"{self.a.text()} {self.rel} {self.b.text()}"
        if self.kind == "count":
            return f"{NUMBER_WORDS[self.count]} {self.shape if self.count == 1 else PLURALS[self.shape]}"
        return f"{self.a.text()} pointing {self.direction}"


def _related(scene: Scene, i: int, rel: str, j: int) -> bool:
    table_rel, swap = _REL_TABLE[rel]
    s, o = (j, i) if swap else (i, j)
    return any(r["subject"] == s and r["object"] == o and r["relation"] == table_rel for r in scene.relations)


def _holds(scene: Scene, st: _Statement) -> bool:
    objs = scene.objects
    if st.kind == "count":
        if any(o.crowd and o.shape == st.shape for o in objs):
            return False  # undefined: never emitted
        return sum(o.shape == st.shape and not o.crowd for o in objs) == st.count
    ia = [k for k, o in enumerate(objs) if st.a.matches(o)]
    if st.kind == "one":
        return bool(ia)
    if st.kind == "orient":
        return any(_nearest_direction(objs[k]) == st.direction for k in ia)
    ib = [k for k, o in enumerate(objs) if st.b.matches(o)]
    if st.kind == "and":
        return bool(ia) and bool(ib)
    return any(i != j and _related(scene, i, st.rel, j) for i in ia for j in ib)


def _phrase_variants(o: SceneObject) -> list[Phrase]:
    if o.crowd:
        return [Phrase(o.shape, o.colour, None, True), Phrase(o.shape, o.colour, o.size, True)]
    return [Phrase(o.shape, o.colour), Phrase(o.shape, o.colour, o.size), Phrase(o.shape, None, o.size),
            Phrase(o.shape)]


def _counts(scene: Scene) -> dict[str, int]:
    crowded = {o.shape for o in scene.objects if o.crowd}
    out: dict[str, int] = {}
    for o in scene.objects:
        if not o.crowd and o.shape not in crowded:
            out[o.shape] = out.get(o.shape, 0) + 1
    return out


def _true_statements(scene: Scene) -> list[_Statement]:
    """Every short caption the generator may emit for ``scene``, in a fixed order."""
    objs = scene.objects
    out: list[_Statement] = []
    for o in objs:
        out += [_Statement("one", p) for p in _phrase_variants(o)]
        d = triangle_direction(o)
        if d is not None:
            out.append(_Statement("orient", Phrase("triangle", o.colour), direction=d))
    for i, oi in enumerate(objs):
        for j, oj in enumerate(objs):
            pa, pb = _phrase_variants(oi)[0], _phrase_variants(oj)[0]
            if i == j or pa == pb:  # "a red star left of a red star" says nothing useful
                continue
            if i < j:
                out.append(_Statement("and", pa, pb))
            for rel in RELATIONS:
                if _related(scene, i, rel, j):
                    out.append(_Statement("rel", pa, pb, rel))
    out += [_Statement("count", count=k, shape=s) for s, k in sorted(_counts(scene).items())]
    seen: set[str] = set()
    unique = []
    for st in out:
        if st.text() not in seen:
            seen.add(st.text())
            unique.append(st)
    return unique


def _scene_rng(scene: Scene, seed: int, salt: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(scene.scene_id.encode()), salt])


def largest_object(scene: Scene) -> int:
    """Index of the object with the most visible pixels (ties: the earliest)."""
    if not scene.objects:
        raise ValueError(f"scene {scene.scene_id} has no objects")
    return int(np.argmax([o.area for o in scene.objects]))


def short_captions(scene: Scene, n: int, seed: int) -> list[str]:
    """``n`` different one-sentence captions (1–2 objects, sometimes a relation, a count or a
    triangle's direction); the first always mentions the largest visible object. If the scene
    supports fewer than ``n`` different captions, the list cycles through them."""
    if n < 1:
        raise ValueError("n must be >= 1")
    pool = _true_statements(scene)
    rng = _scene_rng(scene, seed, 1)
    big = scene.objects[largest_object(scene)]
    about_big = [k for k, st in enumerate(pool) if st.a is not None and st.a.matches(big)]
    first = about_big[int(rng.integers(len(about_big)))]
    rest = [k for k in rng.permutation(len(pool)).tolist() if k != first]
    order = [first, *rest]
    return [pool[order[k % len(order)]].text() for k in range(n)]


def _position(o: SceneObject, width: int) -> str:
    x = o.center[0] / width
    return "on the left" if x < 1 / 3 else ("on the right" if x > 2 / 3 else "in the middle")


def _background_sentence(scene: Scene) -> str:
    words: list[str] = []
    for name, _ in scene.regions:
        word = BACKGROUND_WORDS.get(name)
        if word and word != "sky" and word not in words:
            words.append(word)
    things = [w if w in ("trees", "grass", "ground") else f"{_article(w)} {w}" for w in words]
    return f"a street scene with {' and '.join(things)} under the sky"


def long_caption(scene: Scene) -> str:
    """Several sentences joined by ``". "`` and ending in ``"."``: the background, every object
    (size, colour, shape, where it is, a triangle's direction), the counts, and relations."""
    sentences = [_background_sentence(scene)]
    for o in sorted(scene.objects, key=lambda o: o.center[0]):
        d = triangle_direction(o)
        point = f" pointing {d}" if d else ""
        sentences.append(f"there is {object_phrase(o)}{point} {_position(o, scene.width)}")
    counts = _counts(scene)
    if counts:
        parts = [f"{NUMBER_WORDS[k]} {s if k == 1 else PLURALS[s]}" for s, k in sorted(counts.items())]
        first = counts[min(counts)]
        sentences.append(("there is " if first == 1 else "there are ") + " and ".join(parts))
    rels = [st for st in _true_statements(scene) if st.kind == "rel" and st.rel in ("left of", "above", "in front of")]
    for st in rels[:MAX_LONG_RELATIONS]:
        sentences.append(f"the {_no_article(st.a)} is {st.rel} the {_no_article(st.b)}")
    return ". ".join(sentences) + "."


def _no_article(p: Phrase) -> str:
    return p.text().split(" ", 1)[1]


def split_sentences(text: str) -> list[str]:
    """The sentences of a long caption, without their final ``.``."""
    return [s.strip().rstrip(".") for s in text.split(". ") if s.strip().rstrip(".")]


# ----------------------------------------------------------------------------- hard negatives


def _swaps(scene: Scene, st: _Statement, kind: str) -> list[_Statement]:
    """Every statement that differs from ``st`` in exactly one attribute of ``kind``."""
    out: list[_Statement] = []
    if kind == "colour" and st.a is not None and st.a.colour is not None:
        out += [replace(st, a=replace(st.a, colour=c)) for c in COLOURS if c != st.a.colour]
    elif kind == "shape" and st.a is not None and st.kind in ("one", "and", "rel"):
        out += [replace(st, a=replace(st.a, shape=s)) for s in SHAPES if s != st.a.shape]
    elif kind == "count" and st.kind == "count" and st.count + 1 < len(NUMBER_WORDS):
        out.append(replace(st, count=st.count + 1))
    elif kind == "left_right" and st.kind == "rel" and st.rel in ("left of", "right of"):
        out.append(replace(st, rel="right of" if st.rel == "left of" else "left of"))
    elif kind == "orientation" and st.kind == "orient":
        out.append(replace(st, direction=OPPOSITE[st.direction]))
    return out


def hard_negatives(scene: Scene, seed: int) -> list[dict[str, str]]:
    """At most one negative per kind (colour, shape, count, left_right, orientation, in that
    order; a kind the scene cannot express is left out): ``{"text", "kind", "positive"}``,
    where ``text`` is ``positive`` with exactly one attribute/relation swapped and is false
    for the scene. Colour and shape always apply, so there are at least two."""
    pool = _true_statements(scene)
    rng = _scene_rng(scene, seed, 2)
    out: list[dict[str, str]] = []
    for kind in HARD_NEGATIVE_KINDS:
        candidates = [(st, neg) for st in pool for neg in _swaps(scene, st, kind) if not _holds(scene, neg)]
        if not candidates:
            continue
        # prefer two-object positives for colour/shape, so the negative still shares most words
        rich = [c for c in candidates if c[0].kind in ("rel", "and")]
        pick = rich or candidates
        pos, neg = pick[int(rng.integers(len(pick)))]
        out.append({"text": neg.text(), "kind": kind, "positive": pos.text()})
    return out
