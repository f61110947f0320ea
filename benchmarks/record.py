"""Shared by the issue-16 benchmarks: the machine line and appending a section to RESULTS.md."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine_line() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{platform.machine()}, {cpus} CPU cores shared with other jobs (load average {load:.1f} at the end), "
            f"torch {torch.__version__}, no GPU.")


def append_section(title: str, body: str) -> None:
    with open(RESULTS, "a", encoding="utf-8") as f:
        f.write(f"\n{title}\n\n{body.rstrip()}\n")
