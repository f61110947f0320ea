"""Released checkpoints in each project's exact key layout land on the torchvision/timm encoders.

Every test builds a synthetic checkpoint in the layout that project publishes (containers, key
prefixes, heads, momentum copies and the pickled extras), loads it through the checkpoint loader
with ``released_formats`` plugged in (the one-line change proposed for ``checkpoint.load_into``),
and checks that every backbone weight lands and the heads are dropped and reported.
"""

from __future__ import annotations

import argparse
import itertools
import pickle
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from cl_bench import components
from cl_bench.errors import ClBenchError
from cl_bench.models.weights import checkpoint
from cl_bench.models.weights.released_formats import (
    InertObject,
    flatten_tensors,
    is_dangerous,
    read_released,
    read_released_state_dict,
    rename_resnet_sequential,
    resnet_sequential_prefixes,
)

LAYERS = ("layer1", "layer2", "layer3", "layer4")


def build(name: str, params: dict | None = None, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return components.get("arch", name)(params or {}, in_channels=3, image_size=(32, 32))


def backbone(params: dict | None = None, name: str = "resnet18", seed: int = 7) -> dict[str, torch.Tensor]:
    """A backbone state dict with distinct values everywhere (BN statistics included)."""
    state = {k: v.clone() for k, v in build(name, params, seed).state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    for v in state.values():
        if v.is_floating_point():
            v.copy_(torch.rand(v.shape, generator=g) + 0.1)
        else:
            v.fill_(17)
    return state


def prefixed(state: dict[str, torch.Tensor], prefix: str, shift: float = 0.0) -> dict[str, torch.Tensor]:
    return {prefix + k: (v + shift if v.is_floating_point() else v) for k, v in state.items()}


def fc(prefix: str, *dims: int) -> dict[str, torch.Tensor]:
    """An MLP head ``prefix.0``, ``prefix.2`` ... with the given widths (weights and biases)."""
    out = {}
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        out[f"{prefix}.{2 * i}.weight"] = torch.randn(b, a)
        out[f"{prefix}.{2 * i}.bias"] = torch.randn(b)
    return out


@pytest.fixture
def released(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The proposed one-line change: ``load_into`` reads files through ``read_released_state_dict``."""
    monkeypatch.setattr(checkpoint, "read_state_dict", read_released_state_dict)
    yield


def load_and_check(
    arch: str, path: Path, want: dict[str, torch.Tensor], params: dict | None = None
) -> checkpoint.LoadReport:
    enc = build(arch, params, seed=1)
    report = checkpoint.load_into(enc, path)
    got = enc.state_dict()
    assert set(got) == set(want)
    for k in got:
        assert torch.equal(got[k], want[k]), k
    assert report.n_loaded == len(want) and report.missing == []
    return report


@pytest.fixture(scope="module")
def r18() -> dict[str, torch.Tensor]:
    return backbone()


@pytest.fixture(scope="module")
def r18_cifar() -> dict[str, torch.Tensor]:
    return backbone({"stem": "cifar"})


# ------------------------------------------------------------------------- MoCo / PixPro / SimCLR / CACR


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_moco_v1_v2(tmp_path: Path, r18: dict, released: None, version: str) -> None:
    head = {"module.encoder_q.fc.weight": torch.randn(128, 512), "module.encoder_q.fc.bias": torch.randn(128)}
    if version == "v2":
        head = {**fc("module.encoder_q.fc", 512, 512, 128)}
    state = {
        **prefixed(r18, "module.encoder_q."),
        **head,
        **prefixed(r18, "module.encoder_k.", shift=5.0),
        **{k.replace("_q.", "_k."): v for k, v in head.items()},
        "module.queue": torch.randn(128, 65536),
        "module.queue_ptr": torch.zeros(1, dtype=torch.long),
    }
    path = tmp_path / f"moco_{version}_200ep_pretrain.pth.tar"
    torch.save(
        {
            "epoch": 200,
            "arch": "resnet18",
            "state_dict": state,
            "optimizer": {"state": {}, "param_groups": []},
        },
        path,
    )
    report = load_and_check("resnet18", path, r18)
    assert report.prefix == "module.encoder_q."
    assert set(report.dropped) == set(state) - {f"module.encoder_q.{k}" for k in r18}
    assert read_released(path).layout == "moco"


@pytest.mark.parametrize("project", ["moco-v3", "cacr"])
def test_moco_v3_and_cacr_imagenet(tmp_path: Path, released: None, project: str) -> None:
    r50 = backbone(name="resnet50", seed=3)
    heads = {**fc("module.base_encoder.fc", 2048, 4096, 256), **fc("module.predictor", 256, 4096, 256)}
    heads["module.base_encoder.fc.1.running_mean"] = torch.zeros(4096)
    state = {
        **prefixed(r50, "module.base_encoder."),
        **prefixed(r50, "module.momentum_encoder.", 1.0),
        **heads,
        **{
            k.replace("base_encoder", "momentum_encoder"): v
            for k, v in fc("module.base_encoder.fc", 2048, 4096, 256).items()
        },
    }
    path = tmp_path / f"{project}-r50.pth.tar"
    torch.save(
        {
            "epoch": 100,
            "arch": "resnet50",
            "state_dict": state,
            "optimizer": {},
            "scaler": {"scale": 65536.0},
        },
        path,
    )
    report = load_and_check("resnet50", path, r50)
    assert report.prefix == "module.base_encoder."
    assert (
        "module.predictor.0.weight" in report.dropped and "module.base_encoder.fc.2.weight" in report.dropped
    )
    assert not any(k.startswith("module.base_encoder.layer") for k in report.dropped)


def test_pixpro_with_pickled_argparse_options(tmp_path: Path, r18: dict, released: None) -> None:
    model = {
        **prefixed(r18, "module.encoder."),
        **prefixed(r18, "module.encoder_k.", 2.0),
        "module.projector.linear1.weight": torch.randn(4096, 512),
        "module.projector_k.linear1.weight": torch.randn(4096, 512),
        "module.predictor.linear1.weight": torch.randn(4096, 256),
        "module.value_transform.conv1.weight": torch.randn(256, 256, 1, 1),
    }
    opt = argparse.Namespace(arch="resnet18", pixpro_p=2.0, pixpro_momentum=0.99, epochs=100)
    path = tmp_path / "pixpro_base_r18_100ep_md5_xxx.pth"
    torch.save(
        {"opt": opt, "model": model, "optimizer": {}, "scheduler": {"last_epoch": 5}, "epoch": 100}, path
    )
    with pytest.raises(ClBenchError, match="argparse.Namespace"):  # today's reader refuses it
        checkpoint._read_torch(path)
    report = load_and_check("resnet18", path, r18)
    assert report.prefix == "module.encoder."
    assert (
        "module.projector.linear1.weight" in report.dropped
        and "module.encoder_k.conv1.weight" in report.dropped
    )
    info = read_released(path)
    assert info.layout == "pixpro" and info.placeholders == ["argparse.Namespace"]


def test_simclr_converted_torchvision(tmp_path: Path, r18: dict, released: None) -> None:
    path = tmp_path / "resnet50-1x.pth"
    torch.save(
        {"state_dict": {**r18, "fc.weight": torch.randn(1000, 512), "fc.bias": torch.randn(1000)}}, path
    )
    report = load_and_check("resnet18", path, r18)
    assert report.prefix == "" and report.dropped == ["fc.bias", "fc.weight"]


def test_dcl_release_sequential_without_maxpool(tmp_path: Path, r18_cifar: dict, released: None) -> None:
    """DCL's SimCLR code: ``self.f = nn.Sequential(conv1(3x3), bn1, relu, layer1..4, avgpool)``, head ``g``."""
    seq = {"conv1": "f.0", "bn1": "f.1", "layer1": "f.3", "layer2": "f.4", "layer3": "f.5", "layer4": "f.6"}
    state = {}
    for k, v in r18_cifar.items():
        head, rest = k.split(".", 1)
        state[f"{seq[head]}.{rest}"] = v
    state.update(
        {
            "g.0.weight": torch.randn(512, 512),
            "g.1.weight": torch.randn(512),
            "g.3.weight": torch.randn(128, 512),
        }
    )
    path = tmp_path / "128_0.5_200_512_500_dcl_model.pth"
    torch.save(state, path)
    report = load_and_check("resnet18", path, r18_cifar, {"stem": "cifar"})
    assert report.prefix == "f." and report.dropped == ["g.0.weight", "g.1.weight", "g.3.weight"]
    assert read_released(path).renamed_sequential == {"f.": 3}


# ------------------------------------------------------------------------- SSL libraries


def _fake_module(name: str, **attrs: type) -> types.ModuleType:
    mod = types.ModuleType(name)
    for attr, cls in attrs.items():
        cls.__module__, cls.__qualname__, cls.__name__ = name, attr, attr
        setattr(mod, attr, cls)
    return mod


def save_with_foreign_classes(obj_factory, path: Path, modules: dict[str, dict[str, type]]) -> None:
    """torch.save an object holding instances of classes from modules that exist only while saving."""
    fakes = {name: _fake_module(name, **attrs) for name, attrs in modules.items()}
    for name in list(fakes):  # parent packages too, so "import a.b" resolves while saving
        parts = name.split(".")
        for i in range(1, len(parts)):
            fakes.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    assert not set(fakes) & set(sys.modules)
    sys.modules.update(fakes)
    try:
        torch.save(obj_factory(), path)
    finally:
        for name in fakes:
            del sys.modules[name]


class MARKER:
    path: Path | None = None


def _touch(*_: object) -> None:
    assert MARKER.path is not None
    MARKER.path.write_text("ran")


class DictConfig:  # stands for omegaconf.dictconfig.DictConfig; its hooks would leave a marker
    def __init__(self, content: dict) -> None:
        self.__dict__["_content"] = content

    def __setstate__(self, state: dict) -> None:
        _touch()
        self.__dict__.update(state)


class HistoryBuffer:  # stands for mmengine.logging.history_buffer.HistoryBuffer
    def __init__(self) -> None:
        self._log_history = np.array([0.5, 0.25])
        self._count_history = np.array([1, 1])
        self.max_length = np.int64(1000000)

    def __setstate__(self, state: dict) -> None:
        _touch()
        self.__dict__.update(state)


def test_foreign_hooks_really_run_under_plain_pickle(tmp_path: Path) -> None:
    MARKER.path = tmp_path / "ran"
    path = tmp_path / "cfg.pkl"
    save_with_foreign_classes(
        lambda: {"cfg": DictConfig({"a": 1})}, path, {"omegaconf.dictconfig": {"DictConfig": DictConfig}}
    )
    fakes = {
        "omegaconf": types.ModuleType("omegaconf"),
        "omegaconf.dictconfig": _fake_module("omegaconf.dictconfig", DictConfig=DictConfig),
    }
    sys.modules.update(fakes)
    try:
        torch.load(path, weights_only=False)  # trusted here: the test wrote it
    finally:
        for name in fakes:
            del sys.modules[name]
    assert MARKER.path.exists()  # so "never ran" below means something


def test_solo_learn_lightning_checkpoint(tmp_path: Path, r18_cifar: dict, released: None) -> None:
    MARKER.path = tmp_path / "ran"
    state = {
        **prefixed(r18_cifar, "backbone."),
        **fc("projector", 512, 2048, 256),
        "classifier.weight": torch.randn(10, 512),
        "classifier.bias": torch.randn(10),
        **prefixed(r18_cifar, "momentum_backbone.", 3.0),
    }

    def ckpt() -> dict:
        cfg = DictConfig({"method": "byol", "backbone": {"name": "resnet18"}, "max_epochs": 1000})
        return {
            "epoch": 999,
            "global_step": 195000,
            "pytorch-lightning_version": "2.0.2",
            "state_dict": state,
            "loops": {"fit_loop": {"epoch_progress": {"current": {"ready": 1000}}}},
            "callbacks": {"ModelCheckpoint": {"best_model_score": None, "dirpath": "trained_models/byol"}},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1.0, "params": [0, 1]}]}],
            "lr_schedulers": [{"last_epoch": 999, "base_lrs": [1.0]}],
            "hparams_name": "cfg",
            "hyper_parameters": {"cfg": cfg},
            "hparams_type": DictConfig,
        }

    path = tmp_path / "byol-cifar10-32rhjh2o-ep=999.ckpt"
    save_with_foreign_classes(ckpt, path, {"omegaconf.dictconfig": {"DictConfig": DictConfig}})
    report = load_and_check("resnet18", path, r18_cifar, {"stem": "cifar"})
    assert report.prefix == "backbone."
    assert {"classifier.weight", "projector.0.weight", "momentum_backbone.conv1.weight"} <= set(
        report.dropped
    )
    info = read_released(path)
    assert info.layout == "lightning" and info.placeholders == ["omegaconf.dictconfig.DictConfig"]
    assert not MARKER.path.exists()


