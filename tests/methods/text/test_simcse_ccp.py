"""SimCSE and CCP: losses vs explicit computation, context sampling, training (tiny BERT) and errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cl_bench.data.text.text_corpus import load_text_corpus
from cl_bench.data.text.types import TextSplit
from cl_bench.errors import ClBenchError
from cl_bench.methods.text.ccp import CCP, context_candidates
from cl_bench.methods.text.simcse import SimCSE, info_nce
from cl_bench.models.weights.fingerprint import model_fingerprint
from cl_bench.models.text.text_encoders import build_hf_text_encoder
from cl_bench.specs import TrainRecipe
from tests.conftest import write_tree
from tests.text_helpers import save_tiny_bert


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert")


def _unit(v: list[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def _xent_rows(rows: list[list[float]]) -> float:
    """Mean over rows i of -log softmax(row_i)[i]."""
    total = 0.0
    for i, row in enumerate(rows):
        total += math.log(sum(math.exp(x) for x in row)) - row[i]
    return total / len(rows)


def test_info_nce_equals_explicit_softmax() -> None:
    rng = np.random.default_rng(0)
    a, p = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    au, pu = [_unit(list(r)) for r in a], [_unit(list(r)) for r in p]
    rows = [[sum(x * y for x, y in zip(ai, pj, strict=True)) / 0.1 for pj in pu] for ai in au]
    got = info_nce(torch.tensor(a), torch.tensor(p), 0.1).item()
    assert got == pytest.approx(_xent_rows(rows), rel=1e-9)


class FixedEncoder:
    """Stands in for a text encoder: returns preset embeddings for the texts it is given."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    def encode(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([self.table[t] for t in texts], dtype=torch.float64)


def test_ccp_loss_equals_explicit_computation_with_bank() -> None:
    rng = np.random.default_rng(2)
    table = {f"s{i}": list(rng.normal(size=3)) for i in range(6)}
    enc = FixedEncoder(table)
    obj = CCP(embed_dim=3, temperature=0.5, bank_size=3, asymmetric_bn=False).double()
    batch = (["s0", "s1"], ["s2", "s3"])
    first, _ = obj.loss(enc, batch)  # empty bank: in-batch negatives only
    c, x = [_unit(table[s]) for s in batch[0]], [_unit(table[s]) for s in batch[1]]
    dot = lambda u, v: sum(a * b for a, b in zip(u, v, strict=True))
    rows_c = [[dot(ci, xj) / 0.5 for xj in x] for ci in c]
    rows_x = [[dot(xi, cj) / 0.5 for cj in c] for xi in x]
    assert first.item() == pytest.approx((_xent_rows(rows_c) + _xent_rows(rows_x)) / 2, rel=1e-9)
    assert obj.bank.shape == (2, 3)  # the context embeddings went into the bank
    second, _ = obj.loss(enc, (["s4", "s5"], ["s0", "s1"]))
    bank = x  # negatives appended after the in-batch candidates
    c2, x2 = [_unit(table[s]) for s in ("s4", "s5")], [_unit(table[s]) for s in ("s0", "s1")]
    rows_c = [[dot(ci, xj) / 0.5 for xj in x2] + [dot(ci, b) / 0.5 for b in bank] for ci in c2]
    rows_x = [[dot(xi, cj) / 0.5 for cj in c2] + [dot(xi, b) / 0.5 for b in bank] for xi in x2]
    assert second.item() == pytest.approx((_xent_rows(rows_c) + _xent_rows(rows_x)) / 2, rel=1e-9)
    assert obj.bank.shape == (3, 3) and not obj.bank.requires_grad  # capped at bank_size


def test_context_candidates_and_batches_stay_inside_documents() -> None:
    doc_ids = np.array([0, 0, 0, 1, 1, 2])
    cands = context_candidates(doc_ids, window=1)
    assert [c.tolist() for c in cands] == [[1], [0, 2], [1], [4], [3], []]
    corpus = load_text_corpus({"n_docs": 30}, None).train
    obj = CCP(embed_dim=4, window=2)
    where = {}
    for i, t in enumerate(corpus.texts):
        where.setdefault(t, set()).add(i)
    n = 0
    for centres, contexts in obj.make_batches(corpus, 8, torch.Generator().manual_seed(0)):
        for a, b in zip(centres, contexts, strict=True):
            assert any(
                corpus.doc_ids[i] == corpus.doc_ids[j] and 0 < abs(i - j) <= 2 for i in where[a] for j in where[b]
            )
            n += 1
    assert n == 8 * obj.steps_per_epoch(corpus, 8)


