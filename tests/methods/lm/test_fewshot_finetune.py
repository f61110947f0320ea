"""ICL vs few-shot fine-tuning (methods/fewshot_finetune.py, icl_fewshot ``adapt: finetune``):
the fine-tuned scores equal a hand-run SGD on Hugging Face's own LM loss, the weights come back
untouched, the comparison measures equal scipy's KL and a cosine written out, and on the
protocol a vanishing learning rate makes GD the zero-shot model."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy.special import softmax
from scipy.stats import entropy, pearsonr

from cl_bench.errors import ClBenchError
from cl_bench.methods.lm.fewshot_finetune import (
    FinetuneParams,
    compare_outputs,
    finetune_and_score,
    label_log_distribution,
    order_correlation,
)
from cl_bench.protocols.icl_fewshot import ICLFewShotParams, run_icl_fewshot
from tests.protocols.test_icl_fewshot import ctx, small_data, tiny_model


def hf_loss(hf: torch.nn.Module, pair: tuple[list[int], list[int]]) -> torch.Tensor:
    """Hugging Face's causal-LM loss with the context masked out: mean NLL of the continuation."""
    c, t = pair
    ids = torch.tensor([c + t])
    labels = torch.tensor([[-100] * len(c) + t])
    return hf(input_ids=ids, labels=labels).loss


def test_finetuned_scores_equal_hand_run_sgd_and_weights_are_restored() -> None:
    model = tiny_model()
    enc = model.encode_pair
    train = [enc("Review: a fine film\nSentiment:", " Positive"), enc("Review: dull\nSentiment:", " Negative")]
    test = [enc("Review: lovely\nSentiment:", w) for w in (" Negative", " Positive")]
    before = {k: v.clone() for k, v in model.hf.state_dict().items()}
    p = FinetuneParams(epochs=2, lr=0.05)
    got, card = finetune_and_score(model, train, test, p)

    ref = copy.deepcopy(model.hf).eval()
    losses = []
    for pair in train * p.epochs:  # one demonstration per step, in order, plain SGD
        ref.zero_grad()
        loss = hf_loss(ref, pair)
        loss.backward()
        losses.append(float(loss.detach()))
        with torch.no_grad():
            for q in ref.parameters():
                if q.grad is not None:
                    q -= p.lr * q.grad
    with torch.no_grad():
        want = [float(-hf_loss(ref, pair) * len(pair[1])) for pair in test]
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert card["steps"] == 4 and card["first_loss"] == pytest.approx(losses[0], abs=1e-4)
    assert card["last_loss"] == pytest.approx(losses[-1], abs=1e-4)
    assert abs(losses[-1] - losses[1]) > 1e-6  # the steps moved the model
    for k, v in model.hf.state_dict().items():
        assert torch.equal(v, before[k]), k
    with pytest.raises(ClBenchError, match="at least one demonstration"):
        finetune_and_score(model, [], test, p)


def test_comparison_measures_on_a_hand_worked_example() -> None:
    icl = np.array([[-1.0, -2.0, -3.0], [-0.5, -0.7, -4.0]])
    gd = np.array([[-1.5, -1.0, -3.0], [-0.4, -0.9, -3.0]])
    zero = np.array([[-2.0, -2.0, -2.0], [-1.0, -1.0, -1.0]])
    got = compare_outputs(icl, gd, zero)
    assert got["agree"] == 50.0  # query 0: ICL says 0, GD says 1; query 1: both 0
    kl = np.mean([entropy(softmax(a), softmax(b)) for a, b in zip(icl, gd, strict=True)])
    assert got["kl"] == pytest.approx(kl, rel=1e-12)
    cosines = []
    for a, b, z in zip(icl, gd, zero, strict=True):
        da = np.log(softmax(a)) - np.log(softmax(z))
        db = np.log(softmax(b)) - np.log(softmax(z))
        da, db = da - da.mean(), db - db.mean()
        cosines.append(da @ db / np.sqrt((da @ da) * (db @ db)))
    assert got["update_cos"] == pytest.approx(np.mean(cosines), rel=1e-12)
    # a constant shift of every label's score is no change of the distribution
    np.testing.assert_allclose(label_log_distribution(icl + 7.0), label_log_distribution(icl), atol=1e-12)
    assert compare_outputs(icl, icl + 3.0, zero) == pytest.approx({"agree": 100.0, "kl": 0.0, "update_cos": 1.0})


def test_order_correlation_is_pearson_of_the_within_draw_deviations() -> None:
    icl = [[50.0, 60.0, 55.0], [70.0, 65.0, 80.0]]
    gd = [[40.0, 48.0, 41.0], [66.0, 60.0, 61.0]]
    dev = lambda runs: np.concatenate([np.array(r) - np.mean(r) for r in runs])  # noqa: E731
    assert order_correlation(icl, gd) == pytest.approx(pearsonr(dev(icl), dev(gd)).statistic, rel=1e-12)
    assert order_correlation(icl, [[50.0] * 3, [60.0] * 3]) is None  # GD insensitive to order: undefined


def test_protocol_with_a_vanishing_step_makes_gd_the_zero_shot_model() -> None:
    params = ICLFewShotParams(ks=[0, 2], primary_k=2, draws=2, orders=2, n_test=None,
                              adapt=["icl", "finetune"], adapt_ks=[2], finetune={"epochs": 1, "lr": 1e-12})
    res = run_icl_fewshot(tiny_model(), small_data(n_test=10), params, ctx(seed=1))
    m = res.metrics
    assert m["ft_acc_k2"] == m["acc_k0"] and m["ft_spread_k2"] == 0.0
    assert "icl_ft_order_corr_k2" not in m  # GD has no order effect to correlate with
    assert 0.0 <= m["icl_ft_agree_k2"] <= 100.0 and m["icl_ft_kl_k2"] >= 0.0
    cards = res.extras["adapt_cards"]["finetune"]
    assert [(c["draw"], c["order"], c["steps"]) for c in cards] == [(0, 0, 2), (0, 1, 2), (1, 0, 2), (1, 1, 2)]
