"""MMEB: the MMEB-eval layout reader, the scenes twin, and Precision@1 against VLM2Vec's logic."""

from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from cl_bench.data.image_text.mmeb import MMEB_DATASETS, MMEBData, PairItems, load_mmeb
from cl_bench.data.scenes.mmeb_twin import MINI_DATASETS, load_scenes_mmeb_mini
from cl_bench.data.scenes.world import SHAPES
from cl_bench.errors import ClBenchError
from cl_bench.models.interfaces.image_text import ImageTextEncoder
from cl_bench.protocols.base import RunContext
from cl_bench.protocols.mmeb import MMEBProtocolParams, get_pred, run_mmeb

IND = {"ImageNet-1K", "N24News", "HatefulMemes", "VOC2007", "SUN397", "OK-VQA", "A-OKVQA", "DocVQA",
       "InfographicsVQA", "ChartQA", "Visual7W", "VisDial", "CIRR", "VisualNews_t2i", "VisualNews_i2t", "MSCOCO_t2i",
       "MSCOCO_i2t", "NIGHTS", "WebQA", "MSCOCO"}


def plain_ctx() -> RunContext:
    return RunContext(torch.device("cpu"), 0, lambda model, split: model.embed_split(split, torch.device("cpu")))


def png(seed: int, size: tuple[int, int] = (20, 14)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def write_mmeb(root: Path, datasets: dict[str, list[dict[str, Any]]], images: dict[str, bytes],
               mode: str = "zip", parquet_branch: bool = False) -> Path:
    """An MMEB-eval tree: <Dataset>/test-00000-of-00001.parquet (or test/0000.parquet) and
    images.zip holding eval_images/<path> (or the unpacked eval_images/ folder)."""
    for name, rows in datasets.items():
        folder = root / name / "test" if parquet_branch else root / name
        folder.mkdir(parents=True, exist_ok=True)
        tgt_text_type = pa.string() if any(isinstance(r["tgt_text"], str) for r in rows) else pa.list_(pa.string())
        table = pa.table({
            "qry_text": pa.array([r["qry_text"] for r in rows], pa.string()),
            "qry_img_path": pa.array([r["qry_img_path"] for r in rows], pa.string()),
            "tgt_text": pa.array([r["tgt_text"] for r in rows], tgt_text_type),
            "tgt_img_path": pa.array([r["tgt_img_path"] for r in rows], pa.list_(pa.string())),
        })
        pq.write_table(table, folder / ("0000.parquet" if parquet_branch else "test-00000-of-00001.parquet"))
    if mode == "zip":
        with zipfile.ZipFile(root / "images.zip", "w") as zf:
            for rel, blob in images.items():
                zf.writestr(f"eval_images/{rel}", blob)
    else:
        for rel, blob in images.items():
            (root / "eval_images" / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / "eval_images" / rel).write_bytes(blob)
    return root


def random_tree(root: Path, rows_per_dataset: int = 12, n_cand: int = 5, **kw: Any) -> Path:
    """Five datasets of text / image / mixed queries and candidates with unique item texts."""
    datasets: dict[str, list[dict[str, Any]]] = {}
    images: dict[str, bytes] = {}
    for d, name in enumerate(["ImageNet-1K", "MSCOCO_t2i", "ImageNet-A", "RefCOCO", "OK-VQA"]):
        rows = []
        for i in range(rows_per_dataset):
            qimg = f"{name}/q{i}.png" if name != "MSCOCO_t2i" else ""
            if qimg:
                images[qimg] = png(1000 * d + i)
            if name in ("MSCOCO_t2i", "RefCOCO"):
                timgs = [f"{name}/c{i}_{j}.png" for j in range(n_cand)]
                for j, p in enumerate(timgs):
                    images[p] = png(100_000 + 1000 * d + 10 * i + j)
            else:
                timgs = [""] * n_cand
            rows.append({"qry_text": f"q {name} {i}", "qry_img_path": qimg,
                         "tgt_text": [f"c {name} {i} {j}" for j in range(n_cand)], "tgt_img_path": timgs})
        datasets[name] = rows
    return write_mmeb(root / "MMEB-eval", datasets, images, **kw)


class TableModel(ImageTextEncoder):
    """embed_pairs returns a fixed vector per item text (the images are checked, then ignored)."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.table = table
        self.embed_dim = len(next(iter(table.values())))
        self.seen_images = 0

    def embed_pairs(self, texts: list[str | None], images: list[torch.Tensor | None],
                    role: str | None = None) -> torch.Tensor:
        self.roles = [*getattr(self, "roles", []), role]
        for im in images:
            if im is not None:
                assert im.shape[0] == 3 and 0.0 <= float(im.min()) and float(im.max()) <= 1.0
                self.seen_images += 1
        return torch.as_tensor(np.stack([self.table[t] for t in texts]))


class CachingTableModel(TableModel):
    """The same, embedding PairItems through the engine's feature hook (the cached path)."""

    embeds_pair_items = True

    def embed_split(self, split: Any, device: torch.device) -> np.ndarray:
        assert isinstance(split, PairItems)
        return np.concatenate([self.embed_pairs(t, i).numpy() for t, i in split.batches(7)])


def read_rows(root: Path, name: str) -> list[dict[str, Any]]:
    return pq.read_table(root / name / "test-00000-of-00001.parquet").to_pylist()


def reference_pred(q: np.ndarray, cands: list[np.ndarray]) -> int:
    """get_pred written out: cosine of each candidate with the query; argmax = the first NaN if
    any score is NaN (numpy's rule), else the first maximum."""
    def cos(a: np.ndarray, b: np.ndarray) -> float:
        na, nb = math.sqrt(sum(float(x) ** 2 for x in a)), math.sqrt(sum(float(x) ** 2 for x in b))
        if na == 0.0 or nb == 0.0:
            return math.nan
        return sum(float(x) * float(y) for x, y in zip(a, b)) / (na * nb)

    scores = [cos(c, q) for c in cands]
    for j, s in enumerate(scores):
        if math.isnan(s):
            return j
    best = 0
    for j, s in enumerate(scores):
        if s > scores[best]:
            best = j
    return best


def rigged_table(root: Path) -> dict[str, np.ndarray]:
    """Random vectors per item text, with exact ties: row 0 of each dataset ties the answer with
    candidate 3 at cosine 1; row 1 ties candidates 1 and 2 at cosine 1 above the answer; the
    OK-VQA row 2 query is the zero vector (every score NaN -> prediction 0, as get_pred does)."""
    rng = np.random.default_rng(7)
    table: dict[str, np.ndarray] = {}
    for name in ("ImageNet-1K", "MSCOCO_t2i", "ImageNet-A", "RefCOCO", "OK-VQA"):
        for i, row in enumerate(read_rows(root, name)):
            q = rng.normal(size=8).astype(np.float32)
            table[row["qry_text"]] = q
            for j, t in enumerate(row["tgt_text"]):
                table[t] = rng.normal(size=8).astype(np.float32)
            if i == 0:
                table[row["tgt_text"][0]] = q.copy()
                table[row["tgt_text"][3]] = q.copy()
            if i == 1:
                table[row["tgt_text"][1]] = q.copy()
                table[row["tgt_text"][2]] = q.copy()
            if i == 2 and name == "OK-VQA":
                table[row["qry_text"]] = np.zeros(8, np.float32)
    return table


@pytest.mark.parametrize("model_cls", [TableModel, CachingTableModel])
def test_precision_at_1_equals_the_reference_loop_with_ties(tmp_path: Path, model_cls: type) -> None:
    root = random_tree(tmp_path)
    table = rigged_table(root)
    data = load_mmeb({"datasets": ["ImageNet-1K", "MSCOCO_t2i", "ImageNet-A", "RefCOCO", "OK-VQA"],
                      "image_size": 16}, tmp_path)
    model = model_cls(table)
    result = run_mmeb(model, data, MMEBProtocolParams(batch_size=5), plain_ctx())
    assert model.seen_images > 0
    expected: dict[str, float] = {}
    for name in data_names(data):
        rows = read_rows(root, name)
        preds = [reference_pred(table[r["qry_text"]], [table[t] for t in r["tgt_text"]]) for r in rows]
        expected[name] = 100.0 * sum(p == 0 for p in preds) / len(rows)
        assert preds[0] == 0 and preds[1] == 1
    assert result.extras["per_dataset"] == pytest.approx(expected, abs=1e-12)
    groups = {
        "overall": list(expected),
        "classification": ["ImageNet-1K", "ImageNet-A"], "vqa": ["OK-VQA"], "retrieval": ["MSCOCO_t2i"],
        "grounding": ["RefCOCO"], "ind": ["ImageNet-1K", "MSCOCO_t2i", "OK-VQA"], "ood": ["ImageNet-A", "RefCOCO"],
    }
    assert result.metrics == pytest.approx({k: sum(expected[n] for n in v) / len(v) for k, v in groups.items()})


def data_names(data: MMEBData) -> list[str]:
    return [d.name for d in data.datasets]


def test_get_pred_ties_and_dot_product() -> None:
    q = np.array([1.0, 0.0], np.float32)
    tgt = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 0.0]], np.float32)
    assert get_pred(q, tgt, True) == 1  # cosine: 1 and 2 tie, the first wins
    assert get_pred(q, tgt, False) == 2  # dot product: 2 wins
    assert get_pred(np.zeros(2, np.float32), tgt, True) == 0  # all NaN -> 0, as numpy's argmax


