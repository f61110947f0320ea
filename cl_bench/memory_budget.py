"""How many bytes a protocol may fill at once on a device (full-batch vs streamed choices).

The budget is half of what the device has free now (CPU: ``MemAvailable``; CUDA: free device
memory), or ``$CLBENCH_MEMORY_BUDGET`` (e.g. ``4G``, ``512M``) when set. It chooses only
*how* a protocol computes (in one batch or in blocks), never what it computes.
"""

from __future__ import annotations

import os

import torch

from cl_bench.errors import ClBenchError

ENV = "CLBENCH_MEMORY_BUDGET"
FRACTION = 0.5
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_bytes(text: str) -> int:
    """``"4G"`` -> 4·2³⁰; plain digits are bytes."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1:] if t[-1:] in _UNITS and not t[-1:].isdigit() else ""
    try:
        value = float(t[: len(t) - len(unit)])
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ClBenchError(f"${ENV}={text!r} is not a size; write e.g. 4G or 512M")
    return int(value * _UNITS[unit])


def available_bytes(device: torch.device) -> int:
    """Bytes free on ``device`` now."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def budget_bytes(device: torch.device) -> int:
    """What a protocol may hold at once on ``device`` (see the module docstring)."""
    env = os.environ.get(ENV, "").strip()
    return parse_bytes(env) if env else int(FRACTION * available_bytes(device))