@pytest.mark.parametrize("container", ["lightning", "plain"])
def test_lightly_sequential_backbone(tmp_path: Path, r18: dict, released: None, container: str) -> None:
    """lightly: ``backbone = nn.Sequential(*list(resnet.children())[:-1])`` -> ``backbone.<i>.*``."""
    index = {"conv1": 0, "bn1": 1, **{name: 4 + i for i, name in enumerate(LAYERS)}}
    state = {}
    for k, v in r18.items():
        head, rest = k.split(".", 1)
        state[f"backbone.{index[head]}.{rest}"] = v
    state.update(
        {
            "projection_head.layers.0.weight": torch.randn(512, 512),
            "projection_head.layers.3.weight": torch.randn(128, 512),
        }
    )
    path = tmp_path / f"lightly_{container}.ckpt"
    obj = (
        {"state_dict": state, "pytorch-lightning_version": "1.9.0", "epoch": 9}
        if container == "lightning"
        else state
    )
    torch.save(obj, path)
    report = load_and_check("resnet18", path, r18)
    assert report.prefix == "backbone."
    assert report.dropped == ["projection_head.layers.0.weight", "projection_head.layers.3.weight"]
    assert read_released(path).renamed_sequential == {"backbone.": 4}


def test_vissl_classy_state_dict_trunk(tmp_path: Path, r18: dict, released: None) -> None:
    model = {
        "trunk": prefixed(r18, "_feature_blocks."),
        "heads": {
            "0.clf.0.weight": torch.randn(2048, 512),
            "0.clf.0.bias": torch.randn(2048),
            "1.clf.0.weight": torch.randn(128, 2048),
        },
    }
    ckpt = {
        "phase_idx": 199,
        "iteration": 250000,
        "train_phase_idx": 199,
        "loss": {"queue": torch.randn(128, 3840)},
        "classy_state_dict": {
            "train": True,
            "base_model": {"model": model, "meta": {"version": "0.1"}},
            "meters": {},
            "optimizer": {"name": "sgd", "state": {}},
            "phase_idx": 199,
            "train_phase_idx": 199,
            "num_updates": 250000,
            "losses": [0.5, 0.4],
            "hooks": {},
            "loss": {},
        },
    }
    path = tmp_path / "model_final_checkpoint_phase199.torch"
    torch.save(ckpt, path)
    report = load_and_check("resnet18", path, r18)
    assert report.prefix == "trunk._feature_blocks."
    assert report.dropped == ["heads.0.clf.0.bias", "heads.0.clf.0.weight", "heads.1.clf.0.weight"]
    assert read_released(path).layout == "vissl"


