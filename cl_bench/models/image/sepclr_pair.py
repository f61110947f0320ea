"""``sepclr-pair``: a common and a salient encoder side by side (SepCLR's contrastive-analysis model).

Two independently initialised copies of a base image encoder, each followed by a linear map
to its space (``common_dim``, ``salient_dim``), as the reference code replaces each ResNet's
``fc``. ``forward`` returns ``[common | salient]``; ``parts`` returns the two separately and
``separation_dims`` tells protocols which columns are which.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from cl_bench import components
from cl_bench.errors import ClBenchError
from cl_bench.models.interfaces.image_encoder import ImageEncoder
from cl_bench.models.image.mcl_stack import probe_embed_dim
from cl_bench.specs import ArchRef, validate_params


class SepCLRPairParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: ArchRef = Field(default_factory=lambda: ArchRef(name="small-resnet", params={"width": 32}))
    common_dim: int = Field(default=32, ge=1)
    salient_dim: int = Field(default=32, ge=1)


class SepCLRPair(ImageEncoder):
    arch_name = "sepclr-pair"

    def __init__(self, common: nn.Module, salient: nn.Module, base_dim: int, common_dim: int, salient_dim: int) -> None:
        super().__init__()
        self.common_encoder, self.salient_encoder = common, salient
        self.common_fc = nn.Linear(base_dim, common_dim)
        self.salient_fc = nn.Linear(base_dim, salient_dim)
        self.common_dim, self.salient_dim = common_dim, salient_dim
        self.embed_dim = common_dim + salient_dim
        self.separation_dims = {"common": [0, common_dim], "salient": [common_dim, common_dim + salient_dim]}

    def parts(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(common [N, common_dim], salient [N, salient_dim]) representations."""
        return self.common_fc(self.common_encoder(images)), self.salient_fc(self.salient_encoder(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.parts(images), dim=-1)


@components.register("arch", "sepclr-pair")
def build(params: dict, **arch_inputs: Any) -> SepCLRPair:
    p: SepCLRPairParams = validate_params(SepCLRPairParams, params, where="arch sepclr-pair")
    if p.base.name == "sepclr-pair":
        raise ClBenchError("arch sepclr-pair: 'base' cannot itself be sepclr-pair")
    builder = components.get("arch", p.base.name)
    common, salient = builder(p.base.params, **arch_inputs), builder(p.base.params, **arch_inputs)
    return SepCLRPair(common, salient, probe_embed_dim(common, arch_inputs), p.common_dim, p.salient_dim)
