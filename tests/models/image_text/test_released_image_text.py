"""Released image-text checkpoints (TCL, DreamLIP, MCL-CLIP): a file fabricated in each authors'
layout at tiny width, loaded through the method, every tower tensor landing, the dropped keys
exactly the documented ones, and the embeddings equal to the authors' computation written out."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cl_bench.errors import ClBenchError
from cl_bench.registry import Registry
from tests.models.image_text.test_image_text_adapters import tiny_open_clip  # noqa: F401 - the tiny open_clip config fixture
from tests.models.weights.test_released_methods import ddp, obtain, perturb


def dropped_exactly(report: dict, state: dict[str, torch.Tensor], heads: list[str]) -> None:
    assert sorted(report["dropped"]) == sorted(k for k in state if any(k.startswith(h) for h in heads))


# ------------------------------------------------------------------------------------------ TCL

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "star", "left", "of", "blue", "circle",
         "dog", "on", "the", "grass", "##s"]
SMALL = {"image_size": 32, "patch_size": 8, "vision_width": 32, "vision_layers": 2, "vision_heads": 2,
         "text_width": 32, "text_heads": 2, "text_intermediate": 64, "fusion_layer": 2, "vocab_size": len(WORDS),
         "max_positions": 40, "embed_dim": 16, "max_words": 12}


def bert_tokenizer_dir(folder: Path) -> Path:
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(str(folder))
    return folder


def tcl_pretrain_state(grid_trained: int) -> tuple[dict[str, torch.Tensor], nn.Module, nn.Module]:
    """Their ALBEF pre-training model (models/model_pretrain.py) at tiny width: a ViT ``visual_encoder``
    whose position embedding was trained on a ``grid_trained``^2 patch grid, a BertForMaskedLM
    ``text_encoder`` with 4 layers of which 2..3 are fusion layers (cross-attention), projections,
    ``temp``, ``itm_head``, momentum copies and queues."""
    from timm.models.vision_transformer import VisionTransformer
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    vit = perturb(VisionTransformer(img_size=8 * grid_trained, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                                    mlp_ratio=4, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6),
                                    num_classes=0), seed=1)
    cfg = BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=40)
    bert = perturb(BertForMaskedLM(cfg), seed=2)
    state: dict[str, torch.Tensor] = {f"visual_encoder.{k}": v for k, v in vit.state_dict().items()}
    state.update({f"text_encoder.{k}": v for k, v in bert.state_dict().items()})
    state["text_encoder.bert.embeddings.position_ids"] = torch.arange(40).unsqueeze(0)  # persistent in 2021
    g = torch.Generator().manual_seed(3)
    for layer in (2, 3):  # xbert's fusion layers carry cross-attention
        for part in ("self.query", "self.key", "self.value", "output.dense"):
            for kind, shape in (("weight", (32, 32)), ("bias", (32,))):
                state[f"text_encoder.bert.encoder.layer.{layer}.crossattention.{part}.{kind}"] = torch.randn(*shape, generator=g)
        state[f"text_encoder.bert.encoder.layer.{layer}.crossattention.output.LayerNorm.weight"] = torch.ones(32)
        state[f"text_encoder.bert.encoder.layer.{layer}.crossattention.output.LayerNorm.bias"] = torch.zeros(32)
    state.update({"vision_proj.weight": torch.randn(16, 32, generator=g), "vision_proj.bias": torch.randn(16, generator=g),
                  "text_proj.weight": torch.randn(16, 32, generator=g), "text_proj.bias": torch.randn(16, generator=g),
                  "temp": torch.tensor(0.05), "itm_head.weight": torch.randn(2, 32, generator=g),
                  "itm_head.bias": torch.randn(2, generator=g), "image_queue": torch.randn(16, 64, generator=g),
                  "text_queue": torch.randn(16, 64, generator=g), "queue_ptr": torch.zeros(1, dtype=torch.long)})
    for k in [k for k in state if k.split(".")[0] in ("visual_encoder", "vision_proj", "text_encoder", "text_proj")]:
        head, rest = k.split(".", 1)
        state[f"{head}_m.{rest}"] = state[k] + 1 if state[k].is_floating_point() else state[k]
    return state, vit, bert


def albef_pos_embed(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """ALBEF's ``interpolate_pos_embed``, written out: bicubic on the patch grid, class token kept."""
    cls, patches = pos[:, :1], pos[:, 1:]
    old = int(patches.shape[1] ** 0.5)
    patches = patches.reshape(1, old, old, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat([cls, patches.permute(0, 2, 3, 1).flatten(1, 2)], dim=1)


def test_pre_caption_by_hand() -> None:
    from cl_bench.models.image_text.albef_itc import pre_caption

    assert pre_caption("A Dog's  ball-game, on the (green) grass!", 30) == "a dogs ball game on the green grass"
    assert pre_caption("one two three four", 2) == "one two"


def test_tcl_pretrain_release(tmp_path: Path) -> None:
    state, vit, bert = tcl_pretrain_state(grid_trained=2)  # trained at 16 px, evaluated at 32 px
    folder = bert_tokenizer_dir(tmp_path / "TCL_4M")
    path = folder / "TCL_4M.pth"
    torch.save({"model": state, "optimizer": {}, "lr_scheduler": {}, "config": {"image_res": 16}, "epoch": 29}, path)
    got = obtain("tcl-vit-b16-4m", path, tmp_path, **SMALL)
    model = got.model
    assert got.source == "checkpoint" and got.checkpoint["tokenizer"] == str(folder)
    documented = Registry().method("tcl-vit-b16-4m").released.dropped
    renamed = {k.replace("bert.", ""): v for k, v in state.items()}  # their Retrieval.py rename
    assert set(got.checkpoint["dropped"]) == set(renamed) - set(model.state_dict())
    assert all(k.startswith(tuple(documented)) for k in got.checkpoint["dropped"])
    assert {"text_encoder.encoder.layer.2.crossattention.self.query.weight", "text_encoder.cls.predictions.bias",
            "visual_encoder_m.pos_embed", "text_encoder.embeddings.position_ids"} <= set(got.checkpoint["dropped"])
    assert got.checkpoint["n_loaded"] == len(model.state_dict())
    assert torch.equal(model.text_proj.weight, state["text_proj.weight"])
    assert torch.equal(model.text_encoder.encoder.layer[1].output.dense.weight,
                       state["text_encoder.bert.encoder.layer.1.output.dense.weight"])
    assert float(model.logit_scale) == pytest.approx(-torch.log(torch.tensor(0.05)).item())

    images = torch.rand(2, 3, 48, 40)
    texts = ["A red star, left of a blue circle.", "dogs on the grass"]
    with torch.no_grad():
        # image: squash-resize to 32 bicubic, CLIP mean/std, their ViT with the resampled position
        # embedding, class token, vision_proj, L2
        x = F.interpolate(images, size=(32, 32), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        x = (x - torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)) / \
            torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
        vit32 = type(vit)(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4, qkv_bias=True,
                          norm_layer=partial(nn.LayerNorm, eps=1e-6), num_classes=0)
        vit_state = dict(vit.state_dict())
        vit_state["pos_embed"] = albef_pos_embed(vit_state["pos_embed"], 4)
        vit32.load_state_dict(vit_state)
        want_i = F.normalize(F.linear(vit32.eval().forward_features(x)[:, 0], state["vision_proj.weight"],
                                      state["vision_proj.bias"]), dim=-1)
        # text: pre_caption, WordPiece padded to max_words, BERT's text-only layers (hidden state after
        # layer fusion_layer), [CLS], text_proj, L2
        from transformers import BertTokenizerFast

        tok = BertTokenizerFast.from_pretrained(str(folder))
        enc = tok(["a red star left of a blue circle", "dogs on the grass"], padding="max_length", max_length=12,
                  truncation=True, return_tensors="pt")
        hidden = bert.bert.eval()(**enc, output_hidden_states=True).hidden_states[2][:, 0]
        want_t = F.normalize(F.linear(hidden, state["text_proj.weight"], state["text_proj.bias"]), dim=-1)
        got_i, got_t = model.embed_images(images), model.embed_texts(texts)
    torch.testing.assert_close(got_i, want_i, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_t, want_t, rtol=1e-4, atol=1e-5)


def test_tcl_file_with_an_undocumented_key_is_refused(tmp_path: Path) -> None:
    state, _, _ = tcl_pretrain_state(grid_trained=4)
    state["some_new_head.weight"] = torch.zeros(2)
    bert_tokenizer_dir(tmp_path)
    torch.save({"model": state}, tmp_path / "ckpt.pth")
    with pytest.raises(ClBenchError, match="not in the released layout.*some_new_head"):
        obtain("tcl-vit-b16-coco", tmp_path / "ckpt.pth", tmp_path, **SMALL)


# ------------------------------------------------------------------------------------------ open_clip


def open_clip_training_checkpoint(model: nn.Module, path: Path, epoch: int) -> dict[str, torch.Tensor]:
    """open_clip's training/main.py checkpoint: epoch, name, state_dict of the DDP model, optimizer."""
    state = ddp(model)
    torch.save({"epoch": epoch, "name": "run", "state_dict": state, "optimizer": {"state": {}, "param_groups": []}}, path)
    return state


def test_dreamlip_release(tmp_path: Path, tiny_open_clip: str) -> None:
    import open_clip

    torch.manual_seed(5)
    source = perturb(open_clip.create_model(tiny_open_clip, pretrained=None), seed=6).eval()
    state = open_clip_training_checkpoint(source, tmp_path / "epoch_32.pt", 32)
    for key in ("cc3m", "cc12m", "yfcc15m", "cc30m"):
        got = obtain(f"dreamlip-vit-b16-{key}", tmp_path / "epoch_32.pt", tmp_path, model=tiny_open_clip)
        assert got.checkpoint["n_loaded"] == len(state) and got.checkpoint["dropped"] == []
    tok = open_clip.get_tokenizer(tiny_open_clip)
    with torch.no_grad():
        want = F.normalize(source.encode_text(tok(["a red star"])), dim=-1)
        assert torch.allclose(got.model.embed_texts(["a red star"]), want, atol=1e-6)
    torch.save({"state_dict": {**state, "module.multi_classifier.W": torch.zeros(1, 3, 16)}}, tmp_path / "tagged.pt")
    with pytest.raises(ClBenchError, match="not in the released layout"):
        obtain("dreamlip-vit-b16-cc3m", tmp_path / "tagged.pt", tmp_path, model=tiny_open_clip)


def test_mcl_clip_stack_release(tmp_path: Path, tiny_open_clip: str) -> None:
    """MMVP.ipynb's stacked evaluation: every stage's raw features concatenated, then L2-normalised."""
    import open_clip

    files = ["open_clip_pytorch_model.bin", "ViT_stage_1_epoch_20.pt", "ViT_stage_2_epoch_20.pt"]
    stages = []
    for k, name in enumerate(files):
        torch.manual_seed(10 + k)
        model = perturb(open_clip.create_model(tiny_open_clip, pretrained=None), seed=20 + k).eval()
        if k == 0:  # OpenAI's weights in open_clip layout: a bare state dict
            torch.save(model.state_dict(), tmp_path / name)
        else:
            open_clip_training_checkpoint(model, tmp_path / name, 20)
        stages.append(model)
    got = obtain("mcl-clip-vit-l14", tmp_path, tmp_path, model=tiny_open_clip, files=files)
    assert [r["n_loaded"] for r in got.checkpoint["stages"]] == [len(s.state_dict()) for s in stages]
    assert got.model.embed_dim == 3 * 16
    tok = open_clip.get_tokenizer(tiny_open_clip)
    _, _, preprocess = open_clip.create_model_and_transforms(tiny_open_clip, pretrained=None)
    from PIL import Image

    u8 = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    pix = torch.stack([preprocess(Image.fromarray(im.numpy())) for im in u8])
    texts = ["a photo of a red star", "a photo of a blue circle"]
    with torch.no_grad():
        want_i = F.normalize(torch.cat([s.encode_image(pix) for s in stages], dim=1), dim=-1)
        want_t = F.normalize(torch.cat([s.encode_text(tok(texts)) for s in stages], dim=1), dim=-1)
        got_i = got.model.embed_images(u8.permute(0, 3, 1, 2).float() / 255)
        got_t = got.model.embed_texts(texts)
    torch.testing.assert_close(got_i, want_i, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_t, want_t, rtol=1e-5, atol=1e-6)
    (tmp_path / files[2]).unlink()
    with pytest.raises(ClBenchError, match="lacks the stage file"):
        obtain("mcl-clip-vit-l14", tmp_path, tmp_path, model=tiny_open_clip, files=files)