def test_vissl_is_not_found_by_the_generic_reader(tmp_path: Path, r18: dict) -> None:
    """Why the layout module is needed: the generic container search finds no VISSL trunk."""
    path = tmp_path / "vissl.torch"
    torch.save(
        {"classy_state_dict": {"base_model": {"model": {"trunk": prefixed(r18, "_feature_blocks.")}}}}, path
    )
    with pytest.raises(ClBenchError, match="no state dict"):
        checkpoint.read_state_dict(path)
    assert set(read_released_state_dict(path)) == {f"trunk._feature_blocks.{k}" for k in r18}


def test_mmselfsup_state_dict_with_mmengine_meta(tmp_path: Path, r18: dict, released: None) -> None:
    MARKER.path = tmp_path / "ran"
    state = {
        **prefixed(r18, "backbone."),
        "neck.mlp.0.weight": torch.randn(4096, 512),
        "head.predictor.0.weight": torch.randn(256, 4096),
        **prefixed(r18, "target_net.0.", 0.5),
    }

    def ckpt() -> dict:
        meta = {
            "mmengine_version": "0.7.3",
            "epoch": 200,
            "iter": 250200,
            "seed": np.int64(0),
            "dataset_meta": None,
            "experiment_name": "byol_resnet18",
            "message_hub": {"log_scalars": {"train/loss": HistoryBuffer()}, "runtime_info": {"epoch": 200}},
            "lr": np.array([0.1, 0.01], dtype=np.float32),
        }
        return {
            "meta": meta,
            "state_dict": state,
            "message_hub": meta["message_hub"],
            "optimizer": {"state": {}},
        }

    path = tmp_path / "epoch_200.pth"
    save_with_foreign_classes(
        ckpt, path, {"mmengine.logging.history_buffer": {"HistoryBuffer": HistoryBuffer}}
    )
    report = load_and_check("resnet18", path, r18)
    assert report.prefix == "backbone."
    assert "neck.mlp.0.weight" in report.dropped and "target_net.0.conv1.weight" in report.dropped
    info = read_released(path)
    assert info.layout == "mmselfsup" and info.placeholders == [
        "mmengine.logging.history_buffer.HistoryBuffer"
    ]
    assert not MARKER.path.exists()


