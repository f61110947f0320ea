"""Data-parallel dense fine-tuning under torchrun (gloo on CPU): sharding, DDP, rank-0 results."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cl_bench import distributed
from cl_bench.errors import ClBenchError
from tests.conftest import write_tree

TASK = """
    id: tiny-ddp-det
    version: 1
    description: tiny FPN detection for the torchrun test
    dataset: {name: scenes-coco, params: {n_train: 8, n_test: 4, image_size: 48}}
    protocol:
      name: detection
      params: {head: fpn, masks: "off", bn: BN, iterations: 3, batch_size: 4, warmup_iters: 1,
               train_min_sizes: [48], train_max_size: 48, test_min_size: 48, test_max_size: 48,
               anchor_sizes: [8, 16, 32], fpn_levels: 2, fpn_channels: 16, box_head_dim: 32,
               rpn_pre_nms_top_n_train: 100, rpn_post_nms_top_n_train: 50, rpn_pre_nms_top_n_test: 50,
               rpn_post_nms_top_n_test: 30, box_batch_size_per_image: 16, rpn_batch_size_per_image: 32}
    primary_metric: AP
"""
SEG_TASK = """
    id: tiny-ddp-det
    version: 1
    description: tiny FCN segmentation for the torchrun test
    dataset: {name: scenes-cityscapes, params: {n_train: 8, n_test: 4, image_size: 48}}
    protocol:
      name: segmentation
      params: {bn: BN, iterations: 3, batch_size: 4, lr: 0.01, crop_size: [40, 40], head_channels: 16}
    primary_metric: mIoU
"""
METHOD = """
    id: tiny-ddp-random
    description: random small-resnet (torchrun test)
    provides: [image_encoder]
    arch: {name: small-resnet, params: {width: 8}}
"""


def test_shard_takes_this_ranks_contiguous_share(monkeypatch: pytest.MonkeyPatch) -> None:
    assert distributed.shard([0, 1, 2, 3]) == [0, 1, 2, 3]  # one process: everything
    monkeypatch.setattr(distributed, "world", lambda: (1, 2))
    assert distributed.shard([0, 1, 2, 3]) == [2, 3]
    with pytest.raises(ClBenchError, match="does not divide over 2"):
        distributed.shard([0, 1, 2])
    with pytest.raises(ClBenchError, match="only detection and segmentation"):
        distributed.check_protocol("linear_probe")
    distributed.check_protocol("segmentation")


def _torchrun(tmp_path: Path, bn: str, task: str = TASK) -> subprocess.CompletedProcess:
    root = tmp_path / f"registry-{bn}"
    write_tree(root, {"tasks/tiny-ddp-det.yaml": task.replace("BN", bn), "baselines/tiny-ddp-random.yaml": METHOD})
    env = {**os.environ, "CLBENCH_REGISTRY_PATH": str(root), "CLBENCH_CACHE": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    with socket.socket() as sock:  # a free port (torchrun's --master_port 0 hangs the workers here)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           "-m", "cl_bench.cli", "run", "--method", "tiny-ddp-random", "--task", "tiny-ddp-det",
           "--device", "cpu", "--results-dir", str(tmp_path / f"results-{bn}")]
    return subprocess.run(cmd, check=False, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("task", [TASK, SEG_TASK], ids=["detection", "segmentation"])
def test_torchrun_two_processes_train_in_sync_and_rank0_writes_once(tmp_path: Path, task: str) -> None:
    done = _torchrun(tmp_path, "finetune", task)
    assert done.returncode == 0, done.stderr[-3000:]
    records = list((tmp_path / "results-finetune").rglob("seed0.json"))
    assert len(records) == 1 and done.stdout.count("tiny-ddp-random  tiny-ddp-det") == 1
    rec = json.loads(records[0].read_text())
    ddp = rec["extras"]["ddp"]
    assert ddp["world_size"] == 2 and ddp["params_in_sync"] and len(set(ddp["param_checksums"])) == 1
    assert 0.0 <= rec["metrics"][rec["primary_metric"]] <= 100.0


def test_torchrun_sync_bn_on_cpu_is_a_clear_error(tmp_path: Path) -> None:
    done = _torchrun(tmp_path, "sync")
    assert done.returncode != 0
    assert "bn: sync over several processes needs CUDA devices" in done.stderr
    assert not (tmp_path / "results-sync").exists() or not list((tmp_path / "results-sync").rglob("*.json"))
