"""The ICL twins learn: Garg et al.'s curriculum as the reference steps it, and a tiny transformer
that must learn regular languages in context (beat the in-context unigram baseline on DFAs it never
saw in training)."""

from __future__ import annotations

import warnings

import pytest
import torch

from cl_bench.methods.lm.icl_pretrain import Curriculum

STEPS_EPOCHS = 40  # 40 x 16 = 640 steps
MARGIN = 4.0  # measured: 57.7 vs unigram 49.9 (torch 2.14.1 CPU, 1 thread)

warnings.filterwarnings("ignore", message=".*token_id.*")


class ReferenceCurriculum:
    """An independent rewrite of dtsip/in-context-learning ``src/curriculum.py``: a step counter
    incremented after every training step; a variable grows by ``inc`` each time the counter is a
    multiple of its ``interval``, and is clipped at ``end``."""

    def __init__(self, dims: tuple[int, int, int, int], points: tuple[int, int, int, int]) -> None:
        self.schedules = {"dims": dims, "points": points}  # (start, end, inc, interval)
        self.value = {"dims": dims[0], "points": points[0]}
        self.step_count = 0

    def update(self) -> None:
        self.step_count += 1
        for name, (_, end, inc, interval) in self.schedules.items():
            if self.step_count % interval == 0:
                self.value[name] += inc
            self.value[name] = min(self.value[name], end)


def test_curriculum_matches_the_papers_ramps_step_by_step() -> None:
    # the paper's conf/base.yaml for linear regression: dims 5 -> 20 (+1 every 2000 steps),
    # points 11 -> 41 (+2 every 2000 steps), both reached at step 30,000 of 500,000
    ref = ReferenceCurriculum(dims=(5, 20, 1, 2000), points=(11, 41, 2, 2000))
    ours = Curriculum(dims_start=5, dims_inc=1, points_start=11, points_inc=2, interval=2000)
    for step in range(40_000):
        assert ours.at(step, 20, 41) == (ref.value["dims"], ref.value["points"]), step
        ref.update()
    assert ours.at(0, 20, 41) == (5, 11)
    assert ours.at(29_999, 20, 41) == (19, 39) and ours.at(30_000, 20, 41) == (20, 41)


def test_base_recipe_keeps_the_papers_curriculum_shape() -> None:
    """Scaled to d = 5: points = 2 * dims + 1 at every step (as 11 = 2 * 5 + 1 ... 41 = 2 * 20 + 1),
    both ramps end together, and well before the end of training (paper: 6% of the run)."""
    from cl_bench.registry import Registry

    reg = Registry()
    task = reg.task("icl-linreg")
    d, n = task.dataset.params["n_dims"], task.dataset.params["n_points"]
    for name in ("icl-transformer", "icl-lstm", "icl-linear-rnn"):
        train = reg.method(name).for_task("icl-linreg").train  # its icl-linreg budget (by_task)
        cur = Curriculum(**train.params["curriculum"])
        total = train.epochs * train.params["steps_per_epoch"]
        shapes = [cur.at(s, d, n) for s in range(total)]
        assert all(pts == 2 * dims + 1 for dims, pts in shapes), name
        end = next(s for s, shape in enumerate(shapes) if shape == (d, n))
        assert 0 < end <= total // 2, (name, end, total)


def _accuracy(model: torch.nn.Module, split, predictions=None) -> float:
    from cl_bench.protocols.icll import accuracy_table, model_predictions, score_positions

    inputs = [s[:-1] for s in split.sequences]
    if predictions is None:
        predictions = model_predictions(model, split.sequences, 32, torch.device("cpu"))
    return accuracy_table([score_positions(i, p, d) for i, p, d in zip(inputs, predictions, split.dfas)])[0]


