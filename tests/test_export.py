"""clbench export: detectron2 / mmdet / mmseg key layouts and file formats."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from cl_bench import components
from cl_bench.errors import ClBenchError
from cl_bench.export import cli_export, detectron2_name, export
from cl_bench.models.weights.checkpoint import load_into


def _encoder(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return components.get("arch", name)({}, in_channels=3, image_size=(64, 64))


def _detectron2_resnet_keys(blocks: list[int], bottleneck: bool) -> set[str]:
    """detectron2's ResNet parameter/buffer names, written out from its module structure."""
    bn = ["weight", "bias", "running_mean", "running_var"]
    keys = {"stem.conv1.weight"} | {f"stem.conv1.norm.{b}" for b in bn}
    convs = 3 if bottleneck else 2
    for stage, n in enumerate(blocks, start=2):
        for i in range(n):
            for c in range(1, convs + 1):
                keys.add(f"res{stage}.{i}.conv{c}.weight")
                keys |= {f"res{stage}.{i}.conv{c}.norm.{b}" for b in bn}
            if i == 0 and (bottleneck or stage > 2):  # a projection shortcut where the shape changes
                keys.add(f"res{stage}.{i}.shortcut.weight")
                keys |= {f"res{stage}.{i}.shortcut.norm.{b}" for b in bn}
    return keys


def test_detectron2_names_by_hand() -> None:
    assert detectron2_name("conv1.weight") == "stem.conv1.weight"
    assert detectron2_name("bn1.running_var") == "stem.conv1.norm.running_var"
    assert detectron2_name("layer1.0.bn2.weight") == "res2.0.conv2.norm.weight"
    assert detectron2_name("layer3.0.downsample.0.weight") == "res4.0.shortcut.weight"
    assert detectron2_name("layer3.0.downsample.1.bias") == "res4.0.shortcut.norm.bias"
    assert detectron2_name("layer4.2.conv3.weight") == "res5.2.conv3.weight"


def test_moco_style_checkpoint_to_detectron2(tmp_path: Path) -> None:
    enc = _encoder("resnet50")
    sd = enc.state_dict()
    blob = {f"module.encoder_q.{k}": v for k, v in sd.items()}
    blob.update({f"module.encoder_k.{k}": v + 1 for k, v in sd.items()})  # momentum copy: must not win
    blob["module.encoder_q.fc.0.weight"] = torch.zeros(2048, 2048)
    blob["module.queue"] = torch.zeros(128, 10)
    ckpt = tmp_path / "moco.pth.tar"
    torch.save({"state_dict": blob, "epoch": 200}, ckpt)
    out = tmp_path / "r50.pkl"
    report = export(ckpt, out, "detectron2")
    with open(out, "rb") as f:
        d2 = pickle.load(f)  # our own file, written a line above
    assert d2["__author__"] == "cl_bench" and d2["matching_heuristics"] is True
    model = d2["model"]
    assert set(model) == _detectron2_resnet_keys([3, 4, 6, 3], bottleneck=True)
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            continue
        assert np.array_equal(model[detectron2_name(k)], v.numpy()), k
    assert report["prefix"] == "module.encoder_q." and report["n_exported"] == len(model)


def test_resnet18_names_and_mmdet_roundtrip(tmp_path: Path) -> None:
    enc = _encoder("resnet18")
    ckpt = tmp_path / "encoder.safetensors"
    save_file({k: v.contiguous() for k, v in enc.state_dict().items()}, str(ckpt))
    export(ckpt, tmp_path / "r18.pkl", "detectron2")
    with open(tmp_path / "r18.pkl", "rb") as f:
        assert set(pickle.load(f)["model"]) == _detectron2_resnet_keys([2, 2, 2, 2], bottleneck=False)
    for to in ("mmdet", "mmseg"):
        out = tmp_path / f"r18_{to}.pth"
        export(ckpt, out, to)
        saved = torch.load(out, weights_only=True)
        expect = {k for k in enc.state_dict() if not k.endswith("num_batches_tracked")}
        assert set(saved["state_dict"]) == expect
        fresh = _encoder("resnet18")
        torch.nn.init.zeros_(fresh.conv1.weight)
        load_into(fresh, out)
        assert torch.equal(fresh.conv1.weight, enc.conv1.weight)


def test_cli_export_prints_the_config_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    enc = _encoder("resnet18")
    ckpt = tmp_path / "e.safetensors"
    save_file({k: v.contiguous() for k, v in enc.state_dict().items()}, str(ckpt))
    assert cli_export(str(ckpt), str(tmp_path / "o.pkl"), "detectron2") == 0
    out = capsys.readouterr().out
    assert "STRIDE_IN_1X1 False" in out and "exported" in out


def test_errors(tmp_path: Path) -> None:
    small = components.get("arch", "small-resnet")({"width": 8}, in_channels=3, image_size=(32, 32))
    ckpt = tmp_path / "small.safetensors"
    save_file({k: v.contiguous() for k, v in small.state_dict().items()}, str(ckpt))
    with pytest.raises(ClBenchError, match="no torchvision-layout ResNet"):
        export(ckpt, tmp_path / "x.pkl", "detectron2")
    enc = _encoder("resnet18")
    good = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in enc.state_dict().items()}, str(good))
    with pytest.raises(ClBenchError, match=r"\.pkl"):
        export(good, tmp_path / "x.pth", "detectron2")
    with pytest.raises(ClBenchError, match=r"\.pth"):
        export(good, tmp_path / "x.pkl", "mmdet")
    with pytest.raises(ClBenchError, match="--to"):
        export(good, tmp_path / "x.pkl", "onnx")
    with pytest.raises(ClBenchError, match="does not exist"):
        export(tmp_path / "missing.pth", tmp_path / "x.pkl", "detectron2")
