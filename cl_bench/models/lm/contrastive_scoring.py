"""Contrastive scoring over causal LMs: contrastive decoding, DoLa layer contrast, LOL fusion.

Each scorer is itself a ``CausalLM``: its per-token score over the vocabulary replaces the
log-probability, so ``loglikelihood`` (multiple-choice scoring: the summed score of a choice's
tokens) and ``generate_until`` (greedy generation on the score) work unchanged.

With ``log p`` the log-softmax of a model read out at a layer (``N`` = final layer), and the
adaptive plausibility constraint ``V_head = {v : p_E^N(v) >= plausibility * max_w p_E^N(w)}``
(tokens outside it get ``mask_value``; ``plausibility = 0`` turns it off):

- ``contrastive-decoding`` (Li et al., arXiv 2210.15097): ``s(v) = log p_E^N(v) - w * log p_A^N(v)``
  with ``w = amateur_weight`` (Li et al.'s rule is ``w = 1``). This is not O'Brien & Lewis's
  weighting (arXiv 2309.09117), ``(1 + β) · logit_E - β · logit_A`` on raw logits: with
  ``w = β / (1 + β)`` ours is theirs divided by ``1 + β`` plus a per-position constant (the two
  log-normalisers), so the two pick the same greedy token, but summed multiple-choice scores
  differ; theirs is not implemented.
- ``dola`` (Chuang et al., arXiv 2309.03883): ``s(v) = log q_N(v) - log q_M(v)`` within one model,
  where ``q_j`` is layer ``j`` read out through the final norm and LM head and, per token, ``M`` is
  the candidate early layer whose distribution differs most from ``q_N`` — the divergence of the
  reference code (voidism/DoLa ``lm_score``): mean over the vocabulary of
  ``0.5 * [KL(m || q_N) + KL(m || q_j)]``, ``m = (q_N + q_j) / 2``; ``post_softmax`` re-normalises
  ``s`` with a log-softmax before the constraint.
- ``lol`` (Chen et al., arXiv 2408.08769, "LOwer Layer matters"): contrastive decoding at the
  final layer plus, weighted by ``lower_weight``, contrastive decoding between the two models'
  lower layers: ``s = CD(E^N, A^N) + lower_weight * CD(E^l, A^m)``. Only the fusion rule is the
  paper's: its amateur is the expert with induced hallucinations (ICD) and its "truthfulness
  refocused" module is not part of this scorer; method ``lol-fusion-cd`` says so.

Members (expert, amateur) are named in the method YAML as a method id (obtained through
``cl_bench.obtain``: trained once and cached, like any method) or an inline arch. The builders
get a :class:`cl_bench.obtain.MemberSource` (the run's cache, data root and registry) to obtain them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from cl_bench import components
from cl_bench.errors import ClBenchError
from cl_bench.models.interfaces.causal_lm import CausalLM, TokenPair
from cl_bench.specs import ArchRef, MethodSpec, Strict, TrainRecipe, validate_params

if TYPE_CHECKING:
    from cl_bench.obtain import MemberSource


# --- members -----------------------------------------------------------------------------------
class MemberRef(Strict):
    """One model of a contrast: ``method`` (an id from baselines/) or an inline ``arch`` with an
    optional ``train`` recipe (trained once and cached by recipe hash, like any method)."""

    method: str | None = None
    arch: ArchRef | None = None
    train: TrainRecipe | None = None
    checkpoint: str | None = None
    seed: int | None = None  # the seed the member is trained with (None: the run's seed)

    @model_validator(mode="after")
    def _one_source(self) -> MemberRef:
        if (self.method is None) == (self.arch is None):
            raise ValueError("give exactly one of 'method' or 'arch'")
        if self.method is not None and self.train is not None:
            raise ValueError("'train' goes with an inline 'arch'; a method brings its own recipe")
        return self


class _NoTaskData:
    """Stands in for task data when a member is obtained: it has no train split."""

    name = "none"
    fingerprint = "none"
    @property
    def arch_inputs(self) -> dict[str, Any]:
        return {}

    @property
    def train(self) -> Any:
        raise ClBenchError("a contrastive member's train recipe must name its own train.data")


def member_spec(ref: MemberRef, role: str, members: MemberSource) -> MethodSpec:
    if ref.method is not None:
        spec = members.method(ref.method)
        if "causal_lm" not in spec.provides:
            raise ClBenchError(f"{role} method '{ref.method}' does not provide causal_lm")
        return spec
    assert ref.arch is not None
    return MethodSpec(id=f"inline-{role}", description=f"inline {role}", provides=["causal_lm"], arch=ref.arch, train=ref.train)


def resolve_member(ref: MemberRef, role: str, members: MemberSource) -> CausalLM:
    """Build and obtain (load a checkpoint / train-and-cache / as built) one member, on CPU,
    through the run's own cache, data root and registry (``members``), trained with ``ref.seed`` or
    else the run's seed (so seeds of a contrast vary its members as they vary a plain model)."""
    got = members.obtain(member_spec(ref, role, members), _NoTaskData(),
                         seed=members.seed if ref.seed is None else ref.seed,
                         checkpoint=Path(ref.checkpoint) if ref.checkpoint else None)
    if not hasattr(got.model, "layer_logprobs"):
        raise ClBenchError(f"{role}: {type(got.model).__name__} does not expose per-layer log-probabilities")
    return got.model.eval()


