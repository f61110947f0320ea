"""CPT and prompt tuning: the ε-ball projection (property test), CPT with 0 steps equals plain ICL,
CPT optimisation stays in the ball and never moves label tokens, label tokens are located
exactly, prompt tuning lowers its loss, and a non-HF model is refused."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from cl_bench.data.icl.fewshot_synthetic import load_fewshot_synthetic
from cl_bench.errors import ClBenchError
from cl_bench.methods.lm import cpt
from cl_bench.protocols import fewshot_prompts as fp
from cl_bench.protocols.base import RunContext
from cl_bench.protocols.icl_fewshot import (
    ICLFewShotParams,
    context_segments,
    pairs_for,
    run_icl_fewshot,
    score_matrix,
)
from tests.protocols.test_icl_fewshot import small_data, tiny_model

PROPERTY_CASES = [
    (seed, m, d, norm, r_max, scale)
    for seed, (m, d, r_max, scale) in enumerate(
        [(1, 1, 1.0, 1.0), (12, 16, 3.0, 10.0), (5, 2, 0.0, 1.0), (7, 8, 0.5, 0.01), (3, 128, 2.0, 0.2)] * 8
    )
    for norm in ("l2", "linf")
]


@pytest.mark.parametrize("seed,m,d,norm,r_max,scale", PROPERTY_CASES)
def test_projection_lands_in_the_ball_keeps_inside_points_and_is_idempotent(
    seed: int, m: int, d: int, norm: str, r_max: float, scale: float,
) -> None:
    g = torch.Generator().manual_seed(seed)
    delta = torch.randn(m, d, generator=g, dtype=torch.float64) * scale
    radius = torch.rand(m, generator=g, dtype=torch.float64) * r_max
    out = cpt.project(delta, radius, norm)
    size = out.norm(dim=1) if norm == "l2" else out.abs().amax(dim=1)
    assert torch.all(size <= radius * (1 + 1e-9) + 1e-12)
    before = delta.norm(dim=1) if norm == "l2" else delta.abs().amax(dim=1)
    inside = before <= radius
    assert torch.equal(out[inside], delta[inside])
    if norm == "l2":  # rows outside are rescaled onto the sphere, direction kept
        outside = ~inside & (radius > 1e-6)
        torch.testing.assert_close(out[outside].norm(dim=1), radius[outside])
        cos = (out[outside] * delta[outside]).sum(1) / (out[outside].norm(dim=1) * delta[outside].norm(dim=1))
        torch.testing.assert_close(cos, torch.ones_like(cos))
    else:  # each coordinate clipped
        torch.testing.assert_close(out, torch.maximum(torch.minimum(delta, radius[:, None]), -radius[:, None]))
    torch.testing.assert_close(cpt.project(out, radius, norm), out)


def _context(model: Any, k: int = 4) -> tuple[Any, list[Any], list[int], list[int], list[list[int]]]:
    data = small_data()
    pool = fp.demo_pool(data, data.test.examples)
    demos = [data.train.examples[i] for i in fp.draw_demos(pool, k, 0, 0)]
    ids, types, labels = cpt.segment_tokens(model, context_segments(data, demos))
    return data, demos, ids, types, labels


def test_segments_rebuild_the_icl_block_and_label_tokens_are_the_label_words() -> None:
    model = tiny_model()
    data, demos, ids, types, labels = _context(model)
    assert "".join(s for s, _ in context_segments(data, demos)) == fp.demo_block(data, demos)
    assert ids == model.tok_encode(fp.demo_block(data, demos))
    assert [model.tok_decode([ids[t] for t in pos]) for pos in labels] == [data.continuation(d.label) for d in demos]
    for pos in labels:
        assert all(types[t] == cpt.LABEL for t in pos)
    assert sum(t == cpt.LABEL for t in types) == sum(len(p) for p in labels)


def test_cpt_with_zero_steps_equals_plain_icl() -> None:
    model = tiny_model()
    data, demos, ids, types, labels = _context(model)
    delta, _ = cpt.refine_context(model, ids, types, labels, cpt.CPTParams(steps=0))
    assert torch.count_nonzero(delta) == 0
    pairs = pairs_for(model, data, fp.demo_block(data, demos), data.test.examples)
    icl = score_matrix(model, pairs, 2).ravel()
    via_embeddings = cpt.score_pairs(model, pairs, delta=delta, delta_lens=[len(ids)] * len(pairs))
    np.testing.assert_allclose(via_embeddings, icl, atol=2e-4)
    params = ICLFewShotParams(ks=[4], primary_k=4, draws=2, orders=2, n_test=None, adapt=["icl", "cpt"],
                              adapt_ks=[4], cpt={"steps": 0})
    res = run_icl_fewshot(model, data, params, RunContext(torch.device("cpu"), 0, lambda *a: None))
    assert res.metrics["cpt_acc_k4"] == res.metrics["acc_k4"]
    assert res.extras["curve"][0]["cpt_runs"] == res.extras["curve"][0]["runs"]


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_cpt_steps_lower_the_context_label_loss_inside_the_ball(norm: str) -> None:
    model = tiny_model()
    _, _, ids, types, labels = _context(model, k=3)
    p = cpt.CPTParams(steps=15, lr=0.05, epsilon=0.5, epsilon_format=0.2, norm=norm)
    weights_before = {k: v.clone() for k, v in model.state_dict().items()}
    delta, card = cpt.refine_context(model, ids, types, labels, p)
    assert card["losses"][-1] < card["losses"][0]
    e0 = model.hf.get_input_embeddings()(torch.tensor(ids)).detach()
    scale = float(e0.norm(dim=1).mean())
    size = delta.norm(dim=1) if norm == "l2" else delta.abs().amax(dim=1)
    kind = torch.tensor(types)
    assert torch.all(size[kind == cpt.INPUT] <= 0.5 * scale * (1 + 1e-5))
    assert torch.all(size[kind == cpt.FORMAT] <= 0.2 * scale * (1 + 1e-5))
    assert torch.count_nonzero(delta[kind == cpt.LABEL]) == 0
    assert torch.count_nonzero(size[kind == cpt.INPUT]) > 0
    for k, v in model.state_dict().items():  # the model itself is untouched, gradients restored
        assert torch.equal(v, weights_before[k])
    assert all(q.requires_grad for q in model.hf.parameters())


def test_prompt_tuning_lowers_its_training_loss() -> None:
    model = tiny_model()
    data = small_data()
    pairs = [model.encode_pair(data.query_text(e), data.continuation(e.label)) for e in data.train.examples[:8]]
    soft, card = cpt.train_soft_prompt(model, pairs, cpt.PromptTuningParams(n_tokens=4, steps=20, lr=0.05), seed=0)
    assert soft.shape == (4, 32) and card["losses"][-1] < card["losses"][0]
    scores = cpt.score_pairs(model, pairs, soft=soft)
    assert len(scores) == 8 and all(s < 0 for s in scores)


def test_adaptations_are_reported_at_adapt_ks_only() -> None:
    params = ICLFewShotParams(ks=[0, 2], primary_k=2, draws=1, orders=2, n_test=6, adapt=["icl", "cpt", "prompt-tuning"],
                              adapt_ks=[2], cpt={"steps": 2}, prompt_tuning={"steps": 2, "n_tokens": 2})
    res = run_icl_fewshot(tiny_model(), small_data(), params, RunContext(torch.device("cpu"), 0, lambda *a: None))
    assert {"cpt_acc_k2", "pt_acc_k2", "cpt_spread_k2"} <= set(res.metrics)
    assert "cpt_acc_k0" not in res.metrics and "pt_acc_k0" not in res.metrics


def test_a_model_without_hf_internals_is_refused() -> None:
    with pytest.raises(ClBenchError):
        cpt.hf_of(object())
    assert load_fewshot_synthetic({"n_train": 5, "n_test": 5}).num_classes == 2


def test_projection_hand_worked() -> None:
    delta = torch.tensor([[3.0, 4.0], [0.3, -0.4], [2.0, -5.0]])
    radius = torch.tensor([2.5, 1.0, 1.5])
    # L2: (3, 4) has norm 5 > 2.5 -> scaled by 1/2; (0.3, -0.4) has norm 0.5 <= 1 -> kept
    torch.testing.assert_close(cpt.project(delta, radius, "l2")[:2], torch.tensor([[1.5, 2.0], [0.3, -0.4]]))
    # L∞: each coordinate clipped to [-r, r]
    torch.testing.assert_close(cpt.project(delta, radius, "linf"),
                               torch.tensor([[2.5, 2.5], [0.3, -0.4], [1.5, -1.5]]))


def test_one_cpt_step_equals_the_explicit_formula() -> None:
    """δ after one step, written out from the paper's objective without the module's batching:
    loss = Σ_j decay^(k-1-j) Σ_{t ∈ label tokens of demo j} -log p(x_t | e0_<t) / Σ weights (one
    weight per label token), its gradient zeroed on label rows, one Adam step from δ = 0 (step =
    lr·scale · g / (|g| + 1e-8), Adam's bias-corrected first step), then each row projected onto its
    L2 ball of radius ε·scale (input), ε_format·scale (format) or 0 (label), scale = mean ‖e0_t‖."""
    model = tiny_model()
    _, _, ids, types, labels = _context(model, k=3)
    p = cpt.CPTParams(steps=1, lr=0.05, epsilon=0.02, epsilon_format=0.01, decay=0.5, norm="l2")
    delta, card = cpt.refine_context(model, ids, types, labels, p)

    hf = model.hf.eval()
    e0 = hf.get_input_embeddings()(torch.tensor(ids)).detach().double()
    scale = float(e0.norm(dim=1).mean())
    x = torch.zeros_like(e0, requires_grad=True)
    hf_double = hf.double()
    try:
        num, den = torch.zeros((), dtype=torch.float64), 0.0
        for j, pos in enumerate(labels):
            w = 0.5 ** (len(labels) - 1 - j)
            for t in pos:
                logits = hf_double(inputs_embeds=(e0 + x)[None, :t]).logits[0, -1]
                num = num - w * torch.log_softmax(logits, -1)[ids[t]]
                den += w
        loss = num / den
        (g,) = torch.autograd.grad(loss, x)
    finally:
        hf.float()
    assert card["losses"][0] == pytest.approx(float(loss), abs=1e-4)
    label_rows = torch.tensor([t == cpt.LABEL for t in types])
    g[label_rows] = 0.0
    step = -(p.lr * scale) * g / (g.abs() + 1e-8)
    radius = torch.tensor([{cpt.INPUT: 0.02, cpt.FORMAT: 0.01, cpt.LABEL: 0.0}[t] for t in types], dtype=torch.float64) * scale
    norms = step.norm(dim=1, keepdim=True)
    want = step * torch.where(norms > radius[:, None], radius[:, None] / norms.clamp_min(1e-30), torch.ones_like(norms))
    assert torch.count_nonzero(want[label_rows]) == 0 and torch.count_nonzero(want) > 0
    torch.testing.assert_close(delta.double(), want, atol=2e-5 * scale, rtol=1e-3)
