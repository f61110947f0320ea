"""Static n-gram heads (Akyürek et al. 2024; seq_icl's Ngram): the match mask and the induction
average against an explicit loop over positions, a hand-worked bigram example, causality of the
n-gram variant's logits, and the variant's spec."""

from __future__ import annotations

import pytest
import torch

from cl_bench import components
from cl_bench.errors import ClBenchError
from cl_bench.models.lm.ngram_heads import induction_average, ngram_match_mask
from cl_bench.registry import Registry


def loop_average(ids: list[int], hidden: torch.Tensor, n: int) -> torch.Tensor:
    """Position i: mean of h[j + 1] over j with j + 1 < i and ids[j-k] == ids[i-k] for k < n (all >= 0)."""
    t = len(ids)
    out = torch.zeros_like(hidden)
    for i in range(t):
        picks = [j + 1 for j in range(t - 1)
                 if j + 1 < i and all(j - k >= 0 and ids[j - k] == ids[i - k] for k in range(n))]
        if picks:
            out[i] = hidden[picks].mean(0)
    return out


@pytest.mark.parametrize("n", [1, 2, 3])
def test_induction_average_equals_the_loop(n: int) -> None:
    g = torch.Generator().manual_seed(n)
    ids = torch.randint(0, 3, (4, 17), generator=g)
    hidden = torch.randn(4, 17, 5, generator=g, dtype=torch.float64)
    got = induction_average(ids, hidden, n)
    for b in range(4):
        torch.testing.assert_close(got[b], loop_average(ids[b].tolist(), hidden[b], n))


def test_bigram_hand_worked() -> None:
    # a b c a b ?  -> at the last position (i = 4, token b, bigram "a b") the bigram "a b" occurred
    # at j = 1, followed by position 2 (c): the head copies h[2]. Unigram "b" also only at j = 1.
    ids = torch.tensor([[0, 1, 2, 0, 1]])
    mask = ngram_match_mask(ids, 2)[0]
    assert mask[4].nonzero().flatten().tolist() == [2]
    # i = 3 (token a, bigram "c a") has no earlier "c a"; with n = 1, "a" occurred at j = 0 -> follows at 1
    assert ngram_match_mask(ids, 1)[0, 3].nonzero().flatten().tolist() == [1]
    assert ngram_match_mask(ids, 2)[0, 3].sum() == 0


def test_ngram_variant_is_causal_and_built_from_its_spec() -> None:
    method = Registry().method("icl-transformer-ngram")
    assert method.arch.params["ngram_heads"] == [1, 2, 3]
    torch.manual_seed(0)
    model = components.get("arch", "icl-gpt2")(
        method.arch.params, input_kind="tokens", max_positions=32, vocab_size=6, pad_id=5)
    assert len(model.ngram_blocks) == 3
    ids = torch.randint(0, 5, (2, 20))
    changed = ids.clone()
    changed[:, 12:] = (changed[:, 12:] + 1) % 5
    a, b = model.token_logits(ids), model.token_logits(changed)
    torch.testing.assert_close(a[:, :12], b[:, :12])  # nothing after t changes the logits at t
    assert not torch.allclose(a[:, 12:], b[:, 12:])
    with pytest.raises(ClBenchError, match="ngram_heads"):
        components.get("arch", "icl-gpt2")({"ngram_heads": [2]}, input_kind="vectors", max_positions=8, n_dims=3)
