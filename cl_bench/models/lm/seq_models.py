"""Sequence models trained fresh for the ICL suites: ``icl-gpt2``, ``icl-lstm``, ``icl-linear-rnn``.

One wrapper, three backbones mapping hidden states [B, T, H] -> [B, T, H] causally:

- ``icl-gpt2``: a GPT-2 (Hugging Face ``GPT2Model`` from a ``GPT2Config`` built in code, no
  download) fed ``inputs_embeds``, learned positions — the model of both seed papers;
- ``icl-lstm``: a stacked ``nn.LSTM``;
- ``icl-linear-rnn``: gated linear recurrent layers (LRU / S4D-real style): per channel
  h_t = a·h_{t-1} + (1 − a)·v_t with a learned, input-independent decay a ∈ (0, 1) (timescales
  initialised log-uniformly over the context), read out through a SiLU gate, each layer followed
  by an MLP; computed as a causal FFT convolution with the kernel a^k.

The data decide the input/output layers (``arch_inputs`` of the dataset):

- tokens (``icll-dfa``): an embedding of the 20-token vocabulary in, logits out
  (``token_logits(ids)``);
- vectors (``icl-linreg``): Garg et al.'s read-in: the prompt is the interleaved sequence
  x_1, (y_1, 0, ..., 0), x_2, ... of d-vectors, ``Linear(d, H)`` in, ``Linear(H, 1)`` out, and
  the prediction for y_i is read at x_i's position (``regress(xs, ys)``).

``ngram_heads: [1, 2, 3]`` (token inputs only) adds Akyürek et al.'s static n-gram head blocks,
one per n, between the embedding and the backbone (:mod:`cl_bench.models.lm.ngram_heads`): the
paper's architectural result, that such heads help every model family learn regular languages
in context.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from cl_bench.components import register
from cl_bench.errors import ClBenchError
from cl_bench.models.lm.ngram_heads import NgramBlock
from cl_bench.specs import validate_params


class SeqModelParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_layer: int = Field(default=2, ge=1)
    n_embd: int = Field(default=64, ge=4)
    n_head: int = Field(default=4, ge=1)  # icl-gpt2 only
    n_positions: int | None = Field(default=None, ge=2)  # icl-gpt2: default = the data's longest input
    mlp_ratio: int = Field(default=4, ge=1)  # icl-linear-rnn only
    dropout: float = Field(default=0.0, ge=0, lt=1)
    ngram_heads: list[int] = Field(default_factory=list)  # static n-gram head blocks (token inputs)


class GPT2Backbone(nn.Module):
    def __init__(self, p: SeqModelParams, max_positions: int) -> None:
        super().__init__()
        from transformers import GPT2Config, GPT2Model

        if p.n_embd % p.n_head:
            raise ClBenchError(f"arch icl-gpt2: n_embd ({p.n_embd}) must be divisible by n_head ({p.n_head})")
        n_pos = p.n_positions or max_positions
        if n_pos < max_positions:
            raise ClBenchError(f"arch icl-gpt2: n_positions {n_pos} is shorter than the data's inputs ({max_positions})")
        cfg = GPT2Config(
            vocab_size=1, n_positions=n_pos, n_embd=p.n_embd, n_layer=p.n_layer, n_head=p.n_head,
            resid_pdrop=p.dropout, embd_pdrop=p.dropout, attn_pdrop=p.dropout, use_cache=False,
        )
        self.gpt2 = GPT2Model(cfg)
        self.max_positions = n_pos

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.shape[1] > self.max_positions:
            raise ClBenchError(f"icl-gpt2: input of {h.shape[1]} positions exceeds n_positions {self.max_positions}")
        return self.gpt2(inputs_embeds=h, use_cache=False).last_hidden_state


class LSTMBackbone(nn.Module):
    def __init__(self, p: SeqModelParams, max_positions: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(p.n_embd, p.n_embd, num_layers=p.n_layer, batch_first=True,
                            dropout=p.dropout if p.n_layer > 1 else 0.0)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.lstm(h)[0]


def causal_decay_conv(v: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
    """h_t = Σ_{s ≤ t} decay^{t−s} v_s for v [B, T, C], decay [C] in (0, 1), by FFT (O(T log T))."""
    T = v.shape[1]
    k = torch.arange(T, device=v.device, dtype=v.dtype)
    kernel = torch.exp(k[:, None] * torch.log(decay)[None, :])  # [T, C]
    n = 2 * T
    out = torch.fft.irfft(torch.fft.rfft(v, n=n, dim=1) * torch.fft.rfft(kernel, n=n, dim=0)[None], n=n, dim=1)
    return out[:, :T]


def linear_recurrence_reference(v: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
    """The same recurrence step by step (for tests)."""
    h = torch.zeros_like(v[:, 0])
    out = []
    for t in range(v.shape[1]):
        h = decay * h + v[:, t]
        out.append(h)
    return torch.stack(out, dim=1)


class LinearRecurrentLayer(nn.Module):
    def __init__(self, width: int, mlp_ratio: int, max_positions: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.value = nn.Linear(width, width)
        self.gate = nn.Linear(width, width)
        self.out = nn.Linear(width, width)
        # decay = exp(-1/τ), τ log-uniform in [1, max_positions]; stored as log τ
        tau = torch.exp(torch.linspace(0.0, math.log(max(2, max_positions)), width))
        self.log_tau = nn.Parameter(torch.log(tau))
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width))
        self.drop = nn.Dropout(dropout)

    def decay(self) -> torch.Tensor:
        return torch.exp(-torch.exp(-self.log_tau))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        u = self.norm1(h)
        a = self.decay()
        state = causal_decay_conv((1 - a) * self.value(u), a)
        h = h + self.drop(self.out(state * F.silu(self.gate(u))))
        return h + self.drop(self.mlp(self.norm2(h)))


class LinearRNNBackbone(nn.Module):
    def __init__(self, p: SeqModelParams, max_positions: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            LinearRecurrentLayer(p.n_embd, p.mlp_ratio, max_positions, p.dropout) for _ in range(p.n_layer)
        )
        self.norm = nn.LayerNorm(p.n_embd)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            h = layer(h)
        return self.norm(h)


BACKBONES = {"icl-gpt2": GPT2Backbone, "icl-lstm": LSTMBackbone, "icl-linear-rnn": LinearRNNBackbone}


class ICLSequenceModel(nn.Module):
    """A backbone with token or vector input/output layers; see the module docstring."""

    def __init__(self, arch: str, p: SeqModelParams, input_kind: Literal["tokens", "vectors"],
                 max_positions: int, vocab_size: int = 0, pad_id: int = -1, n_dims: int = 0) -> None:
        super().__init__()
        self.arch = arch
        self.input_kind = input_kind
        self.backbone = BACKBONES[arch](p, max_positions)
        if p.ngram_heads and (input_kind != "tokens" or min(p.ngram_heads) < 1):
            raise ClBenchError(f"arch {arch}: ngram_heads (n >= 1) need token inputs (icll-dfa), got "
                               f"{p.ngram_heads} on {input_kind}")
        self.ngram_blocks = nn.ModuleList(NgramBlock(p.n_embd, n) for n in p.ngram_heads)
        if input_kind == "tokens":
            self.vocab_size, self.pad_id = vocab_size, pad_id
            self.embed = nn.Embedding(vocab_size, p.n_embd)
            self.head = nn.Linear(p.n_embd, vocab_size)
        else:
            self.n_dims = n_dims
            self.read_in = nn.Linear(n_dims, p.n_embd)
            self.read_out = nn.Linear(p.n_embd, 1)

    def _need(self, kind: str) -> None:
        if self.input_kind != kind:
            what = "token sequences (icll-dfa)" if self.input_kind == "tokens" else "regression prompts (icl-linreg)"
            raise ClBenchError(f"this {self.arch} model was built for {what}; it cannot be used on the other suite")

    def token_logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Next-token logits [B, T, V] for token ids [B, T]."""
        self._need("tokens")
        h = self.embed(ids)
        for block in self.ngram_blocks:
            h = block(h, ids)
        return self.head(self.backbone(h))

    @staticmethod
    def interleave(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """[x_1, (y_1, 0..0), x_2, (y_2, 0..0), ...]: [B, 2n, d] (Garg et al.'s ``_combine``)."""
        b, n, d = xs.shape
        ys_wide = torch.cat([ys.view(b, n, 1), torch.zeros(b, n, d - 1, device=ys.device, dtype=xs.dtype)], dim=2)
        return torch.stack([xs, ys_wide], dim=2).view(b, 2 * n, d)

    def regress(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Prediction [B, n] of each y_i from the pairs before it and x_i."""
        self._need("vectors")
        if xs.shape[-1] != self.n_dims:
            raise ClBenchError(f"prompts have {xs.shape[-1]} dimensions; the model was built for {self.n_dims}")
        out = self.read_out(self.backbone(self.read_in(self.interleave(xs, ys))))
        return out[:, ::2, 0]

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.token_logits(*args) if self.input_kind == "tokens" else self.regress(*args)

    def loglikelihood(self, requests: Any) -> Any:  # guard: these are not text language models
        raise ClBenchError(
            f"{self.arch} is a sequence model for the ICL suites (icll-dfa, icl-linreg); it does not score text"
        )


def _builder(arch: str) -> Any:
    def build(params: dict[str, Any], **inputs: Any) -> ICLSequenceModel:
        p = validate_params(SeqModelParams, params, f"arch {arch} params")
        kind = inputs.get("input_kind")
        if kind not in ("tokens", "vectors"):
            raise ClBenchError(f"arch {arch} is built for an ICL dataset (icll-dfa or icl-linreg); this task's data is not one")
        return ICLSequenceModel(
            arch, p, kind, int(inputs["max_positions"]), vocab_size=int(inputs.get("vocab_size", 0)),
            pad_id=int(inputs.get("pad_id", -1)), n_dims=int(inputs.get("n_dims", 0)),
        )

    build.__name__ = f"build_{arch.replace('-', '_')}"
    return build


for _arch in BACKBONES:
    register("arch", _arch)(_builder(_arch))
