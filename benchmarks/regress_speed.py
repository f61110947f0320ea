"""``clbench regress`` against ``clbench table`` (the named peer: one pass over the same results).

Each code tree given with ``--tree`` (default: this checkout) is timed on its own committed
``results/`` (``regress --baseline results --results-dir results``, every cell compared with
itself) and on ``clbench table`` over the same directory, in fresh processes, best of
``--repeat``. A regress that is linear in the number of results costs a small constant times
the table; before issue #15 it re-read every result once per metric and every task spec once
per result.

    python benchmarks/regress_speed.py --tree /tmp/old-code --tree . --repeat 1

(``git archive <ref> | tar -x -C /tmp/old-code`` gives an older tree with its own results.)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path


def timed(cmd: list[str], tree: Path, repeat: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "CI": "1"}
    env.pop("CLBENCH_REGISTRY_PATH", None)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cl_bench.cli", *cmd], cwd=tree, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree", action="append", type=Path, help="a cl_bench checkout (repeatable)")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    for tree in args.tree or [Path(__file__).resolve().parent.parent]:
        tree = tree.resolve()
        n = len(list((tree / "results").glob("*/*/seed*.json")))
        table = timed(["table"], tree, args.repeat)
        regress = timed(["regress", "--baseline", "results", "--results-dir", "results"], tree, args.repeat)
        print(f"{tree}: {n} results; table {table:.1f} s, regress {regress:.1f} s -> regress / table = "
              f"{regress / table:.1f}")


if __name__ == "__main__":
    main()
