"""Contract of every registered protocol: its params model forbids unknown fields (also inside
nested settings), and a task naming one gets a one-line ClBenchError naming the field."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from cl_bench import components
from cl_bench.errors import ClBenchError
from cl_bench.protocols.base import Protocol
from cl_bench.registry import Registry
from cl_bench.params import validate_params

PROTOCOLS = components.names("protocol")


def shipped_params(name: str) -> dict:
    """The params of a shipped task using the protocol (its required fields filled), else none."""
    return next((dict(t.protocol.params) for t in Registry().tasks() if t.protocol.name == name), {})


def _nested_models(model: type[BaseModel]) -> list[type[BaseModel]]:
    out = [model]
    for field in model.model_fields.values():
        t = field.annotation
        if isinstance(t, type) and issubclass(t, BaseModel) and t not in out:
            out += _nested_models(t)
    return out


def test_there_are_protocols() -> None:
    assert len(PROTOCOLS) >= 10


@pytest.mark.parametrize("name", PROTOCOLS)
def test_params_forbid_extra_fields(name: str) -> None:
    protocol = components.get("protocol", name)
    assert isinstance(protocol, Protocol) and protocol.name == name
    for model in _nested_models(protocol.params):
        with pytest.raises(ValidationError) as e:
            model.model_validate({"not_a_param": 1})
        assert any(err["type"] == "extra_forbidden" and err["loc"] == ("not_a_param",) for err in e.value.errors()), model
    with pytest.raises(ClBenchError, match="unknown field 'not_a_param'") as err:
        validate_params(protocol.params, {**shipped_params(name), "not_a_param": 1}, f"task protocol {name}")
    assert "\n" not in str(err.value)
