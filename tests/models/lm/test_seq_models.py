"""The ICL sequence models: causality, the recurrence, the read-in layout, training through the engine."""

from __future__ import annotations

import warnings

import pytest
import torch

from cl_bench import components
from cl_bench.errors import ClBenchError
from cl_bench.models.lm.seq_models import ICLSequenceModel, causal_decay_conv, linear_recurrence_reference
from tests.conftest import write_tree

ARCHS = ["icl-gpt2", "icl-lstm", "icl-linear-rnn"]
SMALL = {"n_layer": 1, "n_embd": 16, "n_head": 2}
TOKENS = {"input_kind": "tokens", "vocab_size": 20, "pad_id": 19, "max_positions": 40}
VECTORS = {"input_kind": "vectors", "n_dims": 3, "max_positions": 12}

warnings.filterwarnings("ignore", message=".*token_id.*")


def build(arch: str, inputs: dict) -> ICLSequenceModel:
    torch.manual_seed(0)
    return components.get("arch", arch)(SMALL, **inputs).eval()


@pytest.mark.parametrize("arch", ARCHS)
def test_token_models_are_causal(arch):
    m = build(arch, TOKENS)
    ids = torch.randint(0, 18, (2, 30))
    changed = ids.clone()
    changed[:, 20:] = (changed[:, 20:] + 1) % 18
    with torch.no_grad():
        a, b = m.token_logits(ids), m.token_logits(changed)
    assert a.shape == (2, 30, 20)
    torch.testing.assert_close(a[:, :20], b[:, :20], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a[:, 20:], b[:, 20:])


@pytest.mark.parametrize("arch", ARCHS)
def test_regression_models_predict_y_i_without_seeing_it(arch):
    m = build(arch, VECTORS)
    xs, ys = torch.randn(2, 6, 3), torch.randn(2, 6)
    ys2 = ys.clone()
    ys2[:, 3] += 5.0
    with torch.no_grad():
        a, b = m.regress(xs, ys), m.regress(xs, ys2)
    assert a.shape == (2, 6)
    torch.testing.assert_close(a[:, :4], b[:, :4], atol=1e-5, rtol=1e-5)  # ŷ_3 does not see y_3
    assert not torch.allclose(a[:, 4:], b[:, 4:])


def test_interleave_is_garg_layout():
    xs = torch.arange(12.0).view(1, 2, 6)[:, :, :3].reshape(1, 2, 3)
    ys = torch.tensor([[7.0, 8.0]])
    z = ICLSequenceModel.interleave(xs, ys)
    assert z.tolist() == [[xs[0, 0].tolist(), [7.0, 0, 0], xs[0, 1].tolist(), [8.0, 0, 0]]]


def test_fft_recurrence_matches_the_step_by_step_one():
    torch.manual_seed(0)
    v = torch.randn(3, 64, 5, dtype=torch.float64)
    decay = torch.tensor([0.0001, 0.3, 0.9, 0.99, 0.9999], dtype=torch.float64)
    torch.testing.assert_close(causal_decay_conv(v, decay), linear_recurrence_reference(v, decay))


def test_builder_errors_and_guards():
    with pytest.raises(ClBenchError, match="ICL dataset"):
        components.get("arch", "icl-lstm")({}, in_channels=1, image_size=(8, 8))
    with pytest.raises(ClBenchError, match="divisible"):
        components.get("arch", "icl-gpt2")({"n_embd": 10, "n_head": 4}, **TOKENS)
    with pytest.raises(ClBenchError, match="n_layer"):
        components.get("arch", "icl-gpt2")({"n_layer": 0}, **TOKENS)
    m = build("icl-lstm", TOKENS)
    with pytest.raises(ClBenchError, match="regression prompts|token sequences"):
        m.regress(torch.zeros(1, 2, 3), torch.zeros(1, 2))
    with pytest.raises(ClBenchError, match="does not score text"):
        m.loglikelihood([("a", "b")])


FILES = {
    "tasks/tiny-icll.yaml": """
        id: tiny-icll
        version: 1
        description: tiny ICLL (test fixture)
        dataset: {name: icll-dfa, params: {n_train: 40, n_test: 6, max_length: 4, min_strings: 3, max_strings: 5}}
        protocol: {name: icll, params: {ngram_orders: [2]}}
        primary_metric: accuracy
    """,
    "tasks/tiny-linreg.yaml": """
        id: tiny-linreg
        version: 1
        description: tiny in-context regression (test fixture)
        dataset: {name: icl-linreg, params: {n_dims: 2, n_points: 5, n_test: 32}}
        protocol: {name: icl_regression, params: {n_bootstrap: 20, gd_steps: [1], calibration_prompts: 32, order_prompts: 8, order_permutations: 2}}
        primary_metric: mse_avg
    """,
    "baselines/tiny-icl-lstm.yaml": """
        id: tiny-icl-lstm
        description: a few steps of an LSTM (test fixture)
        provides: [sequence_model]
        arch: {name: icl-lstm, params: {n_layer: 1, n_embd: 16}}
        train:
          objective: icl-pretrain
          params: {max_steps: 40, steps_per_epoch: 20, curriculum: {dims_start: 1, points_start: 3, interval: 10}}
          epochs: 2
          batch_size: 16
          optimizer: adamw
          lr: 0.01
    """,
}


def test_train_and_evaluate_through_the_engine(tiny_root):
    from cl_bench.engine import RunOptions, run
    from cl_bench.registry import Registry

    write_tree(tiny_root, FILES)
    reg = Registry()
    method = reg.method("tiny-icl-lstm")
    out = run(reg.task("tiny-icll"), method, RunOptions(seed=0, device="cpu"))
    assert out.record.model_source == "trained" and 0 <= out.record.metrics["accuracy"] <= 100
    assert out.model.card["kind"] == "icll" and out.model.card["steps"] == 6  # 2 epochs × ceil(40/16)
    again = run(reg.task("tiny-icll"), method, RunOptions(seed=0, device="cpu", write=False))
    assert again.model.reused and again.record.model_fingerprint == out.record.model_fingerprint
    out = run(reg.task("tiny-linreg"), method, RunOptions(seed=0, device="cpu"))
    card = out.model.card
    assert card["kind"] == "regression" and card["steps"] == 40
    assert card["curriculum_end"] == {"n_dims": 2, "n_points": 5}
    assert out.record.metrics["lsq_mse_avg"] < out.record.metrics["averaging_mse_avg"]
    assert out.record.extras["curve"]["examples"] == [0, 1, 2, 3, 4]


def test_image_tasks_refuse_icl_models(tiny_root):
    from cl_bench.engine import RunOptions, run
    from cl_bench.registry import Registry

    write_tree(tiny_root, FILES)
    reg = Registry()
    with pytest.raises(ClBenchError, match="needs image_encoder"):
        run(reg.task("tiny-knn"), reg.method("tiny-icl-lstm"), RunOptions(device="cpu", write=False))
