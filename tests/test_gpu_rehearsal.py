"""benchmarks/gpu_rehearsal.sh where no GPU is: it refuses --device cuda in one line, and its --dry
mode runs the whole script (two rehearsal cases, the throughput script at tiny sizes) on the CPU
and prints one summary table."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from cl_bench.registry import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "benchmarks" / "gpu_rehearsal.sh"


def script(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}  # no GPU, even on a machine with one
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=600)


def test_without_cuda_it_says_so_in_one_line() -> None:
    done = script("--device", "cuda")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "torch sees no CUDA device" in done.stderr and "--dry" in done.stderr


def test_bad_arguments_exit_2() -> None:
    for args in (["--bogus"], ["--device"], ["--device", "tpu"]):
        done = script(*args)
        assert done.returncode == 2 and done.stderr.startswith("gpu_rehearsal.sh: "), (args, done.stderr)


@pytest.mark.slow
def test_dry_run_prints_one_summary_table(tmp_path: Path) -> None:
    done = script("--dry", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr + (tmp_path / "rehearsal.log").read_text()
    lines = done.stdout.splitlines()
    assert lines[0].startswith("## cl_bench GPU rehearsal") and ", cpu, torch " in lines[0]
    rows = [line for line in lines if line.startswith("| ")]
    assert rows[0].startswith("| task / measurement |") and len(rows) == 1 + 2 + 4 + 3
    assert re.match(r"\| imagefolder-linear \| resnet50 \(r50-moco\) \| top1 = [\d.]+ \| [\d.]+ \| [\d.]+ \|$", rows[1])
    assert rows[2].startswith("| truthfulqa-mc1 | hf-causal-lm (gpt2) | mc1 = ")
    names = [r.split(" | ")[0][2:] for r in rows[3:7]]
    assert names == ["throughput: resnet50 extraction (engine)", "throughput: resnet50 bare forward (peer ceiling)",
                     "throughput: R50-C4 detector training", "throughput: R50-C4 detector prediction"]
    assert all(re.search(r"\| [\d.]+ images/s", r) for r in rows[3:7])
    assert "| 1 VOC test images at 800 px |" in rows[6]  # the task's own test resize ran
    assert rows[7].startswith("| **rehearsal** | 2 passed, 0 failed |")
    # the rehearsal's results are where --out said, recorded as smoke runs on the CPU
    assert (tmp_path / "work" / "results" / "resnet50" / "imagefolder-linear" / "seed0.json").is_file()
