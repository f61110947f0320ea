"""MMVP-VLM: the real-layout loader, the scenes twin and the scoring (against evaluate_vlm.py's logic)."""

from __future__ import annotations

import csv
import math
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from cl_bench.data.scenes.captions import triangle_direction
from cl_bench.data.image_text.mmvp import PATTERNS, load_mmvp_vlm, pattern_of
from cl_bench.data.scenes.mmvp_twin import COVERED_TYPES, load_scenes_mmvp, make_pair
from cl_bench.errors import ClBenchError
from cl_bench.models.interfaces.image_text import ImageTextEncoder
from cl_bench.protocols.base import RunContext
from cl_bench.protocols.mmvp_vlm import MMVPParams, mmvp_scores, model_logit_scale, run_mmvp_vlm

# evaluate_vlm.py's categories, in its order (written out again here on purpose)
CATEGORIES = ["Orientation and Direction", "Presence of Specific Features", "State and Condition",
              "Quantity and Count", "Positional and Relational Context", "Color and Appearance",
              "Structural Characteristics", "Texts", "Viewpoint and Perspective"]
RELEASE_TYPES = ["Orientation", "Presence", "State", "Quantity", "Spatial", "Color", "Structural Character", "Text",
                 "Camera Perspective"]


class TinyClip(ImageTextEncoder):
    """Random projection towers: pooled pixels -> linear; hashed words -> embedding bag."""

    def __init__(self, dim: int = 16, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed_dim = dim
        self.image_proj = nn.Linear(3 * 8 * 8, dim)
        self.words = nn.EmbeddingBag(997, dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_proj(F.adaptive_avg_pool2d(images, 8).flatten(1)), dim=-1)

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        ids = [torch.tensor([zlib.crc32(w.encode()) % 997 for w in t.split()] or [0]) for t in texts]
        offsets = torch.tensor([0] + [len(i) for i in ids[:-1]]).cumsum(0)
        return F.normalize(self.words(torch.cat(ids), offsets), dim=-1)


def plain_ctx() -> RunContext:
    return RunContext(torch.device("cpu"), 0, lambda model, split: model.embed_split(split, torch.device("cpu")))


def reference_mmvp(text: np.ndarray, image: np.ndarray, qids: list[int], categories: list[str],
                   scale: float) -> dict[str, float]:
    """evaluate_vlm.py's loop, written out: per pair, per statement a softmax over the pair's two
    images, pred img1 iff p(img1) > 0.5, gt img1 iff qid odd; a pair counts if both are right."""
    right: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    for k in range(len(categories)):
        img1, img2 = image[2 * k], image[2 * k + 1]
        both = True
        for j in (0, 1):
            t = text[2 * k + j]
            cos1 = sum(float(a) * float(b) for a, b in zip(t, img1)) / (
                math.sqrt(sum(float(a) ** 2 for a in t)) * math.sqrt(sum(float(b) ** 2 for b in img1)))
            cos2 = sum(float(a) * float(b) for a, b in zip(t, img2)) / (
                math.sqrt(sum(float(a) ** 2 for a in t)) * math.sqrt(sum(float(b) ** 2 for b in img2)))
            p1 = 1.0 / (1.0 + math.exp(scale * cos2 - scale * cos1))
            pred = "img1" if p1 > 0.5 else "img2"
            gt = "img1" if qids[2 * k + j] % 2 == 1 else "img2"
            both = both and pred == gt
        right[categories[k]] += int(both)
        total[categories[k]] += 1
    return {c: 100.0 * right[c] / total[c] for c in total}


def test_scores_equal_the_reference_loop_on_random_embeddings_with_ties() -> None:
    rng = np.random.default_rng(0)
    n = 9 * 15  # the release's shape: 9 patterns x 15 pairs, pattern = pair // 15
    text = rng.normal(size=(2 * n, 12)).astype(np.float32)
    image = rng.normal(size=(2 * n, 12)).astype(np.float32)
    image[1:40:4] = image[0:40:4]  # exact ties: both images of pairs 0, 2, 4, ... identical -> p = 0.5 -> img2
    text[81] = text[80]  # two statements with the same text
    qids = list(range(1, 2 * n + 1))
    categories = [CATEGORIES[k // 15] for k in range(n)]
    for scale in (100.0, 1 / 0.07, 1.0):
        ours = mmvp_scores(text, image, np.asarray(qids), categories, scale)
        ref = reference_mmvp(text, image, qids, categories, scale)
        assert ours["per_pattern"] == pytest.approx(ref, abs=1e-9)
        assert ours["average"] == pytest.approx(sum(ref.values()) / 9)
    tied = mmvp_scores(text, image, np.asarray(qids), categories, 100.0)
    assert not tied["pair_correct"][0:10:2].any()  # a tie picks image 2, so statement 1 is wrong
    assert not tied["picks_image_one"][0]


def test_hand_worked_pairs() -> None:
    # pair 0: both right; pair 1: statement 2 wrong; pair 2 (other pattern): both right
    e = np.eye(4, dtype=np.float32)
    image = np.stack([e[0], e[1], e[0], e[1], e[2], e[3]])
    text = np.stack([e[0], e[1], e[0], e[0], e[2], e[3]])
    s = mmvp_scores(text, image, np.arange(1, 7), ["A", "A", "B"], 100.0)
    assert s["per_pattern"] == {"A": 50.0, "B": 100.0}
    assert s["average"] == 75.0
    assert s["pairs"] == pytest.approx(200 / 3)
    assert s["statements"] == pytest.approx(500 / 6)


def test_model_logit_scale_is_exp_of_clips_log_parameter() -> None:
    assert model_logit_scale(TinyClip()) == pytest.approx(1 / 0.07, rel=1e-5)
    assert model_logit_scale(object()) == 100.0


def write_release(root: Path, rows: list[tuple[str, str, str]], images_dir: str = "MLLM_VLM Images",
                  skip_image: str | None = None, size: int = 24) -> Path:
    """A tiny MMVP_VLM tree in the release layout: header + (qid, type, statement) rows."""
    rng = np.random.default_rng(1)
    for qid, kind, _ in rows:
        folder = root / images_dir / kind
        folder.mkdir(parents=True, exist_ok=True)
        if qid != skip_image:
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{qid}.jpg")
    with open(root / "Questions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Question ID", "Type", "Statement"])
        w.writerows(rows)
    return root


RELEASE_ROWS = [("1", "Orientation", "the dog is facing left"), ("2", "Orientation", "the dog is facing right"),
                ("3", "Camera Perspective", "taken from above"), ("4", "Camera Perspective", "taken from below")]


def test_release_layout_is_read(tmp_path: Path) -> None:
    write_release(tmp_path / "MMVP_VLM", RELEASE_ROWS)
    data = load_mmvp_vlm({"image_size": 32}, tmp_path)
    assert data.n_pairs == 2 and data.images.images.shape == (4, 3, 32, 32)
    assert data.statements[1] == "the dog is facing right"
    assert list(data.qids) == [1, 2, 3, 4]
    assert data.patterns == ["Orientation and Direction", "Viewpoint and Perspective"]
    assert data.train_ref is None
    with pytest.raises(ClBenchError, match="evaluation-only"):
        _ = data.train


def test_readme_image_folder_name_is_accepted(tmp_path: Path) -> None:
    write_release(tmp_path / "MMVP_VLM", RELEASE_ROWS[:2], images_dir="MMVP_VLM_Images")
    assert load_mmvp_vlm({}, tmp_path).images.images.shape == (2, 3, 24, 24)  # own size (the default)


def test_every_release_type_maps_to_its_pattern() -> None:
    assert [pattern_of(t) for t in RELEASE_TYPES] == CATEGORIES == list(PATTERNS)
    assert pattern_of("Structural_Character") == "Structural Characteristics"


@pytest.mark.parametrize("rows, skip, match", [
    (RELEASE_ROWS[:3], None, "odd number of statement rows"),
    (RELEASE_ROWS, "3", r"Camera Perspective/3.jpg \(qid 3, Questions.csv line 4\) is missing"),
    ([("1", "Color", "red"), ("x", "Color", "blue")], None, "line 3: qid 'x' is not an integer"),
    ([("1", "Color", "red"), ("2", "Text", "blue")], None, "different types"),
])
def test_bad_release_input_is_a_one_line_error(tmp_path: Path, rows: list, skip: str | None, match: str) -> None:
    write_release(tmp_path / "MMVP_VLM", rows, skip_image=skip)
    with pytest.raises(ClBenchError, match=match) as err:
        load_mmvp_vlm({}, tmp_path)
    assert "\n" not in str(err.value)


def test_missing_root_and_bad_rows(tmp_path: Path) -> None:
    with pytest.raises(ClBenchError, match="needs real data"):
        load_mmvp_vlm({}, None)
    with pytest.raises(ClBenchError, match="MMVP_VLM is missing"):
        load_mmvp_vlm({}, tmp_path)
    root = write_release(tmp_path / "MMVP_VLM", RELEASE_ROWS[:2])
    (root / "Questions.csv").write_text("qid,type,statement\n1,Color\n2,Color,blue\n")
    with pytest.raises(ClBenchError, match="line 2: expected 3 cells"):
        load_mmvp_vlm({}, tmp_path)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_scenes_twin_is_written_in_the_release_layout_and_read_back(cache: Path) -> None:
    data = load_scenes_mmvp({"pairs_per_pattern": 2, "train": None}, None)
    root = Path(data.meta["root"])
    assert root.is_relative_to(cache) and data.meta["image_folder"] == "MLLM_VLM Images"
    with open(root / "Questions.csv", newline="") as f:
        rows = list(csv.reader(f))[1:]
    assert len(rows) == 2 * 2 * len(COVERED_TYPES) and [r[0] for r in rows] == [str(q) for q in range(1, 25)]
    for qid, kind, _ in rows:
        assert (root / "MLLM_VLM Images" / kind / f"{qid}.jpg").is_file()
    assert data.images.images.shape == (24, 3, 64, 64)
    assert data.patterns[::2] == [pattern_of(t) for t in COVERED_TYPES]
    for k in range(data.n_pairs):  # twins differ, and so do their statements
        assert data.statements[2 * k] != data.statements[2 * k + 1]
        assert not np.array_equal(data.images.images[2 * k], data.images.images[2 * k + 1])
    again = load_scenes_mmvp({"pairs_per_pattern": 2, "train": None}, None)
    assert again.fingerprint == data.fingerprint


def _count(scene, **attrs) -> int:
    return sum(all(getattr(o, k) == v for k, v in attrs.items()) for o in scene.objects)


@pytest.mark.parametrize("k", range(6))
def test_each_statement_is_true_for_its_twin_only(k: int) -> None:
    a, b, sa, sb = make_pair("Orientation", 0, k, 64)
    tri_a, tri_b = a.objects[-1], b.objects[-1]
    assert sa.endswith(triangle_direction(tri_a)) and sb.endswith(triangle_direction(tri_b))
    assert _count(a, shape="triangle") == _count(b, shape="triangle") == 1

    a, b, sa, sb = make_pair("Presence", 0, k, 64)
    obj = a.objects[-1]
    assert sa == f"there is {'an' if obj.colour[0] in 'aeiou' else 'a'} {obj.colour} {obj.shape}"
    assert sb == f"there is no {obj.colour} {obj.shape}"
    assert _count(a, shape=obj.shape, colour=obj.colour) == 1 and _count(b, shape=obj.shape, colour=obj.colour) == 0

    a, b, sa, sb = make_pair("Quantity", 0, k, 64)
    shape = a.objects[-1].shape
    n_a, n_b = _count(a, shape=shape), _count(b, shape=shape)
    assert n_b == n_a + 1 and sa.split()[0] == ["one", "two", "three"][n_a - 1]

    a, b, sa, sb = make_pair("Spatial", 0, k, 64)
    (x, y), (xs, ys) = a.objects[-2:], b.objects[-2:]
    axis, opposite = (0, "right of") if " left of " in sa else (1, "below")  # A: "X left of / above Y"
    margin = 0.5 * (x.radius + y.radius)
    assert x.center[axis] + margin < y.center[axis]  # A: X before Y (the scenes' relation rule)
    assert ys.center[axis] + margin < xs.center[axis] and f" {opposite} " in sb  # B: swapped

    for kind, attr in (("Color", "colour"), ("Structural Character", "shape")):
        a, b, sa, sb = make_pair(kind, 0, k, 64)
        oa, ob = a.objects[-1], b.objects[-1]
        assert getattr(oa, attr) != getattr(ob, attr) and sa.endswith(oa.shape) and sb.endswith(ob.shape)
        assert oa.colour in sa and ob.colour in sb
        assert _count(a, shape=oa.shape, colour=oa.colour) == 1 and _count(b, shape=oa.shape, colour=oa.colour) == 0


def test_bad_scenes_params() -> None:
    with pytest.raises(ClBenchError, match="not expressible"):
        load_scenes_mmvp({"types": ["Text"]}, None)


def test_protocol_on_the_scenes_twin_equals_the_reference_loop(cache: Path) -> None:
    data = load_scenes_mmvp({"pairs_per_pattern": 3, "train": None}, None)
    model = TinyClip(seed=3)
    result = run_mmvp_vlm(model, data, MMVPParams(), plain_ctx())
    with torch.no_grad():
        img = model.embed_images(data.images.tensor()).numpy()
        txt = model.embed_texts(["a photo of " + s for s in data.statements]).numpy()
    ref = reference_mmvp(txt, img, [int(q) for q in data.qids], data.patterns, 1 / 0.07)
    assert result.extras["per_pattern"] == pytest.approx(ref)
    assert result.metrics["average"] == pytest.approx(np.mean(list(ref.values())))
    assert set(result.metrics) == {"average", "pairs", "statements"}
    preds = getattr(result, "predictions", None)
    if preds is not None:
        assert preds.correct.sum() == round(result.metrics["pairs"] * data.n_pairs / 100)


class RecordingClip(ImageTextEncoder):
    """Two-tower stand-in: records image shapes; image embedding = mean colour, text = fixed."""

    embed_dim = 3
    logit_scale = nn.Parameter(torch.tensor(math.log(100.0)))

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        self.shapes += [tuple(x.shape) for x in images]
        return F.normalize(images.mean((2, 3)) + 1e-3, dim=-1)

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(torch.tensor([[1.0, 0.5, 0.25]] * len(texts)), dim=-1)


def test_real_images_reach_the_model_at_their_own_size(tmp_path: Path) -> None:
    """evaluate_vlm.py runs the model's own preprocess on the opened image: no 224² squash first."""
    root = write_release(tmp_path / "MMVP_VLM", RELEASE_ROWS)
    for qid, size in (("1", (30, 20)), ("4", (18, 40))):  # two non-square, differently sized images
        kind = next(k for q, k, _ in RELEASE_ROWS if q == qid)
        Image.fromarray(np.full((size[1], size[0], 3), int(qid) * 40, np.uint8)).save(root / "MLLM_VLM Images" / kind / f"{qid}.jpg")
    data = load_mmvp_vlm({}, tmp_path)
    assert data.images.variable and "image_size" not in data.arch_inputs
    assert [tuple(a.shape) for a in data.images.images] == [(3, 20, 30), (3, 24, 24), (3, 24, 24), (3, 40, 18)]
    model = RecordingClip()
    ctx = RunContext(torch.device("cpu"), 0, lambda m, split: m.embed_split(split, torch.device("cpu")))
    run_mmvp_vlm(model, data, MMVPParams(), ctx)
    assert sorted(model.shapes) == sorted([(3, 20, 30), (3, 24, 24), (3, 24, 24), (3, 40, 18)])
    feats = model.embed_split(data.images, torch.device("cpu"))  # back in the images' order
    for i, a in enumerate(data.images.images):
        want = F.normalize(torch.from_numpy(a).float().div(255).mean((1, 2)) + 1e-3, dim=-1)
        assert np.allclose(feats[i], want.numpy(), atol=1e-6)
    squashed = load_mmvp_vlm({"image_size": 24}, tmp_path)  # version 1's behaviour, still available
    assert squashed.images.images.shape == (4, 3, 24, 24) and not squashed.images.variable
