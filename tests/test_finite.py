"""Non-finite weights, features and metrics never become a result; broken checkpoint-cache entries
are rebuilt, diverged training is never cached."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cl_bench import obtain
from cl_bench.cache import Cache
from cl_bench.engine import RunOptions, run
from cl_bench.errors import ClBenchError
from cl_bench.finite import check_array, check_metrics, check_state, json_safe
from cl_bench.registry import Registry


def test_checks_name_what_is_bad() -> None:
    check_array(np.ones((2, 3)), "f")
    check_array(np.array([1, 2]), "ints are always finite")
    with pytest.raises(ClBenchError, match=r"features: 2 of 6 values are NaN or infinite"):
        check_array(np.array([[1.0, np.nan, 2], [np.inf, 0, 0]]), "features")
    check_array(torch.tensor([0.0, -math.inf]), "log-likelihoods", allow_neg_inf=True)
    with pytest.raises(ClBenchError, match="1 of 2"):
        check_array(torch.tensor([math.inf, -math.inf]), "log-likelihoods", allow_neg_inf=True)
    with pytest.raises(ClBenchError, match=r"weight 'b' has 1 of 2 values NaN"):
        check_state({"a": torch.ones(2), "n": torch.tensor([3]), "b": torch.tensor([1.0, math.nan])}, "ckpt")
    assert check_metrics({"top1": 50, "APl": None}, "p", "top1") == {"top1": 50.0, "APl": None}
    with pytest.raises(ClBenchError, match="metric 'AP' is nan"):
        check_metrics({"AP": math.nan}, "p")
    with pytest.raises(ClBenchError, match="primary metric 'top1' is undefined"):
        check_metrics({"top1": None}, "p", "top1")
    assert json_safe({"a": [1.0, math.nan, {"b": math.inf}], "c": (2, "x")}) == {"a": [1.0, None, {"b": None}],
                                                                                 "c": [2, "x"]}


def test_nan_features_are_refused_before_the_protocol(tiny_registry: Registry, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from cl_bench import extract
    from cl_bench.feature_store import open_entry

    real = extract._rows  # every batch of model outputs on its way into the cache entry
    monkeypatch.setattr(extract, "_rows", lambda out: real(out) * np.float32("nan"))
    opts = RunOptions(results_dir=tmp_path / "r", cache_dir=tmp_path / "c", device="cpu")
    with pytest.raises(ClBenchError, match=r"features of .* from method 'tiny-random': \d+ of \d+ values are NaN"):
        run(tiny_registry.task("tiny-knn"), tiny_registry.method("tiny-random"), opts)
    assert not (tmp_path / "r").exists()  # nothing written
    assert all(open_entry(d) is None for d in (tmp_path / "c" / "features").glob("*/*") if d.is_dir())  # nor cached


def test_a_corrupt_cache_entry_is_rebuilt_and_a_diverged_run_never_cached(
        tiny_registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from cl_bench.components import get

    method, task = tiny_registry.method("tiny-simclr"), tiny_registry.task("tiny-knn")
    data = get("dataset", task.dataset.name)(task.dataset.params, None)
    cache = Cache(tmp_path / "cache")

    def obtain_once():
        return obtain.obtain_model(method, data, seed=0, device=torch.device("cpu"), cache=cache)

    first = obtain_once()
    folder = cache.checkpoint_dir(first.card["cache_key"])
    weights = folder / "encoder.safetensors"
    assert not first.reused and obtain_once().reused
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    again = obtain_once()
    assert not again.reused and "corrupt checkpoint cache entry" in capsys.readouterr().err
    assert again.fingerprint == first.fingerprint  # rebuilt: the same deterministic training
    (folder / "card.json").write_text("{not json")
    assert not obtain_once().reused
    assert obtain_once().reused

    def diverges(encoder, *args, **kwargs):  # a training run whose weights blew up
        for p in encoder.parameters():
            p.data.fill_(float("nan"))
        # the weight check stops obtain_model before the card is needed

    monkeypatch.setattr(obtain, "trainer_for", lambda objective: diverges)
    for f in folder.iterdir():
        f.unlink()
    with pytest.raises(ClBenchError, match=r"method 'tiny-simclr' trained with seed 0: weight .* NaN"):
        obtain_once()
    assert not weights.exists()  # never cached
