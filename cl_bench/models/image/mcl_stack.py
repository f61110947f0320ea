"""``mcl-stack``: S copies of a base image encoder whose embeddings are concatenated.

The encoder of Multistage Contrastive Learning (MCL, Zhang et al., arXiv 2402.11816): stage k
trains copy k (see ``cl_bench.methods.image.mcl``), and the final representation is the
"cross-stage representation integration" — the concatenation of every stage's embedding, each
L2-normalised first so that every stage weighs the same under cosine kNN.

Params: ``base`` (an arch reference, default ``small-resnet`` width 32) and ``stages`` (S >= 1).
``embed_dim = S · base embed_dim``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from cl_bench import components
from cl_bench.errors import ClBenchError
from cl_bench.models.interfaces.image_encoder import ImageEncoder
from cl_bench.specs import ArchRef, validate_params


class MCLStackParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: ArchRef = Field(default_factory=lambda: ArchRef(name="small-resnet", params={"width": 32}))
    stages: int = Field(default=2, ge=1, le=8)


def probe_embed_dim(module: nn.Module, arch_inputs: dict[str, Any]) -> int:
    """``module.embed_dim``, or the width of its output on a zero batch of the data's shape."""
    dim = getattr(module, "embed_dim", None)
    if isinstance(dim, int):
        return dim
    size = tuple(arch_inputs.get("image_size", (32, 32)))
    probe = torch.zeros(2, int(arch_inputs.get("in_channels", 1)), *size)
    was = module.training
    module.eval()
    with torch.no_grad():
        dim = int(module(probe).shape[-1])
    module.train(was)
    return dim


class MCLStack(ImageEncoder):
    """``forward(x) = cat_k normalize(stage_k(x))``; ``stage(k)`` is the k-th base encoder."""

    arch_name = "mcl-stack"

    def __init__(self, stages: list[nn.Module], stage_dim: int) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.stage_dim = stage_dim
        self.embed_dim = stage_dim * len(stages)

    def stage(self, k: int) -> nn.Module:
        return self.stages[k]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.normalize(s(images), dim=-1) for s in self.stages], dim=-1)


@components.register("arch", "mcl-stack")
def build(params: dict, **arch_inputs: Any) -> MCLStack:
    """Build ``stages`` independently initialised copies of the base arch."""
    p: MCLStackParams = validate_params(MCLStackParams, params, where="arch mcl-stack")
    if p.base.name == "mcl-stack":
        raise ClBenchError("arch mcl-stack: 'base' cannot itself be mcl-stack")
    builder = components.get("arch", p.base.name)
    stages = [builder(p.base.params, **arch_inputs) for _ in range(p.stages)]
    if not any(True for _ in stages[0].parameters()):
        raise ClBenchError(f"arch mcl-stack: base arch '{p.base.name}' has no trainable weights")
    return MCLStack(stages, probe_embed_dim(stages[0], arch_inputs))
