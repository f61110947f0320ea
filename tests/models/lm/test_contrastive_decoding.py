"""Contrastive scoring (contrastive decoding, DoLa, LOL) against explicit per-token computations
on tiny random models; the plausibility constraint on a hand-worked example; members obtained
from method ids; bad configurations."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from cl_bench import components
from cl_bench.cache import Cache
from cl_bench.errors import ClBenchError
from cl_bench.models.lm.contrastive_scoring import (
    LOL,
    ContrastiveDecoding,
    DoLa,
    plausible,
)
from cl_bench.obtain import MemberSource
from cl_bench.registry import PROJECT_ROOT, Registry
from tests.conftest import write_tree
from tests.models.interfaces.test_causal_lm import TOKENIZER, tiny_model

REQUESTS = [
    ("Q: What is the capital of Spain?\nA:", " Madrid."),
    ("Q: What is the capital of Spain?\nA:", " I have no comment."),
    ("Q: Are bats blind?\nA:", " No, bats can see."),
]


def readout(model, ids: list[int]) -> list[np.ndarray]:
    """Log-probs [T, V] (float64) at every layer 0..n_layer: ln_f + lm_head on each hidden state."""
    with torch.no_grad():
        out = model.hf(input_ids=torch.tensor([ids]), output_hidden_states=True)
        layers = []
        for j, h in enumerate(out.hidden_states):
            logits = out.logits[0] if j == model.n_layer else model.hf.lm_head(model.hf.transformer.ln_f(h))[0]
            layers.append(torch.log_softmax(logits.double(), -1).numpy())
    return layers


def explicit_totals(scorer, rule) -> list[float]:
    """Sum over continuation tokens of rule(expert layers, amateur layers, position)[token]."""
    totals = []
    for context, cont_text in REQUESTS:
        ctx, cont = scorer.encode_pair(context, cont_text)
        ids = (ctx + cont)[:-1]
        e = readout(scorer.expert, ids)
        a = readout(scorer.amateur, ids) if scorer.amateur is not None else None
        total = 0.0
        for i, tok in enumerate(cont):
            pos = len(ctx) - 1 + i
            total += rule(e, a, pos)[tok]
        totals.append(total)
    return totals


def apc(scores: np.ndarray, final: np.ndarray, alpha: float, value: float) -> np.ndarray:
    out = scores.copy()
    p = np.exp(final)  # in probability space, unlike the implementation
    out[p < alpha * p.max()] = value
    return out


def test_plausibility_constraint_hand_worked() -> None:
    logp = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    assert plausible(logp, 0.2).tolist() == [True, True, True, False]  # keep p >= 0.1
    assert plausible(logp, 0.5).tolist() == [True, True, False, False]  # keep p >= 0.25
    assert plausible(logp, 0.0).all()


def test_contrastive_decoding_equals_explicit_formula() -> None:
    expert, amateur = tiny_model(seed=1), tiny_model(seed=2, n_layer=1)
    cd = ContrastiveDecoding(expert, amateur, amateur_weight=0.5, plausibility=0.9, mask_value=-1000.0)
    got = [ll for ll, _ in cd.loglikelihood(REQUESTS)]
    ref = explicit_totals(cd, lambda e, a, t: apc(e[-1][t] - 0.5 * a[-1][t], e[-1][t], 0.9, -1000.0))
    assert got == pytest.approx(ref, abs=1e-3)
    assert any(x < -500 for x in got)  # a masked token shows up as -1000


def test_dola_picks_the_most_divergent_layer_per_token() -> None:
    model = tiny_model(seed=3, n_layer=3)
    dola = DoLa(model, candidate_layers=[0, 1, 2], post_softmax=False, plausibility=0.1, mask_value=-1000.0)

    def rule(e, a, t):
        final = e[-1][t]
        divs = []
        for j in (0, 1, 2):
            m = 0.5 * (np.exp(final) + np.exp(e[j][t]))
            kl_f = sum(m[v] * (math.log(m[v]) - final[v]) for v in range(len(m))) / len(m)
            kl_j = sum(m[v] * (math.log(m[v]) - e[j][t][v]) for v in range(len(m))) / len(m)
            divs.append(0.5 * (kl_f + kl_j))
        early = e[int(np.argmax(divs))][t]
        return apc(final - early, final, 0.1, -1000.0)

    got = [ll for ll, _ in dola.loglikelihood(REQUESTS[:2])]
    saved = REQUESTS[:]
    REQUESTS[:] = saved[:2]
    try:
        ref = explicit_totals(dola, rule)
    finally:
        REQUESTS[:] = saved
    assert got == pytest.approx(ref, abs=1e-3)


def test_dola_post_softmax_and_single_layer_is_static_contrast() -> None:
    model = tiny_model(seed=4, n_layer=2)
    dola = DoLa(model, candidate_layers=[1], post_softmax=True, plausibility=0.0, mask_value=-1000.0)

    def rule(e, a, t):
        s = e[-1][t] - e[1][t]
        return s - np.log(np.exp(s - s.max()).sum()) - s.max()

    assert [ll for ll, _ in dola.loglikelihood(REQUESTS)] == pytest.approx(explicit_totals(dola, rule), abs=1e-3)
    with pytest.raises(ClBenchError, match="candidate_layers"):
        DoLa(model, candidate_layers=[2], post_softmax=False, plausibility=0.1, mask_value=-1000.0)


def test_lol_fuses_final_and_lower_layer_contrasts() -> None:
    expert, amateur = tiny_model(seed=5, n_layer=3), tiny_model(seed=6, n_layer=2)
    lol = LOL(expert, amateur, amateur_weight=0.7, expert_lower_layer=1, amateur_lower_layer=0,
              lower_weight=0.4, plausibility=0.05, mask_value=-1000.0)

    def rule(e, a, t):
        s = (e[3][t] - 0.7 * a[2][t]) + 0.4 * (e[1][t] - 0.7 * a[0][t])
        return apc(s, e[3][t], 0.05, -1000.0)

    assert [ll for ll, _ in lol.loglikelihood(REQUESTS)] == pytest.approx(explicit_totals(lol, rule), abs=1e-3)
    with pytest.raises(ClBenchError, match="amateur_lower_layer"):
        LOL(expert, amateur, 1.0, 1, 2, 1.0, 0.1, -1000.0)


def test_contrastive_generation_is_greedy_on_the_contrastive_score() -> None:
    expert, amateur = tiny_model(seed=1), tiny_model(seed=2, n_layer=1)
    cd = ContrastiveDecoding(expert, amateur, amateur_weight=1.0, plausibility=0.1, mask_value=-1000.0)
    context = "Q: What is 3 plus 4?\nA:"
    text, = cd.generate_until([context], until=["\n"], max_new_tokens=4)
    ids = cd.tok_encode(context)
    new: list[int] = []
    for _ in range(4):
        e, a = readout(expert, ids + new), readout(amateur, ids + new)
        nxt = int(np.argmax(apc(e[-1][-1] - a[-1][-1], e[-1][-1], 0.1, -1000.0)))
        if nxt == cd.eot_token_id:
            break
        new.append(nxt)
        if "\n" in cd.tok_decode(new):
            break
    assert text == cd.tok_decode(new).split("\n")[0]


MEMBERS = {
    "baselines/tlm-expert.yaml": f"""
        id: tlm-expert
        description: tiny expert (test fixture)
        provides: [causal_lm]
        arch: {{name: tiny-gpt2, params: {{n_layer: 2, n_embd: 32, n_head: 2, n_positions: 128, tokenizer: {TOKENIZER}}}}}
        train:
          objective: lm-pretrain
          params: {{block_size: 32, max_steps: 2}}
          data: {{name: lm-corpus, params: {{sources: [qa], n_qa: 300}}}}
          epochs: 1
          batch_size: 4
          lr: 0.001
    """,
}


def test_members_from_method_ids_and_inline_archs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_tree(tmp_path / "reg", MEMBERS)
    monkeypatch.setenv("CLBENCH_CACHE", str(tmp_path / "env-cache"))  # not where members go: the run's cache is
    members = MemberSource(Cache(tmp_path / "cache"), registry=Registry([tmp_path / "reg", PROJECT_ROOT]))
    inline = {"name": "tiny-gpt2", "params": {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 128,
                                               "tokenizer": TOKENIZER}}

    def build_contrastive_decoding(params: dict) -> Any:
        return components.get("arch", "contrastive-decoding")(params, members=members)

    cd = build_contrastive_decoding({"expert": {"method": "tlm-expert"}, "amateur": {"arch": inline}})
    assert not (tmp_path / "env-cache").exists()
    assert list((tmp_path / "cache" / "checkpoints").iterdir())  # the expert was trained and cached
    again = build_contrastive_decoding({"expert": {"method": "tlm-expert"}, "amateur": {"arch": inline}})
    assert torch.equal(cd.expert.hf.lm_head.weight, again.expert.hf.lm_head.weight)
    assert len(cd.loglikelihood(REQUESTS)) == 3
    with pytest.raises(ClBenchError, match="exactly one of 'method' or 'arch'"):
        build_contrastive_decoding({"expert": {"method": "tlm-expert", "arch": inline}, "amateur": {"arch": inline}})
    other = {"name": "tiny-gpt2", "params": {**inline["params"], "tokenizer": {"vocab_size": 320, "corpus": TOKENIZER["corpus"]}}}
    with pytest.raises(ClBenchError, match="share a tokenizer"):
        build_contrastive_decoding({"expert": {"method": "tlm-expert"}, "amateur": {"arch": other}})
    with pytest.raises(ClBenchError, match="unknown method"):
        build_contrastive_decoding({"expert": {"method": "nope"}, "amateur": {"arch": inline}})


def test_obtain_hands_members_the_runs_cache_not_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cl_bench.obtain import obtain_model
    from cl_bench.specs import MethodSpec

    monkeypatch.setenv("CLBENCH_CACHE", str(tmp_path / "env-cache"))
    inline = {"name": "tiny-gpt2", "params": {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 128,
                                               "tokenizer": TOKENIZER}}
    trained = {"arch": inline, "train": {"objective": "lm-pretrain", "params": {"block_size": 32, "max_steps": 1},
                                         "data": {"name": "lm-corpus", "params": {"sources": ["qa"], "n_qa": 200}},
                                         "epochs": 1, "batch_size": 2, "lr": 0.001}}
    method = MethodSpec(id="cd", description="cd", provides=["causal_lm"],
                        arch={"name": "contrastive-decoding", "params": {"expert": trained, "amateur": {"arch": inline}}})
    got = obtain_model(method, None, seed=0, device=torch.device("cpu"), cache=Cache(tmp_path / "run-cache"))
    assert isinstance(got.model, ContrastiveDecoding)
    assert list((tmp_path / "run-cache" / "checkpoints").iterdir()) and not (tmp_path / "env-cache").exists()


def test_members_follow_the_run_seed_unless_fixed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seeds of a contrast vary its trained members as they vary a plain model; ``seed:`` pins one."""
    from cl_bench.cache import Cache
    from cl_bench.obtain import MemberSource, build_encoder
    from cl_bench.specs import MethodSpec

    write_tree(tmp_path / "reg", MEMBERS)
    monkeypatch.setenv("CLBENCH_REGISTRY_PATH", str(tmp_path / "reg"))
    monkeypatch.setenv("CLBENCH_CACHE", str(tmp_path / "cache"))
    inline = {"name": "tiny-gpt2", "params": {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 128,
                                               "tokenizer": TOKENIZER}}
    params = {"expert": {"method": "tlm-expert"}, "amateur": {"arch": inline}}
    spec = MethodSpec(id="cd", description="cd", provides=["causal_lm"],
                      arch={"name": "contrastive-decoding", "params": params})
    s0, s1 = build_encoder(spec, None, MemberSource(Cache(), seed=0)), build_encoder(spec, None, MemberSource(Cache(), seed=1))
    assert not torch.equal(s0.expert.hf.lm_head.weight, s1.expert.hf.lm_head.weight)
    assert torch.equal(s0.amateur.hf.lm_head.weight, build_encoder(spec, None, MemberSource(Cache(), seed=0)).amateur.hf.lm_head.weight)
    pinned = spec.model_copy(update={"arch": spec.arch.model_copy(update={"params": {
        "expert": {"method": "tlm-expert", "seed": 0}, "amateur": {"arch": inline}}})})
    assert torch.equal(build_encoder(pinned, None, MemberSource(Cache(), seed=1)).expert.hf.lm_head.weight, s0.expert.hf.lm_head.weight)


