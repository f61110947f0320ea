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
        train = reg.method(name).train
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
