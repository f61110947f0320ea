"""Bad input: one line on stderr, exit code 2, no traceback, nothing written to results/."""

import os
import pickle
from pathlib import Path

import pytest
import torch

from cl_bench.cli import main
from tests.conftest import write_tree


def _fails(capsys, argv, pattern):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert pattern in lines[0], lines[0]
    assert not Path("results").exists()
    return lines[0]


def test_unknown_method_and_task(tiny_root, capsys):
    _fails(capsys, ["run", "--method", "simclrr", "--task", "tiny-linear"], "did you mean 'simclr'")
    _fails(capsys, ["run", "--method", "simclr", "--task", "digits-hard-linaer"], "did you mean 'digits-hard-linear'")


def test_yaml_with_wrong_field_type(tiny_root, capsys):
    write_tree(tiny_root, {"baselines/broken.yaml": """
        id: broken
        description: x
        provides: [image_encoder]
        arch: {name: small-resnet}
        train: {objective: simclr, epochs: many, batch_size: 8, lr: 0.1}
    """})
    _fails(capsys, ["run", "--method", "broken", "--task", "tiny-knn"], "broken.yaml: field 'train.epochs'")


def test_modality_mismatch(tiny_root, capsys):
    _fails(capsys, ["run", "--method", "tiny-lm-stub", "--task", "tiny-knn"],
           "task 'tiny-knn' needs image_encoder; method 'tiny-lm-stub' provides causal_lm")


def test_corrupt_checkpoint(tiny_root, tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x80\x02this is not a checkpoint" * 10)
    _fails(capsys, ["run", "--method", "tiny-random", "--task", "tiny-knn", "--checkpoint", str(bad)], "bad.pth")
    missing = tmp_path / "nope.pth"
    _fails(capsys, ["run", "--method", "tiny-random", "--task", "tiny-knn", "--checkpoint", str(missing)],
           "does not exist")


def test_checkpoint_that_does_not_fit(tiny_root, tmp_path, capsys):
    import torchvision

    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    _fails(capsys, ["run", "--method", "tiny-random", "--task", "tiny-knn", "--checkpoint", str(path)],
           "missing")


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickle_checkpoint_is_refused_and_its_code_never_runs(tiny_root, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": _Evil(str(marker))}, f)
    line = _fails(capsys, ["run", "--method", "tiny-random", "--task", "tiny-knn", "--checkpoint", str(path)],
                  "evil.pth")
    assert "refused" in line
    assert not marker.exists()


def test_missing_dataset_path(tiny_root, tmp_path, capsys):
    write_tree(tiny_root, {"tasks/tiny-mnist.yaml": """
        id: tiny-mnist
        version: 1
        description: kNN on MNIST (test fixture)
        dataset: {name: mnist}
        protocol: {name: knn}
        primary_metric: top1
    """})
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails(capsys, ["run", "--method", "raw-pixels", "--task", "tiny-mnist", "--data-root", str(empty)], "mnist")
    _fails(capsys, ["run", "--method", "raw-pixels", "--task", "tiny-mnist", "--data-root", str(tmp_path / "nowhere")],
           "does not exist")


def test_bad_protocol_param_names_task_file(tiny_root, capsys):
    write_tree(tiny_root, {"tasks/tiny-badk.yaml": """
        id: tiny-badk
        version: 1
        description: x
        dataset: {name: digits}
        protocol: {name: knn, params: {kk: 3}}
        primary_metric: top1
    """})
    _fails(capsys, ["run", "--method", "raw-pixels", "--task", "tiny-badk"], "tiny-badk.yaml: protocol.params: unknown field 'kk'")


@pytest.mark.parametrize("device", ["tpu"])
def test_bad_device(tiny_root, capsys, device):
    _fails(capsys, ["run", "--method", "raw-pixels", "--task", "tiny-knn", "--device", device], "unknown --device")


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_cache_dir_moves_the_whole_cache_for_the_command_only(command, tmp_path, monkeypatch):
    """--cache-dir is the cache root for everything the command writes (generated data and text
    vectors find it through default_cache_dir, sweep workers through the environment), and an
    in-process caller gets its own CLBENCH_CACHE back afterwards."""
    from cl_bench import cli
    from cl_bench.cache import default_cache_dir

    monkeypatch.setenv("CLBENCH_CACHE", str(tmp_path / "env-cache"))
    seen = {}

    def spy(args, registry):
        seen["root"] = default_cache_dir()
        seen["env"] = os.environ["CLBENCH_CACHE"]
        return 0

    monkeypatch.setattr(cli, f"cmd_{command}", spy)
    argv = {"run": ["run", "--method", "m", "--task", "t"],
            "sweep": ["sweep", "--methods", "m", "--tasks", "t"]}[command]
    assert cli.main([*argv, "--cache-dir", str(tmp_path / "mine")]) == 0
    assert seen["root"] == (tmp_path / "mine").resolve() and seen["env"] == str((tmp_path / "mine").resolve())
    assert os.environ["CLBENCH_CACHE"] == str(tmp_path / "env-cache")
    assert cli.main(argv) == 0 and seen["root"] == tmp_path / "env-cache"  # no flag: the environment's
