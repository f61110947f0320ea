"""Rank agreement between two tasks: Spearman / Kendall against hand-worked rank formulas,
per-seed correlations, stale results left out, too few methods refused, and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from cl_bench.cli import main
from cl_bench.errors import ClBenchError
from cl_bench.registry import Registry
from cl_bench.report.rank_agreement import rank_agreement
from cl_bench.store import write_result
from tests.conftest import write_tree
from tests.record_helpers import make_record
from tests.report.test_leaderboard import PAPER_METHOD

# method -> (tiny-knn values per seed, tiny-linear2 values per seed)
VALUES = {
    "m1": ([50.0, 52.0, 54.0], [80.0, 82.0, 84.0]),  # mean 52 / 82
    "m2": ([60.0, 60.0, 60.0], [70.0, 71.0, 72.0]),  # 60 / 71
    "m3": ([40.0, 41.0, 42.0], [60.0, 65.0, 61.0]),  # 41 / 62
    "m4": ([70.0, 71.0, 75.0], [90.0, 91.0, 92.0]),  # 72 / 91
}


@pytest.fixture
def results(tiny_root: Path, tmp_path: Path) -> Path:
    write_tree(tiny_root, PAPER_METHOD)
    reg = Registry()
    res = tmp_path / "results"
    for task_id, k in (("tiny-knn", 0), ("tiny-linear2", 1)):
        task = reg.task(task_id)
        for m, vals in VALUES.items():
            for seed, v in enumerate(vals[k]):
                write_result(res, make_record(task, m, seed, v))
    write_result(res, make_record(reg.task("tiny-knn"), "m5", 0, 99.0, spec_hash="0" * 64))  # stale: ignored
    return res


def test_spearman_and_kendall_equal_the_rank_formulas(results: Path) -> None:
    out = rank_agreement(results, Registry(), "tiny-knn", "tiny-linear2")
    assert out.methods == ["m1", "m2", "m3", "m4"]
    # means: knn 52, 60, 41, 72 -> ranks 2, 3, 1, 4; linear 82, 71, 62, 91 -> ranks 3, 2, 1, 4
    # Spearman (no ties) = 1 - 6 * sum d^2 / (n (n^2 - 1)) = 1 - 6 * 2 / 60 = 0.8
    assert out.spearman == pytest.approx(0.8)
    # Kendall: pairs (m1,m2) discordant, the other 5 concordant -> (5 - 1) / 6
    assert out.kendall == pytest.approx(4 / 6)
    # exact two-sided p: of the 24 orderings, sum d^2 in {0, 2, 18, 20} (1 + 3 + 3 + 1) give |rho| >= 0.8
    assert out.p_value == pytest.approx(8 / 24)
    # seed 0: knn 50, 60, 40, 70 (ranks 2, 3, 1, 4); linear 80, 70, 60, 90 (3, 2, 1, 4) -> 0.8
    # seed 2: knn 54, 60, 42, 75 (2, 3, 1, 4); linear 84, 72, 61, 92 (3, 2, 1, 4) -> 0.8
    # seed 1: knn 52, 60, 41, 71 (2, 3, 1, 4); linear 82, 71, 65, 91 (3, 2, 1, 4) -> 0.8
    assert out.per_seed == pytest.approx({0: 0.8, 1: 0.8, 2: 0.8})
    assert "Spearman rho = 0.800" in out.render()


def test_too_few_common_methods_is_a_clear_error(results: Path) -> None:
    with pytest.raises(ClBenchError, match="at least 3 methods"):
        rank_agreement(results, Registry(), "tiny-knn", "tiny-linear2", methods=["m1", "m2"])


def test_cli(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agree", "--tasks", "tiny-knn,tiny-linear2", "--results-dir", str(results)]) == 0
    assert "Spearman rho = 0.800" in capsys.readouterr().out
    assert main(["agree", "--tasks", "tiny-knn", "--results-dir", str(results)]) == 2
