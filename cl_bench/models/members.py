"""Models made from other methods' models: a member named by method id, obtained like any run's model.

A method may start from (``init``) or use (a generator LM, a frozen masking encoder) the trained
model of another method: ``MemberRef(method="tiny-bert-mlm", seed=0)``. The member is obtained
through :func:`cl_bench.obtain.obtain_model` — loaded, or trained once and cached by its recipe —
on CPU, with the run's cache when the caller has one (``members``: the run's member source) and
the default cache otherwise.

- :func:`obtain_member`: the member model, checked to provide a capability;
- :func:`init_from_member`: copy a member's weights into a freshly built model of the same arch
  (strict: every tensor must fit), recording what was loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from torch import nn

from cl_bench.errors import ClBenchError
from cl_bench.specs import MethodSpec
from cl_bench.params import Strict


class MemberRef(Strict):
    """Another method's model: its id in baselines/ and the seed it is trained with."""

    method: str
    seed: int = Field(default=0, ge=0)
    checkpoint: str | None = None  # load this file/directory into the member's arch instead


class _NoTaskData:
    """Stands in for task data when a member is obtained: a member trains on its own train.data."""

    name = "none"
    fingerprint = "none"
    arch_inputs: dict[str, Any] = {}

    @property
    def train(self) -> Any:
        raise ClBenchError("a member method must name its own training data in train.data")


def member_spec(ref: MemberRef, role: str, capability: str, members: Any = None) -> MethodSpec:
    """The member's method spec, checked to provide ``capability``."""
    if members is not None and hasattr(members, "method"):
        spec = members.method(ref.method)
    else:
        from cl_bench.registry import Registry

        spec = Registry().method(ref.method)
    if capability not in spec.provides:
        raise ClBenchError(f"{role} method '{ref.method}' does not provide {capability} (it provides {spec.provides})")
    return spec


def obtain_member(ref: MemberRef, role: str, capability: str, members: Any = None) -> Any:
    """The member's obtained model (``ObtainedModel``), on CPU, in eval mode."""
    spec = member_spec(ref, role, capability, members)
    checkpoint = Path(ref.checkpoint).expanduser() if ref.checkpoint else None
    if members is not None and hasattr(members, "obtain"):
        got = members.obtain(spec, _NoTaskData(), ref.seed, checkpoint)
    else:
        from cl_bench.cache import Cache
        from cl_bench.obtain import obtain_model

        got = obtain_model(spec, _NoTaskData(), seed=ref.seed, device=torch.device("cpu"), cache=Cache(),
                           checkpoint=checkpoint)
    got.model.eval()
    return got


def init_from_member(model: nn.Module, ref: MemberRef, role: str, capability: str, members: Any = None) -> dict[str, Any]:
    """Load the member's weights into ``model`` (same arch); returns what was loaded."""
    got = obtain_member(ref, role, capability, members)
    try:
        model.load_state_dict(got.model.state_dict(), strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ClBenchError(f"{role} method '{ref.method}' has another architecture than this model: {first}") from None
    return {"method": ref.method, "seed": ref.seed, "fingerprint": got.fingerprint, "source": got.source}
