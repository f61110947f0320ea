"""Context-aware prompt tuning (CPT; Blau et al. 2024, arXiv 2410.17222) and soft prompt tuning,
as adaptations of a frozen Hugging Face causal LM to k labelled examples.

CPT: the k demonstrations are concatenated as the context (exactly the ICL prompt's block).
Their token embeddings E0 get a learned offset δ (one row per context token), optimised with
Adam to minimise the (weighted) cross-entropy of the *label tokens present in the context*,
each predicted from the context before it; after every step δ is projected back into a ball
around E0: per token, ‖δ_t‖₂ ≤ ε_t (the paper's choice) or ‖δ_t‖∞ ≤ ε_t. Label tokens are never
changed (ε = 0, gradient masked), as in the paper; input tokens get radius ``epsilon``, template
(format) tokens ``epsilon_format``. With ``relative`` the radii are fractions of the mean L2 norm
of the context's original token embeddings (the paper's radii are absolute for 2,048-wide
embeddings and scaled by sqrt(d / 2048)). ``decay`` weights demonstration j's label loss by
decay^(k − 1 − j) (the paper's exponential decay; 1 = uniform). Test queries are then scored after
the refined context exactly as in ICL. The paper also appends training examples as extra
queries and randomises templates; here the loss is on the context's own labels only.

Prompt tuning (Lester et al. 2021): ``n_tokens`` soft vectors (initialised from the embeddings of
random vocabulary tokens) prepended to the query, trained with Adam on the same k examples
(cross-entropy of the label words after ``soft prompt + query``); no demonstrations at test time.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from cl_bench.errors import ClBenchError
from cl_bench.methods.trainer import FitLog, fit
from cl_bench.models.interfaces.causal_lm import TokenPair
from cl_bench.specs import Strict

FORMAT, INPUT, LABEL = 0, 1, 2


class CPTParams(Strict):
    steps: int = Field(default=30, ge=0)
    lr: float = Field(default=0.01, gt=0)  # Adam step, in units of the mean token-embedding norm
    epsilon: float = Field(default=0.1, ge=0)
    epsilon_format: float | None = Field(default=None, ge=0)  # None: = epsilon
    relative: bool = True
    norm: Literal["l2", "linf"] = "l2"
    decay: float = Field(default=1.0, gt=0, le=1)


class PromptTuningParams(Strict):
    n_tokens: int = Field(default=8, ge=1)
    steps: int = Field(default=50, ge=0)
    lr: float = Field(default=0.01, gt=0)  # Adam step, in units of the mean token-embedding norm


def hf_of(model: Any) -> Any:
    hf = getattr(model, "hf", None)
    if hf is None or not hasattr(hf, "get_input_embeddings"):
        raise ClBenchError(f"CPT / prompt tuning need a Hugging Face causal LM; {type(model).__name__} has none")
    return hf


@contextmanager
def frozen(module: torch.nn.Module) -> Iterator[None]:
    """Parameters without gradients for the duration (restored after)."""
    saved = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def project(delta: torch.Tensor, radius: torch.Tensor, norm: str) -> torch.Tensor:
    """Each row of ``delta`` [m, d] moved into its ball of ``radius`` [m] (L2: rescaled; L∞: clipped)."""
    r = radius.to(delta.dtype)[:, None]
    if norm == "linf":
        return torch.maximum(torch.minimum(delta, r), -r)
    n = delta.norm(dim=1, keepdim=True)
    return delta * torch.where(n > r, r / n.clamp_min(1e-30), torch.ones_like(n))


def segment_tokens(model: Any, segments: Sequence[tuple[str, int]]) -> tuple[list[int], list[int], list[list[int]]]:
    """Token ids of the concatenated segments, each token's type (the segment it ends in), and for
    each label segment its token positions (empty when the tokenizer merges across its edges)."""
    text = "".join(s for s, _ in segments)
    ids = model.tok_encode(text)
    types = [FORMAT] * len(ids)
    labels: list[list[int]] = []
    end, prev = 0, 0
    for s, kind in segments:
        start, end = end, end + len(s)
        upto = model.tok_encode(text[:end])
        n = len(upto) if upto == ids[: len(upto)] else prev
        for t in range(prev, n):
            types[t] = kind
        if kind == LABEL:
            before = model.tok_encode(text[:start])
            ok = before == ids[: len(before)] and n == len(upto)
            labels.append(list(range(len(before), n)) if ok and len(before) > 0 else [])
        prev = n
    return ids, types, labels


def _embed(hf: Any, ids: Sequence[int]) -> torch.Tensor:
    emb = hf.get_input_embeddings()
    return emb(torch.tensor(list(ids), dtype=torch.long, device=emb.weight.device)).detach()


def refine_context(model: Any, ids: list[int], types: list[int], labels: list[list[int]], p: CPTParams) -> tuple[torch.Tensor, dict[str, Any]]:
    """δ [len(ids), d] for the context ``ids`` (zeros when ``steps`` is 0)."""
    hf = hf_of(model)
    if len(ids) > model.max_length:
        raise ClBenchError(f"CPT: a context of {len(ids)} tokens exceeds the model's {model.max_length}")
    e0 = _embed(hf, ids).float()
    scale = float(e0.norm(dim=1).mean()) if p.relative else 1.0
    kind = torch.tensor(types, device=e0.device)
    eps_f = p.epsilon if p.epsilon_format is None else p.epsilon_format
    radius = torch.where(kind == INPUT, p.epsilon, torch.where(kind == FORMAT, eps_f, 0.0)).float() * scale
    movable = (kind != LABEL).float()[:, None]
    delta = torch.zeros_like(e0, requires_grad=True)
    targets = [(t, w) for j, pos in enumerate(labels) for t in pos for w in [p.decay ** (len(labels) - 1 - j)]]
    card: dict[str, Any] = {"label_tokens": len(targets), "labels_unaligned": sum(1 for x in labels if not x),
                            "radius_scale": scale, "losses": []}
    if p.steps == 0 or not targets:
        return delta.detach(), card
    pos = torch.tensor([t for t, _ in targets], device=e0.device)
    tgt = torch.tensor([ids[t] for t, _ in targets], device=e0.device)
    w = torch.tensor([wt for _, wt in targets], device=e0.device)
    opt = torch.optim.Adam([delta], lr=p.lr * scale)

    def loss(_: Any) -> torch.Tensor:
        logits = hf(inputs_embeds=(e0 + delta)[None].to(hf.dtype)).logits[0].float()
        return (F.cross_entropy(logits[pos - 1], tgt, reduction="none") * w).sum() / w.sum()

    def mask_labels(step: int) -> None:
        delta.grad *= movable

    def into_ball(step: int) -> None:
        with torch.no_grad():
            delta.copy_(project(delta, radius, p.norm))

    log = _fit_frozen(hf, opt, p.steps, loss, before_step=[mask_labels], after_step=[into_ball])
    card["losses"] = [round(v, 5) for v in log.losses()]
    return delta.detach(), card


def train_soft_prompt(model: Any, pairs: list[TokenPair], p: PromptTuningParams, seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """Soft prompt [n_tokens, d] trained so that ``prompt + context`` predicts each continuation."""
    hf = hf_of(model)
    emb = hf.get_input_embeddings().weight.detach().float()
    gen = torch.Generator().manual_seed(seed)
    init = torch.randint(0, emb.shape[0], (p.n_tokens,), generator=gen).to(emb.device)
    soft = emb[init].clone().requires_grad_(True)
    scale = float(emb.norm(dim=1).mean())
    opt = torch.optim.Adam([soft], lr=p.lr * scale)

    def loss(_: Any) -> torch.Tensor:
        return -torch.cat(_continuation_logprobs(hf, pairs, soft, None, None, model.eot_token_id)).mean()

    log = _fit_frozen(hf, opt, p.steps, loss)
    return soft.detach(), {"losses": [round(v, 5) for v in log.losses()]}


def _fit_frozen(hf: Any, opt: torch.optim.Optimizer, steps: int, loss: Any, **hooks: Any) -> FitLog:
    """``steps`` optimizer steps on the same (single) input, the LM frozen and in eval mode
    (restored after): :func:`cl_bench.methods.trainer.fit` with a constant learning rate."""
    was_training = hf.training
    hf.eval()
    with frozen(hf), torch.enable_grad():
        log = fit(opt, total=steps, batches=lambda epoch: itertools.repeat(None), loss=loss, **hooks)
    hf.train(was_training)
    return log


def _continuation_logprobs(
    hf: Any, pairs: Sequence[TokenPair], soft: torch.Tensor | None, delta: torch.Tensor | None,
    delta_lens: Sequence[int] | None, pad_id: int,
) -> list[torch.Tensor]:
    """Per pair, the log-probabilities of its continuation tokens, with an optional soft prefix
    (prepended) and an offset added to the first ``delta_lens[i]`` context embeddings."""
    n_soft = 0 if soft is None else soft.shape[0]
    inputs = [(ctx + cont)[:-1] for ctx, cont in pairs]
    width = max(len(x) for x in inputs)
    emb_layer = hf.get_input_embeddings()
    dev = emb_layer.weight.device
    ids = torch.full((len(pairs), width), pad_id, dtype=torch.long, device=dev)
    for i, x in enumerate(inputs):
        ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
    embeds = emb_layer(ids).float()
    if delta is not None and delta_lens is not None:
        add = torch.zeros_like(embeds)
        for i, m in enumerate(delta_lens):
            add[i, :m] = delta[:m]
        embeds = embeds + add
    if soft is not None:
        embeds = torch.cat([soft[None].expand(len(pairs), -1, -1), embeds], dim=1)
    logp = F.log_softmax(hf(inputs_embeds=embeds.to(hf.dtype)).logits.float(), dim=-1)
    out = []
    for i, (ctx, cont) in enumerate(pairs):
        t = torch.arange(len(cont), device=dev) + n_soft + len(ctx) - 1
        out.append(logp[i, t, torch.tensor(cont, device=dev)])
    return out


@torch.no_grad()
def score_pairs(
    model: Any, pairs: Sequence[TokenPair], soft: torch.Tensor | None = None, delta: torch.Tensor | None = None,
    delta_lens: Sequence[int] | None = None, batch_size: int | None = None,
) -> list[float]:
    """Summed continuation log-likelihood of each pair through the embedding path."""
    hf = hf_of(model)
    hf.eval()
    bs = batch_size or getattr(model, "batch_size", 32)
    out: list[float] = []
    for s in range(0, len(pairs), bs):
        lens = None if delta_lens is None else delta_lens[s : s + bs]
        lps = _continuation_logprobs(hf, pairs[s : s + bs], soft, delta, lens, model.eot_token_id)
        out += [float(x.double().sum()) for x in lps]
    return out
