"""Non-finite numbers never become a result.

A NaN weight turns every feature into NaN; NaN similarities compare false, so a kNN vote
then calls every item right and the harness would report 100 %. The checks below sit where
values enter a run — the loaded or trained weights (:mod:`cl_bench.obtain`), the extracted
features (the engine's ``features`` wrapper), the scores a protocol ranks (log-likelihoods,
logits) and the metrics it returns (the engine, before the record is built) — and turn the
first non-finite value into one ``ClBenchError`` line saying where it came from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from cl_bench.errors import ClBenchError


def _count_bad(x: Any, allow_neg_inf: bool) -> tuple[int, int]:
    """(non-finite entries, entries) of an array-like, as ints."""
    if isinstance(x, torch.Tensor):
        if not (x.is_floating_point() or x.is_complex()):
            return 0, x.numel()
        bad = ~torch.isfinite(x)
        if allow_neg_inf:
            bad &= ~torch.isneginf(x)
        return int(bad.sum()), x.numel()
    a = np.asarray(x)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.complexfloating)):
        return 0, a.size
    bad = ~np.isfinite(a)
    if allow_neg_inf:
        bad &= ~np.isneginf(a)
    return int(bad.sum()), a.size


def check_array(x: Any, where: str, hint: str = "", allow_neg_inf: bool = False) -> None:
    """ClBenchError when ``x`` (tensor or array) holds NaN or ±inf (``-inf`` allowed on request:
    a log-probability of an impossible continuation)."""
    n_bad, n = _count_bad(x, allow_neg_inf)
    if n_bad:
        raise ClBenchError(f"{where}: {n_bad} of {n} values are NaN or infinite; no result is written"
                           + (f" ({hint})" if hint else ""))


def check_state(state: Mapping[str, Any], where: str) -> None:
    """Every floating tensor of a state dict must be finite; the error names the first bad key."""
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            n_bad, n = _count_bad(value, False)
            if n_bad:
                raise ClBenchError(
                    f"{where}: weight '{key}' has {n_bad} of {n} values NaN or infinite; such a model would "
                    "score nonsense (NaN similarities compare false), so it is refused — use a checkpoint "
                    "whose training did not diverge")


def check_module(model: torch.nn.Module, where: str) -> None:
    """:func:`check_state` of a module's parameters and buffers."""
    check_state(dict(model.state_dict(keep_vars=False)), where)


def check_metrics(metrics: Mapping[str, Any], where: str, primary: str | None = None) -> dict[str, float | None]:
    """The metrics as floats; ``None`` stays None (a metric undefined on this data, e.g. COCO's
    APl when no object is large), the primary metric must be a number, and NaN/±inf is an error."""
    out: dict[str, float | None] = {}
    for name, value in metrics.items():
        if value is None:
            if name == primary:
                raise ClBenchError(f"{where}: the primary metric '{name}' is undefined on this data; "
                                   "pick a primary metric the data defines")
            out[name] = None
            continue
        v = float(value)
        if not math.isfinite(v):
            raise ClBenchError(f"{where}: metric '{name}' is {v}; a non-finite metric never becomes a result")
        out[name] = v
    return out


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (in nested dicts, lists, tuples) replaced by None, so
    a result's free-form extras are valid JSON and hold no NaN a reader could mistake for a number."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