# --- the scoring rules -------------------------------------------------------------------------
def plausible(expert_final: torch.Tensor, plausibility: float) -> torch.Tensor:
    """Mask [..., V] of tokens with p >= plausibility * max p (all True when plausibility is 0)."""
    if plausibility <= 0:
        return torch.ones_like(expert_final, dtype=torch.bool)
    top = expert_final.max(dim=-1, keepdim=True).values
    return expert_final >= top + torch.log(torch.tensor(plausibility))


def contrast(expert: torch.Tensor, amateur: torch.Tensor, weight: float) -> torch.Tensor:
    return expert - weight * amateur


def dola_divergence(final: torch.Tensor, early: torch.Tensor) -> torch.Tensor:
    """Reference-code DoLa divergence per position: mean_v 0.5*[KL(m||q_N) + KL(m||q_j)] ([..., V] -> [...])."""
    m = 0.5 * (final.exp() + early.exp())
    log_m = torch.log(m.clamp_min(1e-45))
    kl_final = (m * (log_m - final)).mean(-1)
    kl_early = (m * (log_m - early)).mean(-1)
    return 0.5 * (kl_final + kl_early)


class ContrastiveScorer(CausalLM):
    """Base: holds the members, delegates tokenization to the expert, applies ``combine``."""

    fingerprint_includes_arch = True  # its scores depend on the rule's params, not only the members' weights

    def __init__(self, expert: CausalLM, amateur: CausalLM | None, plausibility: float, mask_value: float) -> None:
        super().__init__()
        self.expert = expert
        self.amateur = amateur
        self.plausibility = plausibility
        self.mask_value = mask_value
        self.tokenizer = expert.tokenizer
        self.eot_token_id = expert.eot_token_id
        self.max_length = expert.max_length
        if amateur is not None:
            if amateur.tokenizer.get_vocab() != expert.tokenizer.get_vocab():
                raise ClBenchError("expert and amateur must share a tokenizer (their vocabularies differ)")
            self.max_length = min(expert.max_length, amateur.max_length)

    # which layers each member must read out
    expert_layers: list[int]
    amateur_layers: list[int]

    def combine(self, e: dict[int, torch.Tensor], a: dict[int, torch.Tensor] | None) -> torch.Tensor:
        raise NotImplementedError

    def _finish(self, scores: torch.Tensor, expert_final: torch.Tensor) -> torch.Tensor:
        keep = plausible(expert_final, self.plausibility)
        return torch.where(keep, scores, torch.full_like(scores, self.mask_value))

    def token_scores(self, pairs: list[TokenPair], shared_prefix: list[int]) -> list[torch.Tensor]:
        e = self.expert.layer_logprobs(pairs, self.expert_layers, shared_prefix)
        a = self.amateur.layer_logprobs(pairs, self.amateur_layers, shared_prefix) if self.amateur else None
        return [self.combine(e[i], a[i] if a else None) for i in range(len(pairs))]

    def next_token_scores(self, sequences: list[list[int]]) -> torch.Tensor:
        e = self.expert.next_layer_logprobs(sequences, self.expert_layers)
        a = self.amateur.next_layer_logprobs(sequences, self.amateur_layers) if self.amateur else None
        return self.combine(e, a)

    def loglikelihood_tokens(self, pairs: list[TokenPair]) -> list[tuple[float, bool]]:
        members = [m for m in (self.expert, self.amateur) if m is not None]
        for m in members:
            m._prefix_memo = None
        try:
            return super().loglikelihood_tokens(pairs)
        finally:
            for m in members:
                m._prefix_memo = None


class ContrastiveDecoding(ContrastiveScorer):
    def __init__(self, expert: CausalLM, amateur: CausalLM, amateur_weight: float, plausibility: float, mask_value: float) -> None:
        super().__init__(expert, amateur, plausibility, mask_value)
        self.amateur_weight = amateur_weight
        self.expert_layers = [expert.n_layer]
        self.amateur_layers = [amateur.n_layer]

    def combine(self, e: dict[int, torch.Tensor], a: dict[int, torch.Tensor] | None) -> torch.Tensor:
        assert a is not None
        ef = e[self.expert.n_layer]
        return self._finish(contrast(ef, a[self.amateur.n_layer], self.amateur_weight), ef)