def test_official_dataset_table() -> None:
    assert len(MMEB_DATASETS) == 36
    assert {n for n, (_, s) in MMEB_DATASETS.items() if s == "IND"} == IND
    counts = {m: sum(mt == m for mt, _ in MMEB_DATASETS.values()) for m in ("classification", "vqa", "retrieval",
                                                                         "grounding")}
    assert counts == {"classification": 10, "vqa": 10, "retrieval": 12, "grounding": 4}


def test_layout_variants_are_read_alike(tmp_path: Path) -> None:
    base = random_tree(tmp_path / "a", rows_per_dataset=3)
    folder = random_tree(tmp_path / "b", rows_per_dataset=3, mode="folder", parquet_branch=True)
    names = {"datasets": ["ImageNet-1K", "MSCOCO_t2i"], "image_size": 12}
    a, b = load_mmeb(names, tmp_path / "a"), load_mmeb(names, tmp_path / "b")
    assert a.meta["images"].endswith("images.zip") and b.meta["images"].endswith("eval_images")
    for da, db in zip(a.datasets, b.datasets):
        assert (da.qry_text, da.qry_img, da.tgt_text, da.tgt_img) == (db.qry_text, db.qry_img, db.tgt_text, db.tgt_img)
        paths = [p for _, p in da.items("tgt") if p]
        assert np.array_equal(da.images(paths).images, db.images(paths).images)
    assert a.datasets[1].images(["MSCOCO_t2i/c0_0.png"]).images.shape == (1, 3, 12, 12)
    assert base.is_dir() and folder.is_dir()