def test_placeholders_keep_data_and_numpy_reads_exactly(tmp_path: Path) -> None:
    MARKER.path = tmp_path / "ran"

    def ckpt() -> dict:
        return {
            "state_dict": {"w": torch.ones(2)},
            "meta": {"buf": HistoryBuffer(), "arr": np.arange(6).reshape(2, 3)},
        }

    path = tmp_path / "x.pth"
    save_with_foreign_classes(
        ckpt, path, {"mmengine.logging.history_buffer": {"HistoryBuffer": HistoryBuffer}}
    )
    from cl_bench.models.weights.released_formats import load_with_placeholders

    obj, names = load_with_placeholders(path)
    buf = obj["meta"]["buf"]
    assert isinstance(buf, InertObject) and not isinstance(buf, HistoryBuffer)
    assert buf.inert_name == "mmengine.logging.history_buffer.HistoryBuffer"
    np.testing.assert_array_equal(buf.inert_state["_log_history"], [0.5, 0.25])
    np.testing.assert_array_equal(obj["meta"]["arr"], np.arange(6).reshape(2, 3))
    assert names == ["mmengine.logging.history_buffer.HistoryBuffer"] and not MARKER.path.exists()


def test_timm_by_name_with_local_weights(tmp_path: Path, released: None) -> None:
    import timm

    torch.manual_seed(5)
    src = timm.create_model("resnet18", pretrained=False)  # with its 1000-class fc, as published
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    want = {k: v for k, v in src.state_dict().items() if not k.startswith("fc.")}
    enc = components.get("arch", "timm")({"model": "resnet18"}, in_channels=3, image_size=(64, 64))
    report = checkpoint.load_into(enc, path)
    assert report.dropped == ["fc.bias", "fc.weight"] and report.n_loaded == len(want)
    for k, v in enc.state_dict().items():
        assert torch.equal(v, want[k]), k
    x = torch.rand(2, 3, 64, 64)
    src.eval(), enc.eval()
    mean, std = (
        torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
    )
    with torch.no_grad():
        assert torch.allclose(
            enc(x), src.forward_head(src.forward_features((x - mean) / std), pre_logits=True), atol=1e-5
        )
    with pytest.raises(ClBenchError, match="unknown timm model 'resnet18x'"):
        components.get("arch", "timm")({"model": "resnet18x"}, in_channels=3, image_size=(64, 64))


