"""Bitext mining: MTEB scores vs scikit-learn, LASER margin vs a hand-worked example and loops,
the Tatoeba loaders (LASER files, MTEB parquet/jsonl) and their errors, MiniLM on real Tatoeba."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from cl_bench.data.text.tatoeba import load_tatoeba, read_lines
from cl_bench.data.text.types import BitextData, BitextPair, TextSplit
from cl_bench.errors import ClBenchError
from cl_bench.protocols.base import RunContext
from cl_bench.protocols.bitext import (
    BitextParams,
    l2_normalize,
    margin_nearest,
    mteb_scores,
    nearest,
    run_bitext,
    score_pair,
)
from tests.conftest import SHARED_DATA

LANGS = ["ara", "cmn", "deu", "fra", "hin", "ita", "jpn", "nld", "por", "rus", "spa", "tur"]


def unit(degrees: list[float]) -> np.ndarray:
    a = np.radians(degrees)
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


# --- metrics ------------------------------------------------------------------------------------

def test_mteb_scores_equal_sklearn_weighted_metrics() -> None:
    rng = np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(1, 40))
        pred = np.where(rng.random(n) < 0.6, np.arange(n), rng.integers(0, n, n))
        gold = np.arange(n)
        got = mteb_scores(pred)
        ref = {
            "accuracy": accuracy_score(gold, pred),
            "precision": precision_score(gold, pred, average="weighted", zero_division=0),
            "recall": recall_score(gold, pred, average="weighted", zero_division=0),
            "f1": f1_score(gold, pred, average="weighted", zero_division=0),
        }
        for k, v in ref.items():
            assert got[k] == pytest.approx(100 * v, abs=1e-9)


def test_nearest_and_margin_equal_explicit_loops() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 8)), rng.normal(size=(30, 8))
    cos = [[sum(a * b for a, b in zip(xi, yj, strict=True)) / (math.hypot(*xi) * math.hypot(*yj)) for yj in y] for xi in x]
    k = 4
    nn_loop = [max(range(30), key=lambda j: (cos[i][j], -j)) for i in range(30)]
    top_x = [sorted(range(30), key=lambda j: -cos[i][j])[:k] for i in range(30)]
    avg_x = [sum(cos[i][j] for j in top_x[i]) / k for i in range(30)]
    avg_y = [sum(sorted((cos[i][j] for i in range(30)), reverse=True)[:k]) / k for j in range(30)]
    margin_loop = [max(top_x[i], key=lambda j: cos[i][j] / ((avg_x[i] + avg_y[j]) / 2)) for i in range(30)]
    xs, ys = l2_normalize(x), l2_normalize(y)
    assert nearest(xs, ys).tolist() == nn_loop
    assert margin_nearest(xs, ys, k, "ratio").tolist() == margin_loop


def test_hand_worked_margin_example() -> None:
    # sources at 0, 10, 20 degrees; targets at 0, 10, 35 degrees (2-D unit vectors).
    # cos(x2, y1) = cos 10 = .98481 > cos(x2, y2) = cos 15 = .96593: plain NN sends x2 to y1 (wrong).
    # k = 2: avg(x2) = (.98481 + .96593)/2 = .97537; avg(y1) = (1 + .98481)/2 = .99240;
    # avg(y2) = (.96593 + .90631)/2 = .93612 (y2 is no hub).
    # ratio(x2, y1) = .98481 / ((.97537 + .99240)/2) = 1.00094 < ratio(x2, y2) = .96593 / .95575 = 1.01066.
    src, tgt = unit([0, 10, 20]), unit([0, 10, 35])
    s = score_pair(src, tgt, BitextParams(margin_k=2))
    assert s["error_nn_src2tgt"] == pytest.approx(100 / 3)
    assert s["error_margin_src2tgt"] == 0.0
    assert s["error_nn_tgt2src"] == 0.0  # y2 (35) is nearest to x2 (20): cos 15 beats cos 25
    assert s["error_nn"] == pytest.approx(100 / 6)
    # MTEB on predictions [0, 1, 1]: accuracy 2/3; precision (1 + 1/2 + 0)/3; F1 (1 + 2/3 + 0)/3
    assert s["accuracy"] == pytest.approx(200 / 3)
    assert s["precision"] == pytest.approx(50.0)
    assert s["recall"] == pytest.approx(200 / 3)
    assert s["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)


def test_ties_go_to_the_lowest_index_and_shapes_must_match() -> None:
    src, tgt = unit([0, 0]), unit([0, 0])  # identical targets: both queries retrieve target 0
    assert nearest(l2_normalize(src), l2_normalize(tgt)).tolist() == [0, 0]
    with pytest.raises(ClBenchError, match="differ"):
        score_pair(unit([0, 1]), unit([0, 1, 2]), BitextParams())


def test_margin_ties_go_to_the_lowest_index_as_a_loop_that_orders_by_index() -> None:
    # duplicated targets (as Tatoeba's repeated English sentences) give exactly equal cosines
    # and margins; the loop takes each query's k best by (cosine desc, index asc) and the first
    # best margin in index order
    rng = np.random.default_rng(3)
    base = rng.integers(-2, 3, size=(6, 4)).astype(np.float32)
    base[base.sum(1) == 0, 0] = 1.0
    tgt = base[[0, 1, 1, 2, 3, 3, 3, 4, 5, 5]]
    src = base[rng.integers(0, 6, size=10)] + np.float32(0.25) * rng.integers(0, 2, size=(10, 4)).astype(np.float32)
    xs, ys = l2_normalize(src), l2_normalize(tgt)
    cos = (xs @ ys.T).numpy().astype(np.float64)
    n, k = 10, 3
    top = [sorted(range(n), key=lambda j: (-cos[i][j], j))[:k] for i in range(n)]
    avg_x = [sum(cos[i][j] for j in top[i]) / k for i in range(n)]
    avg_y = [sum(sorted(cos[:, j], reverse=True)[:k]) / k for j in range(n)]
    want = [max(sorted(top[i]), key=lambda j: cos[i][j] / ((avg_x[i] + avg_y[j]) / 2)) for i in range(n)]
    assert any(len(set(np.round(cos[i], 6))) < n for i in range(n))  # the data do tie
    assert margin_nearest(xs, ys, k, "ratio").tolist() == want
    # the one-matrix path of score_pair gives the same retrievals (error rates from them)
    s = score_pair(src, tgt, BitextParams(margin_k=k))
    assert s["error_margin_src2tgt"] == pytest.approx(100 * np.mean(np.array(want) != np.arange(n)))


# --- loaders ------------------------------------------------------------------------------------

def write_laser(folder: Path, lang: str, src: list[str], eng: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"tatoeba.{lang}-eng.{lang}").write_text("".join(s + "\n" for s in src), encoding="utf-8")
    (folder / f"tatoeba.{lang}-eng.eng").write_text("".join(s + "\n" for s in eng), encoding="utf-8")


def test_laser_files_split_on_newline_only(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_laser(root / "tatoeba", "deu", ["Hallo\u2028Welt", "Guten Tag\r"], ["Hello\u0085world", "Good day"])
    data = load_tatoeba({"pairs": ["deu"]}, root)
    (pair,) = data.pairs
    assert pair.name == "deu-eng"
    assert pair.source.texts == ["Hallo\u2028Welt", "Guten Tag"]
    assert pair.target.texts == ["Hello\u0085world", "Good day"]
    with pytest.raises(ClBenchError, match="evaluation-only"):
        _ = data.train


def test_mteb_layout_parquet_and_jsonl(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "tatoeba"
    (folder / "fra-eng" / "test").mkdir(parents=True)
    pq.write_table(pa.table({"sentence1": ["Bonjour", "Merci"], "sentence2": ["Hello", "Thanks"]}),
                   folder / "fra-eng" / "test" / "0000.parquet")
    (folder / "ita-eng").mkdir()
    rows = [{"sentence1": "Ciao", "sentence2": "Hi"}, {"sentence1": "Grazie", "sentence2": "Thanks"}]
    (folder / "ita-eng" / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    data = load_tatoeba({"path": str(folder)}, None)  # pairs: all
    assert [p.name for p in data.pairs] == ["fra-eng", "ita-eng"]
    assert data.pairs[0].source.texts == ["Bonjour", "Merci"] and data.pairs[1].target.texts == ["Hi", "Thanks"]
    assert all(p.meta["layout"] == "mteb" for p in data.pairs)
    (folder / "ita-eng" / "test.jsonl").write_text(json.dumps({"sentence1": "x"}), encoding="utf-8")
    with pytest.raises(ClBenchError, match=r"test.jsonl row 0: missing required field 'sentence2'"):
        load_tatoeba({"path": str(folder), "pairs": ["ita-eng"]}, None)
    (folder / "ita-eng" / "test.jsonl").write_text(json.dumps({"sentence1": "x", "sentence2": 3}), encoding="utf-8")
    with pytest.raises(ClBenchError, match=r"field 'sentence2': Input should be a valid string \(got 3\)"):
        load_tatoeba({"path": str(folder), "pairs": ["ita-eng"]}, None)


def test_bad_tatoeba_input_gives_clear_errors(tmp_path: Path) -> None:
    root = tmp_path / "data"
    folder = root / "tatoeba"
    write_laser(folder, "deu", ["a", "b", "c"], ["x", "y"])
    with pytest.raises(ClBenchError, match="misaligned: tatoeba.deu-eng.deu has 3 lines but tatoeba.deu-eng.eng has 2"):
        load_tatoeba({"pairs": ["deu-eng"]}, root)
    write_laser(folder, "fra", [], ["x"])
    with pytest.raises(ClBenchError, match="is empty"):
        load_tatoeba({"pairs": ["fra"]}, root)
    (folder / "tatoeba.ita-eng.ita").write_bytes(b"\xff\xfe bad\n")
    (folder / "tatoeba.ita-eng.eng").write_text("ok\n")
    with pytest.raises(ClBenchError, match="not valid UTF-8"):
        load_tatoeba({"pairs": ["ita"]}, root)
    with pytest.raises(ClBenchError, match="not found"):
        load_tatoeba({"pairs": ["spa"]}, root)
    with pytest.raises(ClBenchError, match="not of the form"):
        load_tatoeba({"pairs": ["german"]}, root)
    with pytest.raises(ClBenchError, match="--data-root"):
        load_tatoeba({}, None)
    with pytest.raises(ClBenchError, match="unknown field"):
        load_tatoeba({"pair": ["deu"]}, root)
    with pytest.raises(ClBenchError, match="1 source but 2 target"):
        BitextPair("x-eng", TextSplit(["a"]), TextSplit(["a", "b"]))


def test_real_tatoeba_pairs_load_aligned() -> None:
    data = load_tatoeba({"path": str(SHARED_DATA / "tatoeba")}, None)
    assert [p.name for p in data.pairs] == [f"{lang}-eng" for lang in LANGS]
    for p in data.pairs:
        assert len(p.source) == len(p.target) == 1000
    assert read_lines(SHARED_DATA / "tatoeba" / "tatoeba.deu-eng.deu")[0] == "Maria sagte, sie wisse nicht, wo Tom sei."


# --- the protocol end to end on real data ----------------------------------------------------

def test_minilm_on_real_tatoeba_equals_independent_computation() -> None:
    from cl_bench.models.text.text_encoders import build_minilm

    data = load_tatoeba({"path": str(SHARED_DATA / "tatoeba"), "pairs": ["deu", "jpn"], "limit": 100}, None)
    model = build_minilm({})
    seen: dict[str, np.ndarray] = {}

    def extract(m: object, split: TextSplit) -> np.ndarray:
        seen[split.fingerprint] = model.embed_texts(split.texts)
        return seen[split.fingerprint]

    ctx = RunContext(torch.device("cpu"), 0, extract)
    result = run_bitext(model, data, BitextParams(), ctx)
    for pair in data.pairs:
        src, tgt = seen[pair.source.fingerprint], seen[pair.target.fingerprint]
        cos = (src / np.linalg.norm(src, axis=1, keepdims=True)) @ (tgt / np.linalg.norm(tgt, axis=1, keepdims=True)).T
        pred = cos.argmax(axis=1)
        gold = np.arange(len(pred))
        got = result.extras["pairs"][pair.name]
        assert got["accuracy"] == pytest.approx(100 * accuracy_score(gold, pred))
        assert got["f1"] == pytest.approx(100 * f1_score(gold, pred, average="weighted", zero_division=0))
        assert got["error_nn_tgt2src"] == pytest.approx(100 * (cos.argmax(axis=0) != gold).mean())
    assert result.metrics["f1"] == pytest.approx(np.mean([v["f1"] for v in result.extras["pairs"].values()]))
    # English-only MiniLM retrieves German far better than Japanese
    assert result.extras["pairs"]["deu-eng"]["accuracy"] > result.extras["pairs"]["jpn-eng"]["accuracy"]


def test_predictions_are_the_source_to_target_retrievals_and_give_accuracy_and_f1() -> None:
    # pair aaa: the hand-worked example (retrieves [0, 1, 1]); pair bbb: 2 sentences, both right
    embs = {"a0": [0], "a1": [10], "a2": [20], "A0": [0], "A1": [10], "A2": [35],
            "b0": [0], "b1": [90], "B0": [5], "B1": [80]}
    pairs = [BitextPair("aaa-eng", TextSplit(["a0", "a1", "a2"]), TextSplit(["A0", "A1", "A2"])),
             BitextPair("bbb-eng", TextSplit(["b0", "b1"]), TextSplit(["B0", "B1"]))]
    data = BitextData("toy", pairs)
    ctx = RunContext(torch.device("cpu"), 0, lambda m, split: np.concatenate([unit(embs[t]) for t in split.texts]))
    result = run_bitext(None, data, BitextParams(margin_k=2), ctx)
    p = result.predictions
    assert p.item.tolist() == ["aaa-eng:0", "aaa-eng:1", "aaa-eng:2", "bbb-eng:0", "bbb-eng:1"]
    assert len(set(p.item.tolist())) == len(p.item)
    assert p.pred.tolist() == [0, 1, 1, 0, 1] and p.target.tolist() == [0, 1, 2, 0, 1]
    assert p.correct.tolist() == [True, True, False, True, True]
    # the task's numbers are unweighted means over pairs: recompute them pair by pair from the rows
    by_pair = [np.array([it.startswith(pair.name) for it in p.item.tolist()]) for pair in pairs]
    acc = [100 * p.correct[m].mean() for m in by_pair]
    f1 = [100 * f1_score(p.target[m], p.pred[m], average="weighted", zero_division=0) for m in by_pair]
    assert result.metrics["accuracy"] == pytest.approx(np.mean(acc)) == pytest.approx((200 / 3 + 100) / 2)
    assert result.metrics["f1"] == pytest.approx(np.mean(f1))


def test_protocol_rejects_other_data() -> None:
    ctx = RunContext(torch.device("cpu"), 0, lambda m, s: np.zeros((1, 2), np.float32))
    with pytest.raises(ClBenchError, match="needs bitext data"):
        run_bitext(None, object(), BitextParams(), ctx)
    assert isinstance(load_tatoeba({"path": str(SHARED_DATA / "tatoeba"), "pairs": ["fra"], "limit": 3}, None), BitextData)


def test_full_matrix_and_chunked_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    from cl_bench.protocols import bitext

    rng = np.random.default_rng(3)
    src = rng.normal(size=(50, 6)).astype(np.float32)
    tgt = (src + rng.normal(scale=1.0, size=(50, 6))).astype(np.float32)
    params = BitextParams(chunk_size=7)
    full = score_pair(src, tgt, params)
    monkeypatch.setattr(bitext, "FULL_MATRIX_MAX", 0)
    assert score_pair(src, tgt, params) == full
    assert 0 < full["error_margin"] < 100 and full["error_nn"] != full["error_margin"]


def test_tatoeba_tasks_resolve_to_the_shared_files() -> None:
    from cl_bench.registry import Registry

    reg = Registry()
    mini = reg.task("tatoeba-mini")
    data = load_tatoeba(mini.dataset.params, None)
    assert [p.name for p in data.pairs] == ["deu-eng", "fra-eng", "jpn-eng", "rus-eng"]
    assert all(len(p.source) == 100 for p in data.pairs)
    assert Path(data.meta["folder"]).resolve() == (SHARED_DATA / "tatoeba").resolve()
    full = reg.task("tatoeba-bitext")
    assert len(load_tatoeba(full.dataset.params, SHARED_DATA).pairs) == 12  # --data-root ../shared/data
    assert reg.method("minilm").provides == ["text_encoder"]
