"""scene-clip's frozen MiniLM text tower: the sentence-vector cache and the tower itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cl_bench import components
from cl_bench.models.image_text.frozen_sentence_tower import (
    SENTENCE_DIM,
    FrozenSentenceTower,
    SentenceEmbeddingCache,
    _encode_minilm,
    minilm_digest,
)
from cl_bench.models.text.text_encoders import minilm_dir
from cl_bench.models.weights.fingerprint import model_fingerprint


class CountingEncoder:
    """A stand-in frozen encoder: a fixed vector per text, and a record of what it was asked."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        out = np.stack([np.random.default_rng(sum(t.encode())).normal(size=4) for t in texts])
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def test_each_text_is_encoded_once_and_shared_through_the_disk(tmp_path: Path) -> None:
    enc = CountingEncoder()
    cache = SentenceEmbeddingCache(enc, "fake-encoder", 4, root=tmp_path)
    first = cache(["a red star", "a circle", "a red star"])
    assert enc.calls == [["a circle", "a red star"]]  # unique, sorted, once
    np.testing.assert_array_equal(first[0], first[2])
    again = cache(["a circle", "a blue square"])
    assert enc.calls[1:] == [["a blue square"]] and cache.computed == 3
    np.testing.assert_array_equal(again[0], first[1])
    # a new process (a fresh cache object) reads every shard and encodes nothing
    enc2 = CountingEncoder()
    fresh = SentenceEmbeddingCache(enc2, "fake-encoder", 4, root=tmp_path)
    np.testing.assert_array_equal(fresh(["a blue square", "a red star"]), np.stack([again[1], first[0]]))
    assert enc2.calls == [] and fresh.computed == 0
    # another encoder never reads these vectors
    other = SentenceEmbeddingCache(CountingEncoder(), "other-encoder", 4, root=tmp_path)
    other(["a circle"])
    assert other.computed == 1


def test_a_corrupt_shard_is_encoded_again(tmp_path: Path) -> None:
    SentenceEmbeddingCache(CountingEncoder(), "fake", 4, root=tmp_path)(["a star"])
    for shard in (tmp_path / "fake").glob("*.npz"):
        shard.write_bytes(b"not an npz")
    enc = CountingEncoder()
    SentenceEmbeddingCache(enc, "fake", 4, root=tmp_path)(["a star"])
    assert enc.calls == [["a star"]]


def test_minilm_vectors_match_sentence_transformers() -> None:
    """The reference library itself embeds the same texts (normalised mean pooling)."""
    from sentence_transformers import SentenceTransformer

    texts = ["a photo of a circle.", "a large red star left of a blue square", "two crosses"]
    ref = SentenceTransformer(str(minilm_dir()), device="cpu").encode(texts, normalize_embeddings=True)
    ours = _encode_minilm(texts)
    assert ours.shape == (3, SENTENCE_DIM)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_a_text_vector_does_not_depend_on_the_texts_encoded_with_it() -> None:
    """A cold cache encodes whichever texts are missing together; a text's vector must be the same
    bits whatever its companions (padded batches moved it by ~1e-7, enough for training to diverge)."""
    short = "a red star"
    alone = _encode_minilm([short])
    with_long = _encode_minilm(["a large red star left of a small blue circle and two crosses", short, "two stars"])
    assert np.array_equal(alone[0], with_long[1])
    assert np.array_equal(_encode_minilm(["two stars"])[0], with_long[2])


def test_scene_clip_with_the_frozen_tower(tmp_path: Path) -> None:
    enc = CountingEncoder()
    tower = FrozenSentenceTower(8, cache=SentenceEmbeddingCache(enc, "fake", 4, root=tmp_path), digest="00" * 32)
    assert tower.head[0].in_features == SENTENCE_DIM  # the real tower's input
    params = {"embed_dim": 8, "image_width": 4, "text_width": 16, "text_tower": "minilm"}
    model = components.get("arch", "scene-clip")(params, in_channels=3, image_size=(32, 32))
    # MiniLM's weights are not part of the model: only the trainable head is
    assert not any("model." in k or "encoder.layer" in k for k in model.state_dict())
    assert {k for k in model.state_dict() if k.startswith("text.")} == {
        "text.head.0.weight", "text.head.0.bias", "text.head.2.weight", "text.head.2.bias"}
    assert bytes(model.text.tower_tag.tolist()).hex() == minilm_digest()
    glob, local, mask = model.text_features(["a red star", "a photo of a circle."], local=True)
    assert glob.shape == (2, 8) and local.shape == (2, 1, 8) and mask.tolist() == [[True], [True]]
    torch.testing.assert_close(local[:, 0], glob)
    emb = model.embed_texts(["a red star"])
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(1))
    # the frozen tower's identity is in the fingerprint: another digest, another model
    words = components.get("arch", "scene-clip")({**params, "text_tower": "words"}, in_channels=3, image_size=(32, 32))
    assert model_fingerprint(model) != model_fingerprint(words)
    grads = torch.autograd.grad(model.text_features(["a red star"])[0].sum(), list(model.text.parameters()))
    assert all(g is not None for g in grads)