@pytest.mark.slow  # ~30 s on one thread
def test_a_tiny_transformer_learns_languages_in_context() -> None:
    """A 2-layer, 32-wide GPT-2 trained briefly on 512 random DFAs beats the in-context unigram
    model on 64 DFAs it never saw: it must read the context (a model that ignores it cannot know
    each language's alphabet and sits far below unigram), and it is well above its untrained self."""
    from cl_bench import components
    from cl_bench.data.icl.dfa import ICLLParams, generate
    from cl_bench.methods.lm.icl_pretrain import ICLPretrainParams, train_icll
    from cl_bench.protocols.icll import ngram_predictions
    from cl_bench.specs import TrainRecipe

    data = generate(ICLLParams(n_train=512, n_test=64, min_states=4, max_states=8, min_alphabet=8, max_alphabet=12,
                               min_strings=8, max_strings=12, min_length=1, max_length=6, seed=0))
    torch.manual_seed(0)
    model = components.get("arch", "icl-gpt2")({"n_layer": 2, "n_embd": 32, "n_head": 2}, **data.arch_inputs)
    untrained = _accuracy(model.eval(), data.test)
    recipe = TrainRecipe(objective="icl-pretrain", epochs=STEPS_EPOCHS, batch_size=32, optimizer="adamw", lr=3e-3,
                         warmup_epochs=1)
    card = train_icll(model, recipe, data.train, ICLPretrainParams(), 0, torch.device("cpu"), False)
    assert card.final_loss < card.first_loss - 0.5
    trained = _accuracy(model, data.test)
    unigram = _accuracy(model, data.test, [ngram_predictions(s[:-1], 1) for s in data.test.sequences])
    assert trained > unigram + MARGIN, (trained, unigram, untrained)
    assert trained > untrained + 20, (trained, untrained)


def test_length_window_batches_hold_instances_of_similar_length() -> None:
    """Hand-worked: 8 instances of lengths 5 1 4 2 8 3 7 6, batch 2. With one window over the
    whole epoch the batches are the length-sorted pairs {1,2} {3,4} {5,6} {7,8} (as instance
    indices {1,3} {5,2} {0,7} {6,4}) whatever the order; with windows of 2 batches over the order
    0..7 they are the sorted pairs within {0,1,2,3} and {4,5,6,7}; window 1 keeps the order."""
    from cl_bench.methods.lm.icl_pretrain import length_bucketed_batches

    lengths = [5, 1, 4, 2, 8, 3, 7, 6]
    gen = torch.Generator().manual_seed(0)
    for order in ([0, 1, 2, 3, 4, 5, 6, 7], [7, 2, 5, 0, 3, 6, 1, 4]):
        whole = length_bucketed_batches(order, lengths, 2, 4, gen)
        assert sorted(map(sorted, whole)) == [[0, 7], [1, 3], [2, 5], [4, 6]]
    halves = length_bucketed_batches(list(range(8)), lengths, 2, 2, gen)
    assert sorted(map(sorted, halves)) == [[0, 2], [1, 3], [4, 6], [5, 7]]
    assert length_bucketed_batches(list(range(8)), lengths, 3, 1, gen) == [[0, 1, 2], [3, 4, 5], [6, 7]]
    # the batch order is shuffled (seeded), not left sorted by length
    orders = {tuple(map(tuple, length_bucketed_batches(list(range(8)), lengths, 2, 4, torch.Generator().manual_seed(s))))
              for s in range(6)}
    assert len(orders) > 1


def test_regression_lr_replaces_the_recipe_lr_on_regression_prompts_only() -> None:
    """One plain SGD step (constant schedule, no momentum, no clipping) moves a one-parameter model
    ŷ = w·x_1 by −lr · grad: with regression_lr 0.5 the step equals that of a recipe at lr 0.5, and
    is 50 times the step at lr 0.01 (same seed, so the same prompts and the same gradient at w = 0)."""
    from cl_bench.data.icl.linreg import LinRegSampler
    from cl_bench.methods.lm.icl_pretrain import ICLPretrainParams, train_regression
    from cl_bench.specs import TrainRecipe

    class OneWeight(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def regress(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
            return self.w * xs[..., 0]

    def step(lr: float, regression_lr: float | None) -> float:
        model = OneWeight()
        params = {"max_steps": 1, "grad_clip": 1e9, "regression_lr": regression_lr}
        recipe = TrainRecipe(objective="icl-pretrain", epochs=1, batch_size=8, optimizer="sgd", momentum=0.0, lr=lr,
                             schedule="constant", params=params)
        train_regression(model, recipe, LinRegSampler(3, 7, 0.0), ICLPretrainParams(**params), 0,
                         torch.device("cpu"), False)
        return float(model.w)

    moved = step(0.01, 0.5)
    assert moved != 0.0
    assert moved == pytest.approx(step(0.5, None), rel=1e-6)
    assert moved == pytest.approx(50 * step(0.01, None), rel=1e-5)
