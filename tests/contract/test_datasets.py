"""Contract of every registered dataset: an embedded one (used by a task tagged ``embedded`` or as a
method's training data) loads with its default params and no data root; any other one, asked
for without its data, fails with a one-line ClBenchError saying what is missing."""

from __future__ import annotations

from typing import Any

import pytest

from cl_bench import components
from cl_bench.errors import ClBenchError
from cl_bench.registry import Registry

SLOW = {"scenes-captions", "noisy-captions", "icll-dfa", "scenes-cityscapes", "scenes-coco", "scenes-voc"}  # > ~20 s cold on 2 CPUs


def embedded_datasets() -> set[str]:
    registry = Registry()
    names = {t.dataset.name for t in registry.tasks() if "embedded" in t.tags}
    names |= {m.train.data.name for m in registry.methods() if m.train is not None and m.train.data is not None}
    return names


EMBEDDED = sorted(embedded_datasets())
REAL = sorted(set(components.names("dataset")) - set(EMBEDDED))


def _marked(names: list[str]) -> list[Any]:
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names]


def test_the_split_covers_every_dataset() -> None:
    assert {"digits", "scenes-voc", "icll-dfa", "text-corpus", "lm-corpus"} <= set(EMBEDDED)
    assert {"cifar10", "voc", "coco", "truthfulqa", "tatoeba"} <= set(REAL)


@pytest.mark.parametrize("name", _marked(EMBEDDED))
def test_embedded_dataset_loads_with_default_params(name: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLBENCH_DATA", raising=False)
    data = components.get("dataset", name)({}, None)
    fingerprint = data.fingerprint
    assert isinstance(fingerprint, str) and len(fingerprint) >= 16
    assert data.fingerprint == components.get("dataset", name)({}, None).fingerprint  # deterministic


@pytest.mark.parametrize("name", REAL)
def test_real_dataset_without_data_is_a_one_line_error(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLBENCH_DATA", raising=False)
    with pytest.raises(ClBenchError) as e:
        components.get("dataset", name)({}, None)
    assert "\n" not in str(e.value) and len(str(e.value)) > 20