def test_max_pooled_global_feature_is_the_projected_map_max() -> None:
    params = {"embed_dim": 8, "image_width": 4, "text_width": 16, "text_layers": 1, "text_heads": 2,
              "image_pool": "max"}
    model = components.get("arch", "scene-clip")(params, in_channels=3, image_size=(32, 32)).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        fmap = model.visual.feature_maps(x)[f"stage{len(model.visual.stages)}"]
        want = torch.stack([fmap[i].flatten(1).max(dim=1).values for i in range(2)]) @ model.image_projection.weight.T
        torch.testing.assert_close(model.image_features(x)[0], want)


def _in_sample_i2t_r5(model: torch.nn.Module, images: torch.Tensor, captions: list[str]) -> float:
    with torch.no_grad():
        sims = model.embed_images(images) @ model.embed_texts(captions).T
    top5 = sims.topk(5, dim=1).indices
    return float((top5 == torch.arange(len(captions))[:, None]).any(dim=1).float().mean())


def test_a_short_clip_run_learns_the_pairs() -> None:
    """Learning smoke test: a few epochs of clip on 192 scenes (32 px) must lift in-sample
    image->text R@5 (each image's first caption among the 192) above 2.5x the untrained model's
    and chance (5/192 = 2.6 %)."""
    from cl_bench.methods.image_text.objectives import Clip
    from cl_bench.methods.image_text.trainer import train_image_text
    from cl_bench.specs import TrainRecipe

    data = components.get("dataset", "scenes-captions")({"n_train": 192, "n_test": 1, "image_size": 32, "seed": 3}, None)
    torch.manual_seed(0)
    model = components.get("arch", "scene-clip")(
        {"embed_dim": 32, "image_width": 8, "text_width": 32, "text_layers": 1}, in_channels=3, image_size=(32, 32))
    images, first = data.train.images.tensor(), [c[0] for c in data.train.captions]
    before = _in_sample_i2t_r5(model.eval(), images, first)
    recipe = TrainRecipe(objective="clip", epochs=12, batch_size=32, optimizer="adamw", lr=3e-3, weight_decay=0.05,
                         warmup_epochs=1)
    card = train_image_text(model, Clip(), recipe, data.train, 0, torch.device("cpu"))
    after = _in_sample_i2t_r5(model, images, first)
    assert card.loss_curve[-1] < card.loss_curve[0] - 0.3
    assert after > max(2.5 * before, 0.08), (before, after)  # measured: 3.1 % -> 9.9 %


def test_contexts_that_are_word_embeddings_give_the_sentence_of_those_words() -> None:
    """Learnable contexts inserted after [CLS] (DenseCLIP through the frozen MiniLM): set to MiniLM's
    own word embeddings of "a photo of", they must give the cached sentence vector of
    "a photo of circle" (sentence-transformers' pooling, independently computed) under the head."""
    from cl_bench.models.image_text.frozen_sentence_tower import _minilm

    tower = FrozenSentenceTower(8)
    enc = _minilm()
    ids = enc.tokenize(["a photo of"])["input_ids"][0, 1:-1]  # without [CLS] / [SEP]
    contexts = enc.model.get_input_embeddings()(ids).detach().clone().requires_grad_(True)
    got = tower.with_contexts(contexts, ["circle", "trees"])
    want = tower.head(torch.from_numpy(_encode_minilm(["a photo of circle", "a photo of trees"])))
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    got.sum().backward()
    assert contexts.grad is not None and contexts.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in enc.model.parameters())  # MiniLM stays frozen
