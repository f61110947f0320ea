"""Fabricated checkpoints in the official layouts, one per model family the real tasks need.

- ``r50-moco``: a MoCo v2 release file (``moco_v2_800ep_pretrain.pth.tar``: ``state_dict`` with
  ``module.encoder_q.`` / ``module.encoder_k.``, the MLP head and the queue) of a ResNet-50 layout
  reduced to one block per stage and base width 8 (every key name of a ResNet-50, small tensors:
  a full R50 at 800 px with C4's 1,000 RoI heads is minutes per image on CPU);
- ``r18-solo``: a solo-learn (PyTorch Lightning) checkpoint: ``state_dict`` with ``backbone.``,
  ``projector.`` and ``classifier.`` keys, of a ResNet-18 layout with the CIFAR stem, reduced likewise;
- ``open-clip``: an open_clip hub folder (``open_clip_config.json`` + ``open_clip_pytorch_model.bin``)
  of a tiny ViT CLIP;
- ``tiny-rn-clip``: a tiny random open_clip ModifiedResNet CLIP (registered with open_clip as
  ``clbench-rehearsal-tiny-rn``) saved as a ``.safetensors`` state dict, as open_clip's hub releases
  of OpenAI's RN50 (DenseCLIP's released towers);
- ``qwen2-vl``: a tiny random Qwen2-VL saved as a Hugging Face folder with its processor;
- ``gpt2``: a tiny GPT-2 saved as a Hugging Face folder with its tokenizer;
- ``bert``: a tiny BERT folder with MiniLM's tokenizer (the Tatoeba encoder).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.test_byo_checkpoints import moco_v2_file

R50_REDUCED = {"blocks": [1, 1, 1, 1], "width": 8}
TINY_RN_CLIP_NAME = "clbench-rehearsal-tiny-rn"
R18_REDUCED = {"blocks": [1, 1, 1, 1], "width": 16, "stem": "cifar"}


def arch_args(params: dict) -> list[str]:
    """``--arch-param KEY=VALUE`` arguments selecting ``params``."""
    out = []
    for k, v in params.items():
        out += ["--arch-param", f"{k}={json.dumps(v).replace(' ', '')}"]
    return out


def r50_moco(folder: Path) -> Path:
    path = folder / "moco_v2_800ep_pretrain.pth.tar"
    moco_v2_file(path, "resnet50", R50_REDUCED)
    return path


def r18_solo(folder: Path) -> Path:
    from cl_bench import components

    torch.manual_seed(5)
    enc = components.get("arch", "resnet18")(R18_REDUCED, in_channels=3, image_size=(32, 32))
    state = {f"backbone.{k}": v for k, v in enc.state_dict().items()}
    dim = enc.embed_dim
    state.update({"projector.0.weight": torch.randn(64, dim), "projector.0.bias": torch.randn(64),
                  "projector.2.weight": torch.randn(32, 64), "classifier.weight": torch.randn(10, dim),
                  "classifier.bias": torch.randn(10)})
    path = folder / "simclr-cifar10-solo.ckpt"
    torch.save({"epoch": 999, "global_step": 195000, "pytorch-lightning_version": "2.0.0", "state_dict": state,
                "hyper_parameters": {"method": "simclr"}}, path)
    return path


def open_clip_folder(folder: Path) -> Path:
    import open_clip

    from tests.models.image_text.test_image_text_adapters import TINY_OPEN_CLIP

    out = folder / "tiny-open-clip"
    out.mkdir()
    (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_OPEN_CLIP, "preprocess_cfg": {}}))
    cfg_dir = folder / "open_clip_cfg"
    cfg_dir.mkdir()
    (cfg_dir / "clbench-rehearsal-tiny.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(cfg_dir)
    torch.manual_seed(6)
    model = open_clip.create_model("clbench-rehearsal-tiny", pretrained=None)
    torch.save(model.state_dict(), out / "open_clip_pytorch_model.bin")
    return out


def tiny_rn_clip(folder: Path) -> Path:
    from tests.models.image_text.test_denseclip_open_clip import save_tiny_rn_clip

    return save_tiny_rn_clip(folder, TINY_RN_CLIP_NAME, seed=8)[1]


def qwen2_vl_folder(folder: Path) -> Path:
    from tests.vlm_helpers import save_tiny_qwen2_vl

    return save_tiny_qwen2_vl(folder / "tiny-qwen2-vl")


def gpt2_folder(folder: Path) -> Path:
    from cl_bench.models.lm.tiny_lm import build_tiny_gpt2

    torch.manual_seed(7)
    out = folder / "tiny-gpt2"
    build_tiny_gpt2({"n_layer": 2, "n_embd": 64, "n_head": 2, "n_positions": 1024}).save_pretrained(out)
    return out


def bert_folder(folder: Path) -> Path:
    from tests.text_helpers import save_tiny_bert

    return save_tiny_bert(folder / "tiny-bert")


FABRICATE = {"r50-moco": r50_moco, "r18-solo": r18_solo, "open-clip": open_clip_folder, "tiny-rn-clip": tiny_rn_clip,
             "qwen2-vl": qwen2_vl_folder,
             "gpt2": gpt2_folder, "bert": bert_folder}


def fabricate_all(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return {name: make(folder) for name, make in FABRICATE.items()}
