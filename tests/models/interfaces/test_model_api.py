"""The declared model / objective / data interfaces (cl_bench.models.interfaces.hooks) and obtain's check that a
built model implements what its method provides."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from cl_bench import components
from cl_bench.errors import ClBenchError
from cl_bench.models.interfaces.hooks import (
    CAPABILITY_INTERFACES,
    check_provides,
    checkpoint_hook,
    data_arch_inputs,
    embed_planner,
    images_fingerprint,
    needs_labels,
    own_checkpoint_loader,
    own_trainer,
    preloaded_report,
    split_embedder,
)
from cl_bench.obtain import build_encoder
from cl_bench.registry import Registry
from cl_bench.specs import Capability

PROJECT_ROOT = Path(__file__).resolve().parents[3]


class NoData:
    arch_inputs: dict[str, Any] = {}
    fingerprint = "none"


def _data(name: str, params: dict[str, Any]) -> Any:
    return components.get("dataset", name)(params, None)


# one method per capability, built as obtain builds it (every model of these archs, untrained)
BUILT = {
    "simclr": lambda: _data("digits", {}),
    "tiny-lm": lambda: NoData(),
    "icl-transformer": lambda: _data("icll-dfa", {"n_train": 4, "n_test": 2}),
    "clip": lambda: _data("scenes-captions", {"n_train": 4, "n_test": 2}),
    "simcse": lambda: NoData(),
}


@pytest.mark.parametrize("method_id", sorted(BUILT))
def test_built_models_implement_what_their_methods_provide(method_id: str) -> None:
    method = Registry().method(method_id)
    model = build_encoder(method, BUILT[method_id]())
    check_provides(model, method.provides, method.id)  # no error
    for capability in method.provides:
        assert isinstance(model, CAPABILITY_INTERFACES[capability])


def test_every_capability_has_an_interface() -> None:
    assert set(CAPABILITY_INTERFACES) == set(Capability.__args__)  # type: ignore[attr-defined]


def test_a_model_lacking_a_provided_capability_is_refused_in_one_line() -> None:
    model = nn.Linear(4, 2)  # an image encoder, nothing else
    check_provides(model, ["image_encoder"], "m")
    for capability in ("text_encoder", "image_text", "causal_lm", "sequence_model"):
        with pytest.raises(ClBenchError) as err:
            check_provides(model, ["image_encoder", capability], "m")
        msg = str(err.value)
        assert "\n" not in msg and f"provides {capability}" in msg and "Linear" in msg


def test_hooks_are_found_where_declared_and_absent_elsewhere() -> None:
    class Own(nn.Module):
        checkpoint_report = {"format": "x"}

        def load_checkpoint(self, path: Path) -> dict[str, Any]:
            return {"path": str(path)}

        def embed_split(self, split: Any, device: torch.device) -> Any:
            return None

    plain, own = nn.Linear(2, 2), Own()
    assert own_checkpoint_loader(plain) is None and own_checkpoint_loader(own)(Path("p")) == {"path": "p"}
    assert preloaded_report(plain) is None and preloaded_report(own) == {"format": "x"}
    assert split_embedder(plain) is None and split_embedder(own) is not None
    assert embed_planner(plain) is None
    assert embed_planner(build_encoder(Registry().method("clip"), BUILT["clip"]())) is not None


def test_objective_hooks() -> None:
    simclr, supervised, pixpro = (components.get("objective", n) for n in ("simclr", "supervised", "pixpro"))
    assert own_trainer(simclr) is None  # the image trainer trains it
    assert own_trainer(pixpro) is not None and own_trainer(components.get("objective", "icl-pretrain")) is not None
    assert needs_labels(supervised) and not needs_labels(simclr)
    assert needs_labels(object)  # undeclared: assumed to need labels (a checkpoint keyed on them too)


def test_data_and_builder_hooks() -> None:
    digits = _data("digits", {})
    assert data_arch_inputs(NoData()) == {}
    assert data_arch_inputs(_data("icll-dfa", {"n_train": 4, "n_test": 2}))  # a vocabulary size
    assert images_fingerprint(digits.train) == digits.train.fingerprint
    dense = _data("scenes-voc", {"n_train": 4, "n_test": 2, "image_size": 32})
    assert images_fingerprint(dense.train) == dense.train.images_fingerprint != dense.train.fingerprint
    assert checkpoint_hook(components.get("arch", "small-resnet")) is None
    assert checkpoint_hook(components.get("arch", "hf-causal-lm")) is not None


HOOKS = ("embed_split", "embed_plan", "load_checkpoint", "train_model", "images_fingerprint", "arch_inputs",
         "checkpoint_report", "from_checkpoint")


@pytest.mark.parametrize("module", ["obtain.py", "extract.py", "engine.py"])
def test_no_hook_is_discovered_by_getattr_any_more(module: str) -> None:
    text = (PROJECT_ROOT / "cl_bench" / module).read_text()
    found = re.findall(r"getattr\([^,]+,\s*\"(\w+)\"", text)
    assert not set(found) & set(HOOKS), f"{module} discovers {set(found) & set(HOOKS)} by getattr: declare it in models/interfaces/hooks.py"


def test_every_protocol_requires_a_declared_capability() -> None:
    for name in components.names("protocol"):
        assert components.get("protocol", name).requires in CAPABILITY_INTERFACES, name