def test_scoring_rules_over_the_same_weights_are_different_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CD and LOL over one expert/amateur pair, DoLa and the plain expert, share every weight: their
    fingerprints (the key of the MC log-likelihood memo) must still differ, or a sweep would hand
    one rule's scores to the next."""
    from cl_bench.cache import Cache
    from cl_bench.obtain import obtain_model
    from cl_bench.protocols.multiple_choice import _LL_MEMO, memoised_loglikelihood
    from cl_bench.registry import default_registry
    from cl_bench.specs import MethodSpec

    write_tree(tmp_path / "reg", MEMBERS)
    monkeypatch.setenv("CLBENCH_REGISTRY_PATH", str(tmp_path / "reg"))
    monkeypatch.setenv("CLBENCH_CACHE", str(tmp_path / "cache"))
    inline = {"name": "tiny-gpt2", "params": {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 128,
                                               "tokenizer": TOKENIZER}}
    pair = {"expert": {"method": "tlm-expert"}, "amateur": {"arch": inline}}
    rules = {
        "cd": {"name": "contrastive-decoding", "params": pair},
        "lol": {"name": "lol", "params": {**pair, "expert_lower_layer": 0, "amateur_lower_layer": 0}},
        "dola": {"name": "dola", "params": {"expert": {"method": "tlm-expert"}, "candidate_layers": [0]}},
    }
    got = {k: obtain_model(MethodSpec(id=k, description=k, provides=["causal_lm"], arch=arch), None, seed=0,
                           device=torch.device("cpu"), cache=Cache())
           for k, arch in rules.items()}
    got["plain"] = obtain_model(default_registry().method("tlm-expert"), None, seed=0, device=torch.device("cpu"),
                                cache=Cache())
    assert len({g.fingerprint for g in got.values()}) == 4
    _LL_MEMO.clear()
    cd = memoised_loglikelihood(got["cd"].model, REQUESTS, got["cd"].fingerprint)
    lol = memoised_loglikelihood(got["lol"].model, REQUESTS, got["lol"].fingerprint)
    assert lol == got["lol"].model.loglikelihood(REQUESTS) and lol != cd