# ------------------------------------------------------------------------- refusals and helpers


class RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle-p2"])
def test_code_execution_is_refused_not_stubbed(tmp_path: Path, r18: dict, writer: str) -> None:
    marker = tmp_path / "pwned"
    obj = {"state_dict": r18, "hook": RunsShell(marker)}
    path = tmp_path / "evil.pth"
    torch.save(obj, path) if writer == "torch.save" else path.write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(
        ClBenchError, match=r"refused: it contains pickled Python objects .*(posix|os)\.system"
    ):
        read_released(path)
    assert not marker.exists()


def test_dangerous_names() -> None:
    for name in (
        "builtins.eval",
        "builtins.getattr",
        "os.system",
        "posix.system",
        "subprocess.Popen",
        "importlib.import_module",
        "io.open",
    ):
        assert is_dangerous(name), name
    for name in ("argparse.Namespace", "omegaconf.dictconfig.DictConfig", "builtins.dict", "typing.Any"):
        assert not is_dangerous(name), name


def test_sequential_detection_and_flattening() -> None:
    keys = [
        "f.0.weight",
        "f.1.running_mean",
        *(f"f.{i}.0.conv1.weight" for i in (3, 4, 5, 6)),
        "layer1.0.weight",
    ]
    assert resnet_sequential_prefixes(keys) == {"f.": 3}
    state = {k: torch.zeros(1) for k in keys}
    renamed, found = rename_resnet_sequential(state)
    assert found == {"f.": 3}
    assert set(renamed) == {
        "f.conv1.weight",
        "f.bn1.running_mean",
        *(f"f.layer{i}.0.conv1.weight" for i in range(1, 5)),
        "layer1.0.weight",
    }
    # a torchvision ResNet already named is left alone
    plain = {"conv1.weight": torch.zeros(1), "layer1.0.conv1.weight": torch.zeros(1)}
    assert rename_resnet_sequential(plain) == (plain, {})
    nested = {"trunk": {"a": torch.ones(1), "b": {"c": torch.ones(1)}}, "n": 3}
    assert set(flatten_tensors(nested)) == {"trunk.a", "trunk.b.c"}


def test_no_state_dict_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(ClBenchError, match="holds no state dict"):
        read_released(path)
    with pytest.raises(ClBenchError, match="does not exist"):
        read_released(tmp_path / "nope.pth")
    text = tmp_path / "notes.pth"
    text.write_text("hello\n")
    with pytest.raises(ClBenchError, match="checkpoint .* (not a readable|could not be read)"):
        read_released(text)
