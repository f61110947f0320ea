"""Encoders (small-resnet, resnet18/50, raw-pixels) and model fingerprints."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from cl_bench import components
from cl_bench.errors import ClBenchError
from cl_bench.models.weights.fingerprint import file_sha256, model_fingerprint


def build(
    name: str, params: dict | None = None, channels: int = 1, size: int = 32, seed: int = 0
) -> nn.Module:
    torch.manual_seed(seed)
    return components.get("arch", name)(params or {}, in_channels=channels, image_size=(size, size)).eval()


def images(channels: int, size: int, n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def test_all_archs_registered() -> None:
    assert {"small-resnet", "resnet18", "resnet50", "raw-pixels"} <= set(components.names("arch"))


# ---------------------------------------------------------------- small-resnet


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [8, 32])
def test_small_resnet_shapes(channels: int, size: int) -> None:
    enc = build("small-resnet", channels=channels, size=size)
    assert enc.embed_dim == 128
    assert enc(images(channels, size)).shape == (2, 128)
    s = size // 2 if size >= 32 else size  # auto stem: stride 2 from 32 px on
    maps = enc.feature_maps(images(channels, size))
    assert {k: tuple(v.shape) for k, v in maps.items()} == {
        "stem": (2, 32, s, s),
        "stage1": (2, 32, s, s),
        "stage2": (2, 64, s // 2, s // 2),
        "stage3": (2, 128, s // 4, s // 4),
    }
    assert torch.allclose(maps["stage3"].mean(dim=(2, 3)), enc(images(channels, size)), atol=1e-6)


def test_small_resnet_width_blocks_and_stem() -> None:
    enc = build("small-resnet", {"width": 8, "blocks": [2, 1, 1, 3], "stem_stride": 1}, size=16)
    assert enc.embed_dim == 64
    assert [len(stage) for stage in enc.stages] == [2, 1, 1, 3]
    maps = enc.feature_maps(images(1, 16))
    assert [tuple(m.shape[1:]) for m in maps.values()] == [
        (8, 16, 16),
        (8, 16, 16),
        (16, 8, 8),
        (32, 4, 4),
        (64, 2, 2),
    ]


def _ref_bn(x: torch.Tensor, sd: dict, name: str) -> torch.Tensor:
    return F.batch_norm(
        x,
        sd[f"{name}.running_mean"],
        sd[f"{name}.running_var"],
        sd[f"{name}.weight"],
        sd[f"{name}.bias"],
        False,
        0.0,
        1e-5,
    )


def _ref_small_resnet(x: torch.Tensor, sd: dict, mean: float, std: float, blocks: list[int]) -> torch.Tensor:
    """Independent forward from the state dict with functional ops (eval-mode BN)."""
    x = (x - mean) / std
    x = F.relu(_ref_bn(F.conv2d(x, sd["stem.0.weight"], stride=2, padding=1), sd, "stem.1"))
    for i, n in enumerate(blocks):
        for j in range(n):
            p = f"stages.{i}.{j}"
            stride = 2 if (i > 0 and j == 0) else 1
            h = F.relu(
                _ref_bn(F.conv2d(x, sd[f"{p}.conv1.weight"], stride=stride, padding=1), sd, f"{p}.bn1")
            )
            h = _ref_bn(F.conv2d(h, sd[f"{p}.conv2.weight"], padding=1), sd, f"{p}.bn2")
            short = x
            if f"{p}.shortcut.0.weight" in sd:
                short = _ref_bn(
                    F.conv2d(x, sd[f"{p}.shortcut.0.weight"], stride=stride), sd, f"{p}.shortcut.1"
                )
            x = F.relu(h + short)
    return x.mean(dim=(2, 3))


def test_small_resnet_matches_functional_reference() -> None:
    enc = build("small-resnet", {"blocks": [2, 1, 1], "mean": 0.4, "std": 0.3}, size=32)
    with torch.no_grad():  # non-trivial BN statistics so eval-mode BN matters
        for name, buf in enc.named_buffers():
            if name.endswith("running_mean"):
                buf.uniform_(-0.2, 0.2)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
        x = images(1, 32, n=3)
        got = enc(x)
        want = _ref_small_resnet(x, enc.state_dict(), 0.4, 0.3, [2, 1, 1])
    assert torch.allclose(got, want, atol=1e-5)


def test_small_resnet_init_follows_global_seed() -> None:
    a, b, c = (build("small-resnet", seed=s).state_dict() for s in (3, 3, 4))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["stem.0.weight"], c["stem.0.weight"])


def test_small_resnet_zero_init_residual() -> None:
    enc = build("small-resnet", {"zero_init_residual": True})
    assert all(not b.bn2.weight.detach().any() for s in enc.stages for b in s)


def test_normalisation_per_channel() -> None:
    enc = build("small-resnet", {"mean": [0.1, 0.2, 0.3], "std": 0.5}, channels=3)
    x = images(3, 8)
    want = (x - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / 0.5
    assert torch.allclose(enc.normalize(x), want)
    assert "normalize.mean" not in enc.state_dict()


@pytest.mark.parametrize(
    "params, field",
    [
        ({"widht": 32}, "widht"),
        ({"width": 0}, "width"),
        ({"mean": [0.1, 0.2]}, "mean"),
        ({"std": -1.0}, "std"),
        ({"blocks": [1, 0]}, "blocks"),
        ({"stem_stride": 3}, "stem_stride"),
    ],
)
def test_small_resnet_bad_params(params: dict, field: str) -> None:
    with pytest.raises(ClBenchError, match=field):
        build("small-resnet", params, channels=3)


# ---------------------------------------------------------------- torchvision resnets


@pytest.mark.parametrize(
    "name, dim, channels, size",
    [("resnet18", 512, c, s) for c in (1, 3) for s in (8, 32, 64)]
    + [("resnet50", 2048, c, s) for c in (1, 3) for s in (8, 32)],
)
def test_resnet_embed_shapes(name: str, dim: int, channels: int, size: int) -> None:
    enc = build(name, channels=channels, size=size)
    assert enc.embed_dim == dim
    assert enc(images(channels, size)).shape == (2, dim)


@pytest.mark.parametrize(
    "name, widths", [("resnet18", [64, 128, 256, 512]), ("resnet50", [256, 512, 1024, 2048])]
)
def test_resnet_feature_maps(name: str, widths: list[int]) -> None:
    enc = build(name, channels=3, size=64)
    maps = enc.feature_maps(images(3, 64))
    assert list(maps) == ["res2", "res3", "res4", "res5"]
    assert [tuple(m.shape) for m in maps.values()] == [
        (2, w, 16 // 2**i, 16 // 2**i) for i, w in enumerate(widths)
    ]


@pytest.mark.parametrize("channels", [1, 3])
def test_resnet18_matches_torchvision(channels: int) -> None:
    enc = build("resnet18", channels=channels, size=32)
    ref = torchvision.models.resnet18(weights=None)
    ref.fc = nn.Identity()
    ref.load_state_dict(enc.state_dict())  # same keys as torchvision without fc
    ref.eval()
    x = images(channels, 32)
    x3 = x.repeat(1, 3, 1, 1) if channels == 1 else x
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(enc(x), ref((x3 - mean) / std), atol=1e-5)


def test_resnet_state_dict_keys_are_torchvision() -> None:
    keys = list(build("resnet50", channels=3).state_dict())
    tv = [k for k in torchvision.models.resnet50(weights=None).state_dict() if not k.startswith("fc.")]
    assert keys == tv


def test_resnet_options() -> None:
    enc = build("resnet18", {"zero_init_residual": True, "stem": "cifar"}, channels=3, size=32)
    assert enc.conv1.weight.shape == (64, 3, 3, 3)
    assert all(not b.bn2.weight.detach().any() for b in enc.layer1)
    assert enc.feature_maps(images(3, 32))["res2"].shape == (2, 64, 32, 32)


def test_resnet_rejects_bad_input() -> None:
    with pytest.raises(ClBenchError, match="1- or 3-channel"):
        build("resnet18", channels=2)
    with pytest.raises(ClBenchError, match="pretrained"):
        build("resnet18", {"pretrained": True})
    with pytest.raises(ClBenchError, match="mean"):
        build("resnet18", {"mean": [0.5, 0.5]})


# ---------------------------------------------------------------- raw-pixels


@pytest.mark.parametrize("channels, size", [(1, 8), (3, 8), (1, 32), (3, 32)])
def test_raw_pixels(channels: int, size: int) -> None:
    enc = build("raw-pixels", channels=channels, size=size)
    x = images(channels, size, n=3)
    assert enc.embed_dim == channels * size * size
    assert isinstance(enc, nn.Module) and len(enc.state_dict()) == 0
    assert torch.equal(enc(x), x.reshape(3, -1))
    assert torch.equal(enc(x)[1, size + 2], x[1, 0, 1, 2])  # row-major C, H, W


def test_raw_pixels_takes_no_params() -> None:
    with pytest.raises(ClBenchError, match="width"):
        build("raw-pixels", {"width": 3})


# ---------------------------------------------------------------- fingerprints


def test_fingerprint_stable_and_sensitive_to_one_weight() -> None:
    a, b = build("small-resnet", seed=0), build("small-resnet", seed=0)
    fp = model_fingerprint(a)
    assert fp == model_fingerprint(a) == model_fingerprint(b)
    with torch.no_grad():
        b.stages[2][0].conv2.weight[5, 3, 1, 1] += 1e-6
    assert model_fingerprint(b) != fp
    assert model_fingerprint(build("small-resnet", seed=1)) != fp


def test_fingerprint_sees_buffers_layout_free() -> None:
    a = build("small-resnet")
    fp = model_fingerprint(a)
    assert model_fingerprint(build("small-resnet", {"mean": 0.4})) != fp  # non-persistent buffer
    with torch.no_grad():
        a.stem[1].running_var[0] += 0.5
    assert model_fingerprint(a) != fp
    c = build("small-resnet").to(memory_format=torch.channels_last)
    assert model_fingerprint(c) == fp


def test_fingerprint_extra_for_parameter_free() -> None:
    a, b = build("raw-pixels"), build("raw-pixels", channels=3)
    assert model_fingerprint(a, extra="x") == model_fingerprint(b, extra="x")
    assert model_fingerprint(a, extra="x") != model_fingerprint(a, extra="y")


def test_fingerprint_format_by_hand() -> None:
    lin = nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.5, -2.0]]))
        lin.bias.fill_(0.25)
    h = hashlib.sha256(b"cl_bench.model_fingerprint.v1\0extra=tag\0")
    for key, arr in [("bias", np.array([0.25], np.float32)), ("weight", np.array([[1.5, -2.0]], np.float32))]:
        h.update(f"{key}\0torch.float32\0{arr.shape}\0{arr.nbytes}\0".encode() + arr.tobytes())
    assert model_fingerprint(lin, extra="tag") == h.hexdigest()


def test_file_sha256_streams(tmp_path) -> None:
    data = np.random.default_rng(0).integers(0, 256, 10_000, dtype=np.uint8).tobytes()
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert file_sha256(path, chunk_size=999) == hashlib.sha256(data).hexdigest()