@pytest.mark.parametrize("objective", ["simcse", "ccp"])
def test_training_changes_weights_deterministically(tiny_dir: Path, objective: str) -> None:
    corpus = load_text_corpus({"n_docs": 12}, None).train
    recipe = TrainRecipe(objective=objective, params={"max_steps": 3, "max_length": 16}, epochs=2,
                         batch_size=8, lr=1e-3, optimizer="adamw")
    cls = {"simcse": SimCSE, "ccp": CCP}[objective]
    states = []
    for _ in range(2):
        enc = build_hf_text_encoder({"path": str(tiny_dir)})
        before = model_fingerprint(enc)
        torch.manual_seed(0)
        card = cls.train_model(enc, recipe, corpus, 0, 0, torch.device("cpu"))
        assert card.steps == 3 and card.objective == objective and math.isfinite(card.final_loss)
        assert not enc.training and enc.max_length == 128  # eval mode, own truncation restored
        assert model_fingerprint(enc) != before
        states.append(enc.state_dict())
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k


def test_train_through_engine_is_cached(tiny_root: Path, tiny_dir: Path) -> None:
    from cl_bench.engine import RunOptions, run
    from cl_bench.registry import Registry

    write_tree(tiny_root, {
        "tasks/tiny-sts.yaml": """
            id: tiny-sts
            version: 1
            description: small sts-synthetic (test fixture)
            dataset: {name: sts-synthetic, params: {n: 20}}
            protocol: {name: sts}
            primary_metric: cosine_spearman
        """,
        "baselines/tiny-simcse.yaml": f"""
            id: tiny-simcse
            description: tiny BERT + 2 SimCSE steps (test fixture)
            provides: [text_encoder]
            arch: {{name: hf-text-encoder, params: {{path: "{tiny_dir}"}}}}
            train:
              objective: simcse
              params: {{max_steps: 2, max_length: 16}}
              epochs: 1
              batch_size: 8
              lr: 0.001
              data: {{name: text-corpus, params: {{n_docs: 10}}}}
        """,
        "baselines/tiny-simcse-nodata.yaml": f"""
            id: tiny-simcse-nodata
            description: SimCSE without train.data (test fixture)
            provides: [text_encoder]
            arch: {{name: hf-text-encoder, params: {{path: "{tiny_dir}"}}}}
            train: {{objective: simcse, epochs: 1, batch_size: 8, lr: 0.001}}
        """,
    })
    reg = Registry()
    first = run(reg.task("tiny-sts"), reg.method("tiny-simcse"), RunOptions(write=False))
    assert first.record.model_source == "trained" and first.model.card["steps"] == 2
    second = run(reg.task("tiny-sts"), reg.method("tiny-simcse"), RunOptions(write=False))
    assert second.model.reused and second.record.model_fingerprint == first.record.model_fingerprint
    assert second.record.metrics == first.record.metrics
    with pytest.raises(ClBenchError, match="evaluation-only"):
        run(reg.task("tiny-sts"), reg.method("tiny-simcse-nodata"), RunOptions(write=False))


def test_bad_training_input(tiny_dir: Path) -> None:
    enc = build_hf_text_encoder({"path": str(tiny_dir)})
    recipe = TrainRecipe(objective="ccp", epochs=1, batch_size=4, lr=1e-3)
    with pytest.raises(ClBenchError, match="doc_ids"):
        CCP.train_model(enc, recipe, TextSplit(["a", "b", "c", "d", "e"]), 0, 0, torch.device("cpu"))
    with pytest.raises(ClBenchError, match="no batch of 8"):
        SimCSE.train_model(enc, recipe.model_copy(update={"objective": "simcse", "batch_size": 8}),
                           TextSplit(["a", "b"]), 0, 0, torch.device("cpu"))
    with pytest.raises(ClBenchError, match="trains a text encoder"):
        SimCSE.train_model(torch.nn.Linear(2, 2), recipe, TextSplit(["a"] * 8), 0, 0, torch.device("cpu"))
    with pytest.raises(ClBenchError, match="unknown field"):
        SimCSE(temprature=0.1)
    with pytest.raises(ClBenchError, match="greater than 0"):
        CCP(embed_dim=4, temperature=0)
