"""Run the ``clbench`` CLI on a hostile input the way a user would: a fresh process, capped.

Each run gets its own scratch folder (``HOME``, the cache, the working directory and the
results directory all inside it), an address-space cap (:data:`MEMORY_CAP`; torch alone maps
~4 GiB of address space at import), a CPU-time cap and a wall-clock timeout. The files under
the scratch folder are listed before and after, so a case can prove that nothing was written
outside the results (and cache) directory.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cl_bench.registry import PROJECT_ROOT

MEMORY_CAP = 6 * 2**30  # bytes of address space
CPU_CAP_S = 240  # CPU seconds
WALL_TIMEOUT_S = 300  # the machine running the suite may be shared and slow


@dataclass
class Outcome:
    rc: int
    stdout: str
    stderr: str
    new_files: list[str]  # relative to the scratch folder, created by the run


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_CAP_S, CPU_CAP_S))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def listing(root: Path) -> set[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):  # symlinks not followed: a planted loop is fine
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            out.add(os.path.relpath(os.path.join(dirpath, name), root))
    return out


def run_cli(scratch: Path, argv: list[str], registry: Path | None = None) -> Outcome:
    """``python -m cl_bench.cli *argv`` in ``scratch/work`` under the caps above."""
    work = scratch / "work"
    work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLBENCH_")}
    env.update(PYTHONPATH=str(PROJECT_ROOT), OMP_NUM_THREADS="1", CI="1", HOME=str(scratch / "home"),
               CLBENCH_CACHE=str(scratch / "cache"), CLBENCH_RESULTS=str(scratch / "results"),
               TRANSFORMERS_OFFLINE="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               MPLCONFIGDIR=str(scratch / "cache" / "matplotlib"))  # matplotlib's own font cache
    if registry is not None:
        env["CLBENCH_REGISTRY_PATH"] = str(registry)
    before = listing(scratch)
    proc = subprocess.run([sys.executable, "-m", "cl_bench.cli", *argv], cwd=work, env=env, capture_output=True,
                          text=True, errors="replace", preexec_fn=_limits, timeout=WALL_TIMEOUT_S, check=False)
    return Outcome(proc.returncode, proc.stdout, proc.stderr, sorted(listing(scratch) - before))