def test_empty_tgt_text_string_means_no_text_for_any_candidate(tmp_path: Path) -> None:
    rows = [{"qry_text": "find it", "qry_img_path": "", "tgt_text": "", "tgt_img_path": ["N/a.png", "N/b.png"]}]
    write_mmeb(tmp_path / "MMEB-eval", {"NIGHTS": rows}, {"N/a.png": png(1), "N/b.png": png(2)})
    ds = load_mmeb({"datasets": ["NIGHTS"]}, tmp_path).datasets[0]
    assert ds.tgt_text == [["", ""]] and ds.items("tgt") == [("", "N/a.png"), ("", "N/b.png")]


GOOD = {"qry_text": "<|image_1|>\nRepresent the given image for classification", "qry_img_path": "I/0.png",
        "tgt_text": ["cat", "dog"], "tgt_img_path": ["", ""]}


@pytest.mark.parametrize("bad, match", [
    ({"qry_img_path": "I/missing.png"}, r"MMEB ImageNet-1K row 1: image 'I/missing.png' \(qry_img_path\) is not in"),
    ({"tgt_text": ["cat", "dog", "cow"]}, "MMEB ImageNet-1K row 1: tgt_text has 3 candidates but tgt_img_path has 2"),
    ({"tgt_text": [], "tgt_img_path": []}, "MMEB ImageNet-1K row 1: no candidates"),
])
@pytest.mark.parametrize("mode", ["zip", "folder"])
def test_bad_rows_are_one_line_errors_naming_dataset_and_row(tmp_path: Path, bad: dict, match: str,
                                                             mode: str) -> None:
    write_mmeb(tmp_path / "MMEB-eval", {"ImageNet-1K": [GOOD, {**GOOD, **bad}]}, {"I/0.png": png(0)}, mode=mode)
    with pytest.raises(ClBenchError, match=match) as err:
        load_mmeb({"datasets": ["ImageNet-1K"]}, tmp_path)
    assert "\n" not in str(err.value)


