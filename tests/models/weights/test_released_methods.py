"""Released checkpoints of the seed methods: the loaders' module graph, the declared layouts, and
each ``baselines/<method>-<arch>`` file loading a state dict fabricated in its authors' exact
key layout (written from their code)."""

from __future__ import annotations

import ast
from functools import partial
from pathlib import Path

import torch
from torch import nn

from cl_bench.models.weights import checkpoint, released_formats

PACKAGE = Path(checkpoint.__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, at the top or inside a function."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_released_formats_does_not_import_the_checkpoint_loader() -> None:
    """One direction only: checkpoint -> released_formats, never back (no import circle)."""
    weights = PACKAGE / "models" / "weights"
    assert "cl_bench.models.weights.released_formats" in imported_modules(weights / "checkpoint.py")
    assert "cl_bench.models.weights.checkpoint" not in imported_modules(weights / "released_formats.py")


def test_one_container_list_for_both_readers(tmp_path: Path) -> None:
    assert checkpoint.CONTAINER_KEYS is released_formats.CONTAINER_KEYS
    weights = {"conv.weight": torch.ones(2, 2)}
    path = tmp_path / "ckpt.pth"
    torch.save({"model_state_dict": weights, "epoch": 3}, path)  # the container the two used to disagree on
    assert set(checkpoint.read_state_dict(path)) == {"conv.weight"}
    assert released_formats.read_released(path).layout == "model_state_dict"
    assert set(released_formats.read_released_state_dict(path)) == {"conv.weight"}


# ------------------------------------------------------------------------------------------ helpers


def obtain(method_id: str, checkpoint: Path, tmp_path: Path, data: object = None, **overrides: object):
    data = Images(224) if data is None else data
    """The method's model with ``checkpoint`` loaded, as ``clbench run --method M --checkpoint F`` does."""
    from cl_bench.cache import Cache
    from cl_bench.obtain import obtain_model, with_arch_params
    from cl_bench.registry import Registry

    method = with_arch_params(Registry().method(method_id), dict(overrides))
    return obtain_model(method, data, seed=0, device=torch.device("cpu"), cache=Cache(tmp_path / "cache"),
                        checkpoint=checkpoint)


class Images:  # the image facts an arch builder needs
    def __init__(self, size: int, channels: int = 3) -> None:
        self.arch_inputs = {"in_channels": channels, "image_size": (size, size)}


def ddp(module: nn.Module) -> dict[str, torch.Tensor]:
    """``DistributedDataParallel(module).state_dict()``: every key under ``module.``."""
    return {f"module.{k}": v for k, v in module.state_dict().items()}


def assert_loaded(model: nn.Module, want: dict[str, torch.Tensor], prefix: str) -> None:
    """Every backbone tensor of the file (under ``prefix``) landed, unchanged, and nothing else is in the model."""
    got = model.state_dict()
    expected = {k[len(prefix):]: v for k, v in want.items() if k.startswith(prefix)}
    assert set(got) == set(expected)
    for k, v in got.items():
        assert torch.equal(v, expected[k]), k


def dropped_exactly(report: dict, state: dict[str, torch.Tensor], heads: list[str]) -> None:
    """The loader dropped exactly the keys under the documented head prefixes."""
    assert sorted(report["dropped"]) == sorted(k for k in state if any(k.startswith(h) for h in heads))


def perturb(module: nn.Module, seed: int) -> nn.Module:
    """Give every float tensor its own values (as training does: no copy equals its initialisation)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for v in module.state_dict().values():
            if v.is_floating_point():
                v.add_(0.01 * torch.randn(v.shape, generator=g))
    return module


# ------------------------------------------------------------------------------------------ CACR


def moco_v3_mlp(num_layers: int, input_dim: int, mlp_dim: int, output_dim: int, last_bn: bool = True) -> nn.Sequential:
    """MoCo v3's ``_build_mlp`` (CACR-SSL imagenet_pretraining/moco/builder.py), written out again:
    bias-free Linear layers, BN + ReLU between them, a final BN without affine parameters."""
    layers: list[nn.Module] = []
    for i in range(num_layers):
        d_in = input_dim if i == 0 else mlp_dim
        d_out = output_dim if i == num_layers - 1 else mlp_dim
        layers.append(nn.Linear(d_in, d_out, bias=False))
        if i < num_layers - 1:
            layers += [nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(d_out, affine=False))
    return nn.Sequential(*layers)


class MoCoV3(nn.Module):
    """``MoCo_ResNet`` / ``MoCo_ViT`` of the CACR release: base and momentum encoders whose classifier
    (``fc`` / ``head``) is replaced by the projection MLP, and a predictor."""

    def __init__(self, make_encoder, head: str, proj_layers: int, hidden: int, dim: int, mlp_dim: int) -> None:
        super().__init__()
        self.base_encoder, self.momentum_encoder = make_encoder(), make_encoder()
        for enc in (self.base_encoder, self.momentum_encoder):
            setattr(enc, head, moco_v3_mlp(proj_layers, hidden, mlp_dim, dim))
        self.predictor = moco_v3_mlp(2, dim, mlp_dim, dim, last_bn=head == "head")


def save_moco_v3(model: nn.Module, path: Path, arch: str) -> dict[str, torch.Tensor]:
    state = ddp(model)
    torch.save({"epoch": 100, "arch": arch, "state_dict": state, "optimizer": {"state": {}, "param_groups": []},
                "scaler": {"scale": 65536.0, "growth_factor": 2.0}}, path)
    return state


CACR_HEADS_R50 = ["module.base_encoder.fc.", "module.momentum_encoder.", "module.predictor."]


def test_cacr_r50_release(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(0)
    make = partial(torchvision.models.resnet50, num_classes=64, zero_init_residual=True)  # mlp_dim 64 (4096)
    model = perturb(MoCoV3(make, "fc", 2, 2048, dim=16, mlp_dim=64), seed=1)
    path = tmp_path / "cacr_r50_1000ep.pth.tar"
    state = save_moco_v3(model, path, "resnet50")
    got = obtain("cacr-r50", path, tmp_path)
    assert got.source == "checkpoint" and got.checkpoint["prefix"] == "module.base_encoder."
    assert_loaded(got.model, {k: v for k, v in state.items() if ".fc." not in k}, "module.base_encoder.")
    dropped_exactly(got.checkpoint, state, CACR_HEADS_R50)
    assert got.checkpoint["n_loaded"] == len(got.model.state_dict())


def test_cacr_vit_release(tmp_path: Path) -> None:
    import timm
    from timm.models.vision_transformer import VisionTransformer

    small = {"img_size": 32, "embed_dim": 32, "depth": 2, "num_heads": 2}  # ViT-Base: 224, 768, 12, 12
    torch.manual_seed(0)
    make = partial(VisionTransformer, patch_size=16, mlp_ratio=4, qkv_bias=True,
                   norm_layer=partial(nn.LayerNorm, eps=1e-6), num_classes=64, **small)
    model = perturb(MoCoV3(make, "head", 3, small["embed_dim"], dim=16, mlp_dim=64), seed=2)
    path = tmp_path / "cacr_vit_b_300ep.pth.tar"
    state = save_moco_v3(model, path, "vit_base")
    got = obtain("cacr-vit-b16", path, tmp_path, data=Images(32), kwargs={k: v for k, v in small.items()})
    assert_loaded(got.model, {k: v for k, v in state.items() if ".head." not in k}, "module.base_encoder.")
    dropped_exactly(got.checkpoint, state, ["module.base_encoder.head.", "module.momentum_encoder.", "module.predictor."])
    # the feature is the class token after the final norm (MoCo v3's linear evaluation input)
    x = torch.rand(2, 3, 32, 32)
    base = model.base_encoder.eval()
    with torch.no_grad():
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        want = base.forward_features((x - mean) / std)[:, 0]
        assert torch.allclose(got.model(x), want, atol=1e-5)
    assert timm.is_model("vit_base_patch16_224")


def test_a_file_in_another_layout_is_refused_by_a_released_method(tmp_path: Path) -> None:
    import torchvision

    from cl_bench.errors import ClBenchError

    r50 = torchvision.models.resnet50()
    path = tmp_path / "moco_v2.pth.tar"
    torch.save({"state_dict": {f"module.encoder_q.{k}": v for k, v in r50.state_dict().items()}}, path)
    try:
        obtain("cacr-r50", path, tmp_path)
    except ClBenchError as e:
        assert "not in the released layout" in str(e) and "module.encoder_q." in str(e)
    else:
        raise AssertionError("a MoCo v2 file loaded as the CACR release")
    assert obtain("resnet50", path, tmp_path).checkpoint["prefix"] == "module.encoder_q."  # the generic method takes it


def test_pixpro_release_layout_is_declared(tmp_path: Path) -> None:
    """PixPro's model (contrast/models/PixPro.py, transform layer 1, instance branch on): the online
    encoder module.encoder.* is kept, every other documented module dropped."""
    import argparse

    from cl_bench.registry import Registry

    torch.manual_seed(0)
    enc = checkpoint_free_resnet("resnet50")
    mlp2d = lambda d_in, inner, out: {"linear1.weight": torch.randn(inner, d_in, 1, 1), "linear1.bias": torch.randn(inner),  # noqa: E731
                                      "bn1.weight": torch.rand(inner), "bn1.bias": torch.rand(inner),
                                      "bn1.running_mean": torch.rand(inner), "bn1.running_var": torch.rand(inner),
                                      "bn1.num_batches_tracked": torch.tensor(5), "linear2.weight": torch.randn(out, inner, 1, 1),
                                      "linear2.bias": torch.randn(out)}
    model = {**{f"module.encoder.{k}": v for k, v in enc.items()},
             **{f"module.encoder_k.{k}": v + 1 if v.is_floating_point() else v for k, v in enc.items()}}
    for name, (d_in, inner) in {"projector": (2048, 64), "projector_k": (2048, 64), "projector_instance": (2048, 64),
                                "projector_instance_k": (2048, 64), "predictor": (16, 64)}.items():
        model.update({f"module.{name}.{k}": v for k, v in mlp2d(d_in, inner, 16).items()})
    model.update({"module.value_transform.weight": torch.randn(16, 16, 1, 1), "module.value_transform.bias": torch.randn(16)})
    path = tmp_path / "pixpro_base_r50_400ep_md5_919c6612.pth"
    opt = argparse.Namespace(arch="resnet50", pixpro_transform_layer=1, pixpro_ins_loss_weight=1.0)
    torch.save({"opt": opt, "model": model, "optimizer": {}, "scheduler": {}, "epoch": 400}, path)
    got = obtain("pixpro-r50", path, tmp_path)
    assert_loaded(got.model, model, "module.encoder.")
    dropped_exactly(got.checkpoint, model, Registry().method("pixpro-r50").released.dropped)


def checkpoint_free_resnet(name: str) -> dict[str, torch.Tensor]:
    import torchvision

    net = getattr(torchvision.models, name)()
    return {k: v for k, v in perturb(net, seed=5).state_dict().items() if not k.startswith("fc.")}


# ------------------------------------------------------------------------------------------ ScatSimCLR


class ResBlock(nn.Module):
    """vkinakh/scatsimclr ``ResBlock``: conv3x3-BN-ReLU-conv3x3-BN plus the (downsampled) input, ReLU."""

    def __init__(self, inplanes: int, planes: int, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class AuthorsScatSimCLR(nn.Module):
    """``ScatSimCLR(J, L, input_size, res_blocks, out_dim)`` of src/models/scatnet_simclr.py, written
    out again with the reference library (kymatio) for the scattering."""

    LAYERS = {8: [(64, 4), (128, 4)], 30: [(128, 30)]}

    def __init__(self, J: int, L: int, size: int, channels: int, res_blocks: int, out_dim: int = 16) -> None:
        super().__init__()
        from kymatio.scattering2d.frontend.torch_frontend import ScatteringTorch2D

        k = channels * ((L * L * J * (J - 1)) // 2 + L * J + 1)
        self._scatnet = ScatteringTorch2D(J=J, shape=(size, size), L=L, max_order=2)
        self._scatnet_bn = nn.BatchNorm2d(k)
        inplanes = 32 if res_blocks == 8 else 256
        layers: list[nn.Module] = [nn.Conv2d(k, inplanes, 3, 1, 1, bias=False), nn.BatchNorm2d(inplanes), nn.ReLU(True)]
        for planes, blocks in self.LAYERS[res_blocks]:
            down = None
            if inplanes != planes:
                down = nn.Sequential(nn.Conv2d(inplanes, planes, 1, 1, bias=False), nn.BatchNorm2d(planes))
            layers.append(nn.Sequential(ResBlock(inplanes, planes, down), *[ResBlock(planes, planes) for _ in range(blocks - 1)]))
            inplanes = planes
        layers.append(nn.AdaptiveAvgPool2d(4))
        self._adapter_network = nn.Sequential(*layers)
        self.l1 = nn.Linear(128 * 16, 128 * 16)
        self.l2 = nn.Linear(128 * 16, out_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self._scatnet(x).squeeze(1)
        b, c, fn, h, w = s.shape
        h_ = self._adapter_network(self._scatnet_bn(s.view(b, c * fn, h, w))).view(b, -1)
        return h_, self.l2(torch.relu(self.l1(h_)))


SCAT_HEADS = ["_scatnet.", "l1.", "l2."]


class AsKymatio(nn.Module):
    """cl_bench's scattering with kymatio's output shape [B, C, K, h, w]."""

    def __init__(self, scattering: nn.Module) -> None:
        super().__init__()
        self.scattering = scattering

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scattering(x)
        return s.reshape(x.shape[0], x.shape[1], -1, *s.shape[-2:])


def test_scatsimclr_release_keys_at_the_released_configuration(tmp_path: Path) -> None:
    """ScatSimCLR30, J = 2, L = 16 (the STL-10 and CIFAR-20 files), on CIFAR-sized inputs."""
    torch.manual_seed(0)
    model = perturb(AuthorsScatSimCLR(J=2, L=16, size=32, channels=3, res_blocks=30), seed=3)
    state = model.state_dict()
    assert any(k.startswith("_scatnet.tensor") for k in state)  # kymatio keeps its filters as buffers
    path = tmp_path / "model_final.pth"
    torch.save(state, path)
    got = obtain("scatsimclr-cifar20", path, tmp_path, data=Images(32))
    assert got.model.embed_dim == 2048
    assert_loaded(got.model, {k: v for k, v in state.items() if not k.startswith(tuple(SCAT_HEADS))}, "")
    dropped_exactly(got.checkpoint, state, SCAT_HEADS)


def test_scatsimclr_release_features_match_the_authors_network(tmp_path: Path) -> None:
    """The loaded network's representation is their h (kymatio scattering, their adapter), at a small
    configuration (L = 4, 8 residual blocks) so the reference runs quickly."""
    torch.manual_seed(1)
    model = perturb(AuthorsScatSimCLR(J=2, L=4, size=32, channels=3, res_blocks=8), seed=4).eval()
    path = tmp_path / "model_8.pth"
    torch.save(model.state_dict(), path)
    got = obtain("scatsimclr-cifar20", path, tmp_path, data=Images(32), L=4, res_blocks=8)
    x = torch.rand(3, 3, 32, 32)
    mean = torch.tensor([0.491, 0.482, 0.447]).view(1, 3, 1, 1)
    std = torch.tensor([0.247, 0.243, 0.261]).view(1, 3, 1, 1)
    with torch.no_grad():
        want, _ = model((x - mean) / std)
        have = got.model(x)
        # the same network on the same coefficients: feed ours (tested against kymatio in
        # test_scattering) through their module, and the two agree to float precision
        model._scatnet = AsKymatio(got.model._scatnet)
        same, _ = model((x - mean) / std)
    assert have.shape == want.shape == (3, 2048)
    torch.testing.assert_close(have, same, rtol=1e-5, atol=1e-6)
    # with kymatio's own scattering: its 3.1415-for-pi Gaussian normalisation (a 3e-5 relative gap in
    # the coefficients) grows through 8 residual blocks of untrained weights, still well under 1 %
    assert float((have - want).norm() / want.norm()) < 1e-2
