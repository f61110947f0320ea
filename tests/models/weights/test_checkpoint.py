"""Safe checkpoint loading: formats, container/prefix layouts, refusals and mismatches."""

from __future__ import annotations

import argparse
import hashlib
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from cl_bench import components
from cl_bench.errors import ClBenchError
from cl_bench.models.weights.checkpoint import choose_prefix, load_into, read_state_dict, remap_keys


def build(name: str, params: dict | None = None, seed: int = 0, channels: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return components.get("arch", name)(params or {}, in_channels=channels, image_size=(32, 32))


@pytest.fixture(scope="module")
def source() -> dict[str, torch.Tensor]:
    """A resnet18 backbone state dict with non-trivial BN statistics."""
    state = {k: v.clone() for k, v in build("resnet18", seed=7).state_dict().items()}
    g = torch.Generator().manual_seed(0)
    for k, v in state.items():
        if k.endswith(("running_mean", "running_var", "bn1.bias")):
            v.copy_(torch.rand(v.shape, generator=g) + 0.1)
        elif k.endswith("num_batches_tracked"):
            v.fill_(123)
    return state


def shifted(state: dict[str, torch.Tensor], by: float) -> dict[str, torch.Tensor]:
    return {k: (v + by if v.is_floating_point() else v) for k, v in state.items()}


def with_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state.items()}


def assert_loaded(encoder: nn.Module, want: dict[str, torch.Tensor]) -> None:
    got = encoder.state_dict()
    assert set(got) == set(want)
    for k, tensor in want.items():
        assert torch.equal(got[k], tensor), k


def heads(prefix: str) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}fc.0.weight": torch.ones(2048, 512),
        f"{prefix}fc.0.bias": torch.ones(2048),
        f"{prefix}fc.2.weight": torch.ones(128, 2048),
    }


def test_safetensors_round_trip(tmp_path: Path, source: dict) -> None:
    path = tmp_path / "enc.safetensors"
    save_file(source, str(path))
    enc = build("resnet18", seed=1)
    report = load_into(enc, path)
    assert_loaded(enc, source)
    assert (report.prefix, report.n_loaded, report.missing, report.dropped) == ("", len(source), [], [])
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert report.to_json()["n_dropped"] == 0 and report.to_json()["path"] == str(path)


def test_pth_round_trip_in_container(tmp_path: Path, source: dict) -> None:
    path = tmp_path / "checkpoint_0199.pth.tar"
    torch.save(
        {"epoch": 200, "arch": "resnet18", "state_dict": source, "optimizer": {"state": {}, "lr": 0.1}}, path
    )
    assert set(read_state_dict(path)) == set(source)
    enc = build("resnet18", seed=1)
    load_into(enc, path)
    assert_loaded(enc, source)