def test_missing_data_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ClBenchError, match="needs real data"):
        load_mmeb({}, None)
    with pytest.raises(ClBenchError, match="did you mean 'ImageNet-1K'"):
        load_mmeb({"datasets": ["ImageNet1K"]}, tmp_path)
    write_mmeb(tmp_path / "MMEB-eval", {"ImageNet-1K": [GOOD]}, {"I/0.png": png(0)})
    with pytest.raises(ClBenchError, match="35 dataset folder"):
        load_mmeb({}, tmp_path)
    (tmp_path / "MMEB-eval" / "images.zip").write_bytes(b"not a zip")
    with pytest.raises(ClBenchError, match="not a readable zip"):
        load_mmeb({"datasets": ["ImageNet-1K"]}, tmp_path)
    (tmp_path / "MMEB-eval" / "images.zip").unlink()
    with pytest.raises(ClBenchError, match=r"row 0: image 'I/0.png' .* \(neither it nor images.zip exists\)"):
        load_mmeb({"datasets": ["ImageNet-1K"]}, tmp_path)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_scenes_twin_is_written_in_the_mmeb_layout_and_read_back(cache: Path) -> None:
    data = load_scenes_mmeb_mini({"n_queries": 6, "n_candidates": 4, "train": None}, None)
    root = Path(data.meta["root"])
    assert root.is_relative_to(cache) and data.meta["images"] == str(root / "images.zip")
    assert {d.name: (d.meta_task, d.split) for d in data.datasets} == MINI_DATASETS
    with zipfile.ZipFile(root / "images.zip") as zf:
        assert all(n.startswith("eval_images/Scenes-") for n in zf.namelist())
    by_name = {d.name: d for d in data.datasets}
    for d in data.datasets:
        assert (root / d.name / "test-00000-of-00001.parquet").is_file() and len(d) == 6
    cls = by_name["Scenes-Cls"]
    assert all(sorted(t) == sorted(SHAPES) and len(set(t)) == 6 for t in cls.tgt_text)
    t2i = by_name["Scenes-T2I-Busy"]
    for i in range(6):
        assert t2i.qry_img[i] == "" and t2i.tgt_img[i][0] == f"Scenes-T2I-Busy/scene_{i:05d}.png"
        assert len(set(t2i.tgt_img[i])) == len(t2i.tgt_img[i]) <= 4
    grd = by_name["Scenes-Grounding"]
    for i in range(6):
        assert grd.tgt_img[i][0].startswith(f"Scenes-Grounding/crop_{i:05d}_") and len(grd.tgt_img[i]) == 4
    vqa = by_name["Scenes-VQA"]
    assert all(r.startswith("<|image_1|>\nRepresent the given image with the following question: ")
               for r in vqa.qry_text)
    again = load_scenes_mmeb_mini({"n_queries": 6, "n_candidates": 4, "train": None}, None)
    assert again.fingerprint == data.fingerprint


def test_bad_scenes_params() -> None:
    with pytest.raises(ClBenchError, match="unknown dataset"):
        load_scenes_mmeb_mini({"datasets": ["Scenes-Nope"]}, None)
    with pytest.raises(ClBenchError, match="sizes"):  # the training world's options, checked before generating
        load_scenes_mmeb_mini({"train": {"sizes": ["huge"]}}, None)