class DoLa(ContrastiveScorer):
    def __init__(self, expert: CausalLM, candidate_layers: list[int], post_softmax: bool, plausibility: float, mask_value: float) -> None:
        super().__init__(expert, None, plausibility, mask_value)
        if not candidate_layers or any(not 0 <= j < expert.n_layer for j in candidate_layers):
            raise ClBenchError(f"dola: candidate_layers must be early layers in 0..{expert.n_layer - 1}")
        self.candidate_layers = list(candidate_layers)
        self.post_softmax = post_softmax
        self.expert_layers = [*self.candidate_layers, expert.n_layer]
        self.amateur_layers = []

    def premature(self, e: dict[int, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per position, the index into candidate_layers of the most divergent layer, and its log-probs."""
        final = e[self.expert.n_layer]
        stacked = torch.stack([e[j] for j in self.candidate_layers])  # [J, ..., V]
        pick = dola_divergence(final.unsqueeze(0), stacked).argmax(dim=0)  # [...]
        chosen = stacked.gather(0, pick[None, ..., None].expand(1, *final.shape))[0]
        return pick, chosen

    def combine(self, e: dict[int, torch.Tensor], a: dict[int, torch.Tensor] | None) -> torch.Tensor:
        final = e[self.expert.n_layer]
        _, early = self.premature(e)
        s = final - early
        if self.post_softmax:
            s = F.log_softmax(s, dim=-1)
        return self._finish(s, final)


class LOL(ContrastiveScorer):
    def __init__(
        self, expert: CausalLM, amateur: CausalLM, amateur_weight: float, expert_lower_layer: int,
        amateur_lower_layer: int, lower_weight: float, plausibility: float, mask_value: float,
    ) -> None:
        super().__init__(expert, amateur, plausibility, mask_value)
        for who, m, layer in (("expert", expert, expert_lower_layer), ("amateur", amateur, amateur_lower_layer)):
            if not 0 <= layer < m.n_layer:
                raise ClBenchError(f"lol: {who}_lower_layer must be in 0..{m.n_layer - 1}, got {layer}")
        self.amateur_weight, self.lower_weight = amateur_weight, lower_weight
        self.expert_layers = [expert_lower_layer, expert.n_layer]
        self.amateur_layers = [amateur_lower_layer, amateur.n_layer]

    def combine(self, e: dict[int, torch.Tensor], a: dict[int, torch.Tensor] | None) -> torch.Tensor:
        assert a is not None
        (el, en), (al, an) = self.expert_layers, self.amateur_layers
        final = contrast(e[en], a[an], self.amateur_weight)
        lower = contrast(e[el], a[al], self.amateur_weight)
        return self._finish(final + self.lower_weight * lower, e[en])


# --- arch components ---------------------------------------------------------------------------
class _Common(Strict):
    expert: MemberRef
    plausibility: float = Field(default=0.1, ge=0, lt=1)  # Li et al.'s alpha; DoLa's relative_top
    mask_value: float = -1000.0  # score of tokens outside V_head (DoLa's relative_top_value)


class ContrastiveDecodingParams(_Common):
    amateur: MemberRef
    amateur_weight: float = Field(default=1.0, ge=0)


class DoLaParams(_Common):
    candidate_layers: list[int] = Field(min_length=1)
    post_softmax: bool = False


class LOLParams(ContrastiveDecodingParams):
    expert_lower_layer: int
    amateur_lower_layer: int
    lower_weight: float = Field(default=1.0, ge=0)


@components.register("arch", "contrastive-decoding")
def build_contrastive_decoding(params: dict[str, Any], *, members: MemberSource, **_: Any) -> ContrastiveDecoding:
    p = validate_params(ContrastiveDecodingParams, params, "arch contrastive-decoding params")
    return ContrastiveDecoding(
        resolve_member(p.expert, "expert", members), resolve_member(p.amateur, "amateur", members),
        p.amateur_weight, p.plausibility, p.mask_value,
    )


@components.register("arch", "dola")
def build_dola(params: dict[str, Any], *, members: MemberSource, **_: Any) -> DoLa:
    p = validate_params(DoLaParams, params, "arch dola params")
    return DoLa(resolve_member(p.expert, "expert", members), p.candidate_layers, p.post_softmax, p.plausibility, p.mask_value)


@components.register("arch", "lol")
def build_lol(params: dict[str, Any], *, members: MemberSource, **_: Any) -> LOL:
    p = validate_params(LOLParams, params, "arch lol params")
    return LOL(
        resolve_member(p.expert, "expert", members), resolve_member(p.amateur, "amateur", members), p.amateur_weight,
        p.expert_lower_layer, p.amateur_lower_layer, p.lower_weight, p.plausibility, p.mask_value,
    )