LAYOUTS = {
    # MoCo v1/v2: query encoder + MLP fc, key (momentum) encoder, queue
    "moco": lambda s: {
        "state_dict": {
            **with_prefix(s, "module.encoder_q."),
            **heads("module.encoder_q."),
            **with_prefix(shifted(s, 1.0), "module.encoder_k."),
            "module.queue": torch.ones(128, 4096),
            "module.queue_ptr": torch.zeros(1),
        }
    },
    # MoCo v3: base and momentum encoders, predictor
    "mocov3": lambda s: {
        "state_dict": {
            **with_prefix(shifted(s, 1.0), "module.momentum_encoder."),
            **with_prefix(s, "module.base_encoder."),
            "module.predictor.0.weight": torch.ones(4, 4),
        }
    },
    "simclr-ddp": lambda s: {
        "model": {**with_prefix(s, "module.encoder."), "module.projector.0.weight": torch.ones(3)}
    },
    "lightly": lambda s: {
        **with_prefix(s, "backbone."),
        **with_prefix(shifted(s, 1.0), "backbone_momentum."),
        "projection_head.layers.0.weight": torch.ones(3),
    },
    "plain": lambda s: {**s, "fc.weight": torch.ones(1000, 512), "fc.bias": torch.ones(1000)},
    "dino": lambda s: {
        "student": {**with_prefix(shifted(s, 1.0), "backbone."), "head.last_layer.weight": torch.ones(2)},
        "teacher": {**with_prefix(s, "backbone."), "head.last_layer.weight": torch.ones(2)},
        "epoch": 100,
    },
}
EXPECTED = {
    "moco": "module.encoder_q.",
    "mocov3": "module.base_encoder.",
    "simclr-ddp": "module.encoder.",
    "lightly": "backbone.",
    "plain": "",
    "dino": "backbone.",
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_prefix_layouts_land_every_backbone_weight(tmp_path: Path, source: dict, layout: str) -> None:
    path = tmp_path / f"{layout}.pth"
    obj = LAYOUTS[layout](source)
    torch.save(obj, path)
    enc = build("resnet18", seed=1)
    report = load_into(enc, path)
    assert_loaded(enc, source)  # the online/teacher copy, never the shifted momentum one
    assert report.prefix == EXPECTED[layout]
    assert report.n_loaded == len(source) and report.missing == []
    flat = obj.get("state_dict") or obj.get("model") or obj.get("teacher") or obj
    n_tensors = sum(isinstance(v, torch.Tensor) for v in flat.values())
    assert len(report.dropped) == n_tensors - len(source)
    assert all(
        not k.startswith(EXPECTED[layout]) or k[len(EXPECTED[layout]) :] not in source for k in report.dropped
    )


def test_momentum_only_checkpoint_still_loads(tmp_path: Path, source: dict) -> None:
    path = tmp_path / "momentum.safetensors"
    save_file(with_prefix(source, "module.momentum_encoder."), str(path))
    enc = build("resnet18", seed=1)
    assert load_into(enc, path).prefix == "module.momentum_encoder."
    assert_loaded(enc, source)


def test_remap_keys_by_hand() -> None:
    t = torch.zeros(1)
    state = {
        "module.encoder_q.a.w": t,
        "module.encoder_q.b.w": t,
        "module.encoder_q.fc.w": t,
        "module.encoder_k.a.w": t,
        "module.encoder_k.b.w": t,
        "module.queue": t,
        "other.a.w": t,
    }
    target = {"a.w", "b.w", "c.w"}
    assert choose_prefix(state.keys(), target) == "module.encoder_q."
    mapped, dropped = remap_keys(state, target)
    assert sorted(mapped) == ["a.w", "b.w"]
    assert dropped == [
        "module.encoder_k.a.w",
        "module.encoder_k.b.w",
        "module.encoder_q.fc.w",
        "module.queue",
        "other.a.w",
    ]
    assert choose_prefix({"x.a.w", "y.a.w", "y.b.w"}, target) == "y."  # coverage wins over order
    assert choose_prefix({"q"}, target) == ""
    assert choose_prefix({"ema.a.w", "online.a.w"}, target) == "online."  # momentum copy loses ties


def test_missing_num_batches_tracked_is_fine(tmp_path: Path, source: dict) -> None:
    path = tmp_path / "old.pth"
    torch.save({k: v for k, v in source.items() if not k.endswith("num_batches_tracked")}, path)
    enc = build("resnet18", seed=1)
    report = load_into(enc, path)
    assert report.missing and all(k.endswith("num_batches_tracked") for k in report.missing)
    assert torch.equal(enc.state_dict()["layer4.1.conv2.weight"], source["layer4.1.conv2.weight"])


def test_half_precision_checkpoint_is_cast(tmp_path: Path, source: dict) -> None:
    path = tmp_path / "fp16.safetensors"
    save_file({k: (v.half() if v.is_floating_point() else v) for k, v in source.items()}, str(path))
    enc = build("resnet18", seed=1)
    load_into(enc, path)
    w = enc.state_dict()["conv1.weight"]
    assert w.dtype == torch.float32 and torch.equal(w, source["conv1.weight"].half().float())


class CreatesMarker:
    """A pickle payload that creates ``marker`` when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def test_payload_really_runs_code_when_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(CreatesMarker(marker)))
    assert marker.exists()  # so the refusals below are meaningful


@pytest.mark.parametrize("writer", ["torch.save", "pickle-p2", "pickle-p4"])
def test_code_carrying_pickle_is_refused_and_never_runs(tmp_path: Path, source: dict, writer: str) -> None:
    marker = tmp_path / "pwned"
    obj = {"state_dict": dict(list(source.items())[:2]), "hook": CreatesMarker(marker)}
    path = tmp_path / "evil.pth"
    if writer == "torch.save":
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj, protocol=int(writer[-1])))
    with pytest.raises(ClBenchError, match="refused: it contains pickled Python objects") as err:
        load_into(build("resnet18"), path)
    assert "safetensors" in str(err.value)
    assert not marker.exists()


def test_non_tensor_globals_are_refused_and_named(tmp_path: Path, source: dict) -> None:
    path = tmp_path / "dino_with_args.pth"
    torch.save({"teacher": source, "args": argparse.Namespace(arch="resnet18")}, path)
    with pytest.raises(ClBenchError, match="argparse.Namespace"):
        read_state_dict(path)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_truncated_file(tmp_path: Path, source: dict, suffix: str) -> None:
    path = tmp_path / f"enc{suffix}"
    save_file(source, str(path)) if suffix == ".safetensors" else torch.save(source, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ClBenchError, match="truncated"):
        load_into(build("resnet18"), path)


def test_not_a_checkpoint_and_missing_file(tmp_path: Path) -> None:
    text = tmp_path / "notes.pth"
    text.write_text("just some text\n")
    with pytest.raises(ClBenchError, match="not a readable"):
        read_state_dict(text)
    with pytest.raises(ClBenchError, match="does not exist"):
        read_state_dict(tmp_path / "nope.pth")
    empty = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "model": {"lr": 0.1}}, empty)
    with pytest.raises(ClBenchError, match="no state dict"):
        read_state_dict(empty)


def test_wrong_architecture(tmp_path: Path, source: dict) -> None:
    path = tmp_path / "r18.safetensors"
    save_file(with_prefix(source, "module.encoder_q."), str(path))
    with pytest.raises(
        ClBenchError, match=r"does not fit arch resnet50: \d+ missing keys e\.g\. .*check --method"
    ):
        load_into(build("resnet50"), path)


def test_shape_mismatch_names_key_and_shapes(tmp_path: Path) -> None:
    path = tmp_path / "cifar_r18.safetensors"
    save_file(build("resnet18", {"stem": "cifar"}).state_dict(), str(path))
    with pytest.raises(ClBenchError, match=r"conv1\.weight has shape \[64, 3, 3, 3\] .* but \[64, 3, 7, 7\]"):
        load_into(build("resnet18"), path)


def test_small_resnet_and_parameter_free(tmp_path: Path) -> None:
    src = build("small-resnet", seed=3)
    path = tmp_path / "small.safetensors"
    save_file(with_prefix(src.state_dict(), "backbone."), str(path))
    dst = build("small-resnet", seed=4)
    assert load_into(dst, path).prefix == "backbone."
    assert_loaded(dst, src.state_dict())
    with pytest.raises(ClBenchError, match="no weights"):
        load_into(build("raw-pixels"), path)
