"""``icl-linreg``: in-context linear regression prompts (Garg et al., arXiv 2208.01066; reference
code dtsip/in-context-learning ``src/samplers.py``, ``src/tasks.py``; PROTOCOLS.md §9b).

A prompt is ``n_points`` pairs (x_i, y_i): x ~ N(0, I_d), one w ~ N(0, I_d) per prompt,
y = w·x (+ ``noise_std`` · N(0, 1) when noisy). The test split is a fixed set of prompts
(1,280 = 20 × 64 in the reference evaluation); the train split is a seeded sampler that draws
fresh prompts every step, with the curriculum's truncation (only the first ``n_dims_active``
coordinates of x non-zero, and fewer points) as in the reference.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from cl_bench.components import register
from cl_bench.specs import canonical_hash, validate_params


class LinRegParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_dims: int = Field(default=5, ge=1)
    n_points: int = Field(default=11, ge=2)
    noise_std: float = Field(default=0.0, ge=0)
    n_test: int = Field(default=1280, ge=1)
    seed: int = 0


def sample_prompts(
    gen: torch.Generator, batch: int, n_points: int, n_dims: int, n_dims_active: int | None = None,
    noise_std: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """xs [B, n, d], ys [B, n], ws [B, d] (float32); coordinates past ``n_dims_active`` are zero."""
    xs = torch.randn(batch, n_points, n_dims, generator=gen)
    if n_dims_active is not None and n_dims_active < n_dims:
        xs[:, :, n_dims_active:] = 0
    ws = torch.randn(batch, n_dims, generator=gen)
    ys = torch.einsum("bnd,bd->bn", xs, ws)
    if noise_std > 0:
        ys = ys + noise_std * torch.randn(batch, n_points, generator=gen)
    return xs, ys, ws


@dataclass
class LinRegSampler:
    """The train split: prompts drawn on demand (the fingerprint names the generator, not data)."""

    n_dims: int
    n_points: int
    noise_std: float
    fingerprint: str = ""

    def __post_init__(self) -> None:
        self.fingerprint = canonical_hash({"sampler": "gaussian-linreg-v1", "n_dims": self.n_dims,
                                           "n_points": self.n_points, "noise_std": self.noise_std})

    def sample(self, gen: torch.Generator, batch: int, n_points: int | None = None,
               n_dims_active: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys, _ = sample_prompts(gen, batch, n_points or self.n_points, self.n_dims, n_dims_active,
                                   self.noise_std)
        return xs, ys


@dataclass
class LinRegSplit:
    xs: np.ndarray  # [N, n, d] float32
    ys: np.ndarray  # [N, n]
    ws: np.ndarray  # [N, d]
    fingerprint: str = ""

    def __post_init__(self) -> None:
        h = hashlib.sha256()
        for a in (self.xs, self.ys, self.ws):
            a = np.ascontiguousarray(a)
            h.update(str(a.shape).encode() + a.tobytes())
        self.fingerprint = h.hexdigest()

    def __len__(self) -> int:
        return len(self.xs)


@dataclass
class LinRegData:
    name: str
    train: LinRegSampler
    test: LinRegSplit
    noise_std: float
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_dims(self) -> int:
        return self.train.n_dims

    @property
    def n_points(self) -> int:
        return self.train.n_points

    @property
    def fingerprint(self) -> str:
        return canonical_hash({"name": self.name, "train": self.train.fingerprint, "test": self.test.fingerprint})

    @property
    def arch_inputs(self) -> dict[str, Any]:
        return {"input_kind": "vectors", "n_dims": self.n_dims, "max_positions": 2 * self.n_points}


def generate(p: LinRegParams) -> LinRegData:
    gen = torch.Generator().manual_seed(p.seed)
    xs, ys, ws = sample_prompts(gen, p.n_test, p.n_points, p.n_dims, None, p.noise_std)
    test = LinRegSplit(xs.numpy(), ys.numpy(), ws.numpy())
    return LinRegData("icl-linreg", LinRegSampler(p.n_dims, p.n_points, p.noise_std), test, p.noise_std,
                      p.model_dump())


@register("dataset", "icl-linreg")
def load_linreg(params: dict[str, Any], data_root: Path | None = None) -> LinRegData:
    """Generated (no files): ``data_root`` is not used."""
    return generate(validate_params(LinRegParams, params, "dataset icl-linreg params"))
