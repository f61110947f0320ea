"""Component and spec parameters: THE strict base model, and validation with one-line errors.

Every parameter model (a task's or method's spec, a dataset's, protocol's, objective's or arch's
params) derives from :class:`Strict`: an unknown field is an error. :func:`validate_params` is
how a parameter dict becomes its typed model: a bad field is a :class:`ClBenchError` naming where
it came from, and integers are bounded before anything is allocated. The component registry
(:func:`cl_bench.components.register`) calls it for every component declared with ``params=``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from cl_bench.errors import ClBenchError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def describe_validation_error(path: Path | str, err: ValidationError) -> str:
    """One line naming the file, the first bad field and what was expected."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "<top level>"
    kind = first["type"]
    if kind == "extra_forbidden":
        return f"{path}: unknown field '{loc}' (remove it or check its spelling)"
    if kind == "missing":
        return f"{path}: missing required field '{loc}'"
    got = first.get("input")
    got_s = f" (got {got!r})" if not isinstance(got, (dict, list)) else ""
    more = f"; {err.error_count() - 1} more problem(s)" if err.error_count() > 1 else ""
    return f"{path}: field '{loc}': {first['msg']}{got_s}{more}"


# Every integer of a component's parameters is at most MAX_PARAM_INT (seeds: MAX_SEED_PARAM) unless
# its model states a bound of its own: a size typo (n_train: 1000000000) is an error before anything
# is allocated, whichever component reads it.
MAX_PARAM_INT = 10**6
MAX_SEED_PARAM = 2**32 - 1


def _has_upper_bound(info: Any) -> bool:
    return any(getattr(m, "le", None) is not None or getattr(m, "lt", None) is not None for m in info.metadata)


def check_int_bounds(value: Any, where: str, name: str = "") -> None:
    """ClBenchError when an integer in ``value`` (a validated model, dict, list) passes the caps above."""
    if isinstance(value, BaseModel):
        for field_name, info in type(value).model_fields.items():
            v = getattr(value, field_name)
            if not (isinstance(v, int) and _has_upper_bound(info)):
                check_int_bounds(v, where, field_name)
    elif isinstance(value, dict):
        for k, v in value.items():
            check_int_bounds(v, where, str(k))
    elif isinstance(value, (list, tuple)):
        for v in value:
            check_int_bounds(v, where, name)
    elif isinstance(value, int) and not isinstance(value, bool):
        cap = MAX_SEED_PARAM if name.endswith("seed") else MAX_PARAM_INT
        if abs(value) > cap:
            raise ClBenchError(f"{where}: '{name}' is {value}, beyond {cap} (the bound on an integer parameter; "
                               f"seeds: {MAX_SEED_PARAM}); is it a typo?")


def validate_params(model: type[BaseModel], params: dict[str, Any] | None, where: str) -> Any:
    """Validate a component's parameter dict; a bad field is a ClBenchError naming ``where``.
    Integers are bounded (:func:`check_int_bounds`) before the component allocates anything."""
    try:
        validated = model.model_validate(params or {})
    except ValidationError as e:
        raise ClBenchError(describe_validation_error(where, e)) from None
    check_int_bounds(validated, where)
    return validated
