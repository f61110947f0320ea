"""Adapters (open-clip, hf-clip, hf-vlm-embedder) with tiny randomly initialised models, offline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from cl_bench import components
from cl_bench.errors import ClBenchError
from cl_bench.models.image_text.clip_preprocess import resize_center_crop

TINY_OPEN_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def images_u8(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def as_float(u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255


# --- preprocessing --------------------------------------------------------------------------------
def test_resize_center_crop_shortest_side_then_crop() -> None:
    x = torch.rand(2, 3, 40, 80)
    out = resize_center_crop(x, (20, 20))
    assert out.shape == (2, 3, 20, 20)
    # shortest side 40 -> 20 (width 80 -> 40), then the centre 20 columns (10..30)
    full = F.interpolate(x, size=(20, 40), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    assert torch.allclose(out, full[..., :, 10:30])
    assert torch.equal(resize_center_crop(x[..., :20, :20], (20, 20)), x[..., :20, :20])


# --- open-clip ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    import open_clip

    folder = tmp_path_factory.mktemp("oc_cfg")
    (folder / "clbench-tiny-vit.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(folder)
    return "clbench-tiny-vit"


def test_open_clip_loads_a_checkpoint_and_matches_open_clip(tiny_open_clip: str, tmp_path: Path) -> None:
    import open_clip

    torch.manual_seed(1)
    source, _, preprocess = open_clip.create_model_and_transforms(tiny_open_clip, pretrained=None)
    source.eval()
    ckpt = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(ckpt))
    torch.manual_seed(2)
    enc = components.get("arch", "open-clip")({"model": tiny_open_clip})
    before = enc.embed_texts(["a red star"])
    report = enc.load_checkpoint(ckpt)
    assert report["n_loaded"] == len(source.state_dict()) and report["format"] == "open_clip"

    u8 = images_u8(3, 32)
    from PIL import Image

    want_img = torch.stack([preprocess(Image.fromarray(im)) for im in u8])
    texts = ["a red star left of a blue circle", "a photo of a square", ""]
    tok = open_clip.get_tokenizer(tiny_open_clip)
    with torch.no_grad():
        want_i = F.normalize(source.encode_image(want_img), dim=-1)
        want_t = F.normalize(source.encode_text(tok(texts)), dim=-1)
        got_i, got_t = enc.embed_images(as_float(u8)), enc.embed_texts(texts)
    assert torch.allclose(got_i, want_i, atol=1e-5)
    assert torch.allclose(got_t, want_t, atol=1e-6)
    assert not torch.allclose(before, got_t[:1])
    assert got_i.shape == (3, enc.embed_dim) == (3, 16)


def test_open_clip_does_not_announce_random_weights(tiny_open_clip: str, caplog: pytest.LogCaptureFixture) -> None:
    """The model is built without weights because the user's checkpoint is loaded right after;
    open_clip's "initialized randomly" warning would say the opposite of what happens. Other
    warnings still get through."""
    import logging

    with caplog.at_level(logging.WARNING):
        components.get("arch", "open-clip")({"model": tiny_open_clip})
        logging.warning("another warning")
    messages = [r.getMessage() for r in caplog.records]
    assert not any("No pretrained weights loaded" in m for m in messages) and "another warning" in messages
    assert not logging.getLogger().filters  # the filter is removed again


def test_open_clip_checkpoint_errors(tiny_open_clip: str, tmp_path: Path) -> None:
    enc = components.get("arch", "open-clip")({"model": tiny_open_clip})
    state = {("module." + k): v for k, v in enc.clip.state_dict().items()}
    ddp = tmp_path / "ddp.pt"
    torch.save({"state_dict": state, "epoch": 3}, ddp)
    assert enc.load_checkpoint(ddp)["n_loaded"] == len(state)
    partial = tmp_path / "partial.safetensors"
    save_file({k: v.contiguous() for k, v in list(enc.clip.state_dict().items())[:3]}, str(partial))
    with pytest.raises(ClBenchError, match="missing key"):
        enc.load_checkpoint(partial)
    with pytest.raises(ClBenchError, match="unknown model"):
        components.get("arch", "open-clip")({"model": "no-such-clip-arch"})


# --- hf-clip --------------------------------------------------------------------------------------
WORDS = ["[PAD]", "[UNK]", "<s>", "</s>", "<image>", "a", "red", "star", "blue", "circle", "photo", "of",
         "represent", "the", "given", "image", "left"]


def tiny_tokenizer(image_token: bool = False):  # a transformers tokenizer
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if not image_token:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 2), ("</s>", 3)])
    extra = {"extra_special_tokens": {"image_token": "<image>"}} if image_token else {}
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="<s>",
                                   eos_token="</s>", **extra)


@pytest.fixture(scope="module")
def hf_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    folder = tmp_path_factory.mktemp("hf_clip")
    torch.manual_seed(3)
    text = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 1,
            "vocab_size": len(WORDS), "max_position_embeddings": 16, "bos_token_id": 2, "eos_token_id": 3,
            "pad_token_id": 0}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 1,
              "image_size": 32, "patch_size": 8}
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(str(folder))
    tiny_tokenizer().save_pretrained(str(folder))
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(str(folder))
    return folder


def test_hf_clip_matches_the_transformers_pipeline(hf_clip_dir: Path) -> None:
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    enc = components.get("arch", "hf-clip")({"path": str(hf_clip_dir)})
    model = CLIPModel.from_pretrained(str(hf_clip_dir)).eval()
    tok = AutoTokenizer.from_pretrained(str(hf_clip_dir))
    proc = CLIPImageProcessor.from_pretrained(str(hf_clip_dir))
    u8 = images_u8(2, 32, seed=4)
    texts = ["a red star", "a photo of a blue circle left of a red star"]
    with torch.no_grad():
        ids = tok(texts, padding=True, return_tensors="pt")
        t = model.get_text_features(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"])
        want_t = F.normalize(t if torch.is_tensor(t) else t.pooler_output, dim=-1)
        pix = proc(images=list(u8), return_tensors="pt")["pixel_values"]
        i = model.get_image_features(pixel_values=pix)
        want_i = F.normalize(i if torch.is_tensor(i) else i.pooler_output, dim=-1)
        got_t, got_i = enc.embed_texts(texts), enc.embed_images(as_float(u8))
    assert torch.allclose(got_t, want_t, atol=1e-5)
    assert torch.allclose(got_i, want_i, atol=1e-4)
    assert enc.embed_dim == 16


def test_hf_clip_through_checkpoint_and_errors(hf_clip_dir: Path, tmp_path: Path) -> None:
    enc = components.get("arch", "hf-clip")({})
    with pytest.raises(ClBenchError, match="no model loaded"):
        enc.embed_texts(["a star"])
    assert enc.load_checkpoint(hf_clip_dir)["format"] == "huggingface"
    assert enc.embed_texts(["a star"]).shape == (1, 16)
    with pytest.raises(ClBenchError, match="not a Hugging Face model directory"):
        enc.load_checkpoint(tmp_path)


# --- hf-vlm-embedder ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_llava_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    folder = tmp_path_factory.mktemp("llava")
    torch.manual_seed(5)
    cfg = LlavaConfig(
        vision_config={"model_type": "clip_vision_model", "hidden_size": 16, "intermediate_size": 32,
                       "num_attention_heads": 2, "num_hidden_layers": 2, "image_size": 16, "patch_size": 8},
        text_config={"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2,
                     "num_key_value_heads": 2, "num_hidden_layers": 1, "vocab_size": len(WORDS),
                     "max_position_embeddings": 64},
        image_token_index=WORDS.index("<image>"), vision_feature_layer=-1, vision_feature_select_strategy="default",
    )
    LlavaForConditionalGeneration(cfg).save_pretrained(str(folder))
    proc = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}),
                          tokenizer=tiny_tokenizer(image_token=True), patch_size=8, vision_feature_select_strategy="default",
                          image_token="<image>", num_additional_image_tokens=1)
    proc.save_pretrained(str(folder))
    return folder


def test_vlm_embedder_last_token_pooling_is_padding_invariant(tiny_llava_dir: Path) -> None:
    enc = components.get("arch", "hf-vlm-embedder")({"path": str(tiny_llava_dir), "batch_size": 8})
    imgs = as_float(images_u8(3, 16, seed=6))
    texts = ["<|image_1|>\nrepresent the given image", "a red star left of a blue circle", None]
    items = [imgs[0], None, imgs[2]]
    with torch.no_grad():
        batch = enc.embed_pairs(texts, items)
        one = torch.cat([enc.embed_pairs([t], [im]) for t, im in zip(texts, items)])
        # independent: the model on the unpadded prompt, final hidden state of its last token
        prompt = enc.prompt(texts[1], False)
        ids = enc.processor.tokenizer([prompt], return_tensors="pt")
        hidden = enc.hf(**ids, output_hidden_states=True).hidden_states[-1][0, -1]
    assert batch.shape == (3, 16)
    assert torch.allclose(batch, one, atol=1e-5)
    assert torch.allclose(batch[1], F.normalize(hidden, dim=-1), atol=1e-5)
    assert enc.prompt("<|image_1|>\nrepresent the given image", True) == "<image>\nrepresent the given image"
    assert enc.prompt("a red star", True) == "<image>\na red star" and enc.prompt("<|image_1|> a", False) == "a"
    assert not torch.allclose(batch[0], enc.embed_pairs([texts[0]], [imgs[1]])[0])  # the image matters


def test_vlm_embedder_mean_pooling_and_interface(tiny_llava_dir: Path) -> None:
    enc = components.get("arch", "hf-vlm-embedder")({"path": str(tiny_llava_dir), "pooling": "mean"})
    texts = ["a red star", "a photo of a blue circle left of a red star"]
    with torch.no_grad():
        got = enc.embed_texts(texts)
        want = []
        for t in texts:
            ids = enc.processor.tokenizer([t], return_tensors="pt")
            want.append(F.normalize(enc.hf(**ids, output_hidden_states=True).hidden_states[-1][0].mean(0), dim=-1))
        img = enc.embed_images(as_float(images_u8(2, 16, seed=7)))
    assert torch.allclose(got, torch.stack(want), atol=1e-5)
    assert img.shape == (2, 16) and torch.allclose(img.norm(dim=1), torch.ones(2))
    with pytest.raises(ClBenchError, match="no model loaded"):
        components.get("arch", "hf-vlm-embedder")({}).embed_texts(["a"])