class ShapeRecorder(ImageTextEncoder):
    """A two-tower stand-in that records the image shapes it is handed (images embedded by their mean colour)."""

    embed_dim = 4

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        self.shapes += [tuple(im.shape) for im in images]
        return torch.nn.functional.normalize(torch.cat([images.mean((2, 3)), torch.ones(len(images), 1)], 1), dim=-1)

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.ones(len(texts), 4), dim=-1)


def test_real_mmeb_hands_each_image_over_at_its_own_size(tmp_path: Path) -> None:
    """VLM2Vec's eval gives the processor the original image: no 336 resize / centre crop first.
    Version 1 (image_size 336) cropped a 40x12 document strip to its middle 12x12."""
    sizes = {"N/a.png": (40, 12), "N/b.png": (9, 30), "N/q.png": (17, 17)}
    rows = [{"qry_text": "find it", "qry_img_path": "N/q.png", "tgt_text": ["", ""], "tgt_img_path": ["N/a.png", "N/b.png"]}]
    write_mmeb(tmp_path / "MMEB-eval", {"NIGHTS": rows}, {p: png(i, s) for i, (p, s) in enumerate(sizes.items())})
    data = load_mmeb({"datasets": ["NIGHTS"]}, tmp_path)
    ds = data.datasets[0]
    assert ds.image_size is None and "image_size" not in data.arch_inputs
    items, _ = ds.pair_items("tgt")
    (_, images), = list(items.batches(8))
    with zipfile.ZipFile(tmp_path / "MMEB-eval" / "images.zip") as zf:
        for im, path in zip(images, ["N/a.png", "N/b.png"]):
            original = np.asarray(Image.open(io.BytesIO(zf.read(f"eval_images/{path}"))).convert("RGB"))
            assert im.shape == (3, original.shape[0], original.shape[1])
            assert np.array_equal((im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), original)
    model = ShapeRecorder()
    run_mmeb(model, data, MMEBProtocolParams(batch_size=4), plain_ctx())
    assert sorted(model.shapes) == sorted((3, h, w) for w, h in sizes.values())  # two-tower: a shape at a time
    cropped = load_mmeb({"datasets": ["NIGHTS"], "image_size": 12}, tmp_path).datasets[0]
    (_, old), = list(cropped.pair_items("tgt")[0].batches(8))
    assert [tuple(im.shape) for im in old] == [(3, 12, 12), (3, 12, 12)]
    assert items.fingerprint != cropped.pair_items("tgt")[0].fingerprint


def test_scenes_twin_ind_sets_follow_the_training_world(cache: Path) -> None:
    """IND = the world the methods train in: the world options of ``train`` reach the IND sets'
    scenes; the busy OOD sets and a default (v1) tree stay as they were."""
    from cl_bench.data.scenes.mmeb_twin import WORLDS, ScenesMMEBParams, world

    small = {"max_objects": 1, "crowd_prob": 0.0, "sizes": ["large"], "captions_per_image": 3}
    p = ScenesMMEBParams(n_queries=4, n_candidates=3, train=small)
    assert world(p, "IND") == {"min_objects": 1, "max_objects": 1, "crowd_prob": 0.0, "sizes": ("large",)}
    assert world(p, "OOD") == WORLDS["OOD"] and world(ScenesMMEBParams(), "IND") == WORLDS["IND"]
    names = ["Scenes-I2T", "Scenes-I2T-Busy"]

    def images(train: dict | None) -> dict[str, bytes]:
        data = load_scenes_mmeb_mini({"n_queries": 4, "n_candidates": 3, "datasets": names, "train": train}, None)
        with zipfile.ZipFile(Path(data.meta["root"]) / "images.zip") as zf:
            return {n: zf.read(n) for n in zf.namelist()}

    default, moved = images(None), images(small)
    ind = [n for n in default if "/Scenes-I2T/" in n]
    ood = [n for n in default if "-Busy/" in n]
    assert ind and ood and all(default[n] == moved[n] for n in ood)
    assert all(default[n] != moved.get(n) for n in ind)
