"""The scene-clip arch: tokenizer, towers, the MCL stack."""

from __future__ import annotations

import pytest
import torch

from cl_bench import components
from cl_bench.data.scenes.captions import CAPTION_WORDS
from cl_bench.data.image_text.types import ImageList
from cl_bench.data.text.types import TextSplit
from cl_bench.errors import ClBenchError
from cl_bench.models.weights.fingerprint import model_fingerprint
from cl_bench.models.image_text.scene_clip import PROMPT_WORDS, WordTokenizer, scene_vocabulary

TINY = {"embed_dim": 8, "image_width": 4, "text_width": 16, "text_heads": 2, "text_layers": 1}


def build(**params: object) -> torch.nn.Module:
    return components.get("arch", "scene-clip")({**TINY, **params}, in_channels=3, image_size=(32, 32))


def test_vocabulary_is_the_caption_and_prompt_words() -> None:
    vocab = scene_vocabulary()
    assert vocab[:2] == ("[PAD]", "[UNK]")
    assert set(vocab[2:]) == set(CAPTION_WORDS) | set(PROMPT_WORDS)
    assert list(vocab[2:]) == sorted(vocab[2:]) and scene_vocabulary() == vocab


def test_tokenizer_lowercases_strips_punctuation_and_maps_unknown_words() -> None:
    tok = WordTokenizer(scene_vocabulary(), max_tokens=6)
    ids, mask = tok(["A Red star, LEFT of... a zebra!", ""])
    index = tok.index
    want = [index["a"], index["red"], index["star"], index["left"], index["of"], index["a"]]
    assert ids[0].tolist() == want  # truncated to 6 tokens
    assert ids[1].tolist() == [1, 0, 0, 0, 0, 0] and mask[1].tolist() == [True] + [False] * 5
    assert tok.ids("zebra") == [tok.unk_id]


def test_embeddings_are_normalised_and_independent_of_batch_padding() -> None:
    torch.manual_seed(0)
    model = build().eval()
    texts = ["a red star", "a large blue circle left of a small green square"]
    with torch.no_grad():
        both = model.embed_texts(texts)
        alone = model.embed_texts(texts[:1])
        img = model.embed_images(torch.rand(3, 3, 32, 32))
        glob, local = model.image_features(torch.rand(2, 3, 32, 32), local=True)
        _, tl, mask = model.text_features(texts, local=True)
    assert torch.allclose(both[0], alone[0], atol=1e-6)
    assert torch.allclose(both.norm(dim=1), torch.ones(2)) and img.shape == (3, 8)
    assert glob.shape == (2, 8) and local.shape == (2, 16, 8)  # 32 px: stem stride 2, 3 stages -> 4x4
    assert tl.shape == (2, 10, 8) and mask.sum().item() == 13


def test_embed_split_handles_images_and_texts() -> None:
    model = build().eval()
    imgs = ImageList((torch.rand(5, 3, 32, 32) * 255).to(torch.uint8).numpy())
    feats = model.embed_split(imgs, torch.device("cpu"))
    assert feats.shape == (5, 8)
    assert model.embed_split(TextSplit(["a star", "a circle"]), torch.device("cpu")).shape == (2, 8)


def test_stack_concatenates_normalised_stages() -> None:
    torch.manual_seed(1)
    stack = build(stages=3).eval()
    x = torch.rand(4, 3, 32, 32)
    texts = ["a red star", "a blue circle", "two squares", "a cross"]
    with torch.no_grad():
        im, tx = stack.embed_images(x), stack.embed_texts(texts)
        per_stage = [(s.embed_images(x) * s.embed_texts(texts)).sum(1) for s in stack.stages]
    assert im.shape == (4, 24) and torch.allclose(im.norm(dim=1), torch.ones(4), atol=1e-6)
    assert torch.allclose((im * tx).sum(1), torch.stack(per_stage).mean(0), atol=1e-6)
    assert stack.logit_scale.item() == pytest.approx(torch.log(torch.tensor(1 / 0.07)).item(), rel=1e-6)


def test_vocabulary_tag_enters_the_fingerprint_and_bad_inputs_are_errors() -> None:
    model = build()
    fp = model_fingerprint(model)
    model.vocab_tag[0] ^= 1
    assert model_fingerprint(model) != fp
    with pytest.raises(ClBenchError, match="RGB"):
        components.get("arch", "scene-clip")({}, in_channels=1, image_size=(32, 32))
    with pytest.raises(ClBenchError, match="divisible"):
        build(text_width=18, text_heads=4)
    with pytest.raises(ClBenchError, match="unknown field|extra|not permitted|text_depth"):
        build(text_depth=3)


def test_local_features_pooled_to_a_grid_are_block_means() -> None:
    model = build().eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        _, full = model.image_features(x, local=True)  # 4x4 map
        _, pooled = model.image_features(x, local=True, grid=2)
    blocks = full.view(2, 2, 2, 2, 2, 8).permute(0, 1, 3, 2, 4, 5).reshape(2, 4, 4, 8).mean(dim=2)
    assert pooled.shape == (2, 4, 8) and torch.allclose(pooled, blocks, atol=1e-6)


def test_default_tower_is_unchanged_by_the_tower_and_pool_options() -> None:
    """The options add nothing to a default model: same parameters, same fingerprint per seed."""
    torch.manual_seed(3)
    default = build()
    torch.manual_seed(3)
    explicit = build(image_tower="resnet", image_pool="mean")
    assert list(default.state_dict()) == list(explicit.state_dict())
    assert model_fingerprint(default) == model_fingerprint(explicit)
    assert not any(k.startswith("attention_pool") for k in default.state_dict())


@pytest.mark.parametrize("tower, size", [("resnet", (32, 32)), ("convnet", (32, 32)), ("convnet", (40, 24)),
                                         ("resnet", (33, 21))])
def test_attention_pooling_fits_the_towers_last_map_and_trains(tower: str, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = components.get("arch", "scene-clip")(
        {**TINY, "image_tower": tower, "image_pool": "attention", "attention_heads": 2}, in_channels=3,
        image_size=size)
    x = torch.rand(4, 3, *size)
    glob, local = model.image_features(x, local=True)
    assert glob.shape == (4, 8) and local.shape[0] == 4
    before = model.attention_pool.positional_embedding.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    glob.pow(2).sum().backward()
    opt.step()
    assert not torch.equal(before, model.attention_pool.positional_embedding)
    with pytest.raises(ClBenchError, match="divisible by attention_heads"):
        build(image_tower=tower, image_pool="attention", attention_heads=3)
