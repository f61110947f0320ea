"""Paper claims as checked statements: the grammar, the one-sided tests (against scipy and
hand-worked t-distribution values), the verdicts on synthetic results, the CLI, and every claim
committed in baselines/ (parses, names known tasks and methods, evaluates)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from cl_bench.claim_statements import Operand, parse_statement
from cl_bench.claims import FAILS, HOLDS, UNMEASURABLE, evaluate_all, one_sided_test, render
from cl_bench.cli import main
from cl_bench.errors import ClBenchError
from cl_bench.registry import PROJECT_ROOT, Registry
from cl_bench.specs import ResultRecord, Timings
from cl_bench.store import write_result
from tests.record_helpers import _method_hash
from tests.conftest import write_tree

# --------------------------------------------------------------------------- grammar


def test_parse_chain_metrics_and_task_metric() -> None:
    st = parse_statement("mv-dhel-v5 > mv-dhel > mv-dhel-v2 on digits-knn")
    assert [o.method for o in st.chain] == ["mv-dhel-v5", "mv-dhel", "mv-dhel-v2"]
    assert st.task == "digits-knn" and st.metric is None
    assert st.links() == [(Operand("mv-dhel-v5"), Operand("mv-dhel")), (Operand("mv-dhel"), Operand("mv-dhel-v2"))]
    st = parse_statement("icl-transformer>icl-transformer[bigram_accuracy]  on icll-dfa[accuracy]")
    assert st.chain[1] == Operand("icl-transformer", "bigram_accuracy") and st.metric == "accuracy"
    assert st.text() == "icl-transformer > icl-transformer[bigram_accuracy] on icll-dfa[accuracy]"


@pytest.mark.parametrize("bad, why", [
    ("dcl > simclr", "no ' on TASK'"),
    ("dcl on digits-knn", "no '>'"),
    ("dcl > > simclr on digits-knn", "is not a method id"),
    ("dcl beats simclr > x on digits-knn", "is not a method id"),
    ("dcl > dcl on digits-knn", "appears twice"),
])
def test_parse_errors_say_why(bad: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_statement(bad)


# --------------------------------------------------------------------------- statistics


def test_welch_hand_worked() -> None:
    """a = 3,4,5 and b = 1,2,3: t = 2 / sqrt(1/3 + 1/3) = sqrt(6), Welch df = 4. Student's t CDF
    for 4 degrees of freedom in closed form: F(t) = 1/2 + 3/8 · u · (1 − u²/12 · ... ) with
    u = t / sqrt(1 + t²/4): F = 1/2 + (3/8) u (1 − t²/(12 (1 + t²/4))) -> p = 1 − F = 0.035242."""
    t = math.sqrt(6.0)
    u = t / math.sqrt(1 + t * t / 4)
    p_hand = 1 - (0.5 + 3 / 8 * u * (1 - t * t / (12 * (1 + t * t / 4))))
    diff, d, p = one_sided_test(np.array([3.0, 4.0, 5.0]), np.array([1.0, 2.0, 3.0]), "welch")
    assert diff == 2.0 and d == pytest.approx(2.0)  # Cohen's d: 2 / sqrt((1 + 1) / 2)
    assert p == pytest.approx(p_hand, abs=1e-9) and p == pytest.approx(0.035242, abs=1e-6)


def test_paired_hand_worked() -> None:
    """Differences 1,2,3: mean 2, sd 1, t = 2 / (1/sqrt 3) = 2 sqrt 3, df = 2; Student's t CDF for
    2 degrees of freedom: F(t) = 1/2 + t / (2 sqrt(2 + t²)) -> p = 1/2 − sqrt(12) / (2 sqrt 14)."""
    p_hand = 0.5 - math.sqrt(12) / (2 * math.sqrt(14))
    diff, dz, p = one_sided_test(np.array([5.0, 7.0, 9.0]), np.array([4.0, 5.0, 6.0]), "paired")
    assert diff == 2.0 and dz == pytest.approx(2.0)
    assert p == pytest.approx(p_hand, abs=1e-12)


def test_tests_match_scipy_on_random_samples() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.normal(1.0, 1.0, size=int(rng.integers(2, 6))), rng.normal(0.0, 2.0, size=int(rng.integers(2, 6)))
        ref = stats.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue
        assert one_sided_test(a, b, "welch")[2] == pytest.approx(ref, rel=1e-12)
        b = b[: len(a)] if len(b) >= len(a) else np.concatenate([b, rng.normal(size=len(a) - len(b))])
        ref = stats.ttest_rel(a, b, alternative="greater").pvalue
        assert one_sided_test(a, b, "paired")[2] == pytest.approx(ref, rel=1e-12)


def test_zero_spread_is_decided_by_the_sign() -> None:
    assert one_sided_test(np.array([2.0, 2.0]), np.array([1.0, 1.0]), "welch")[2] == 0.0
    assert one_sided_test(np.array([1.0, 1.0]), np.array([1.0, 1.0]), "welch")[2] == 1.0
    assert one_sided_test(np.array([1.0, 2.0]), np.array([0.0, 1.0]), "paired")[2] == 0.0  # constant +1
    assert one_sided_test(np.array([0.0, 1.0]), np.array([1.0, 2.0]), "paired")[2] == 1.0


def test_a_deterministic_cell_against_a_spread_one_is_welch_with_zero_variance_and_no_warning() -> None:
    """89.28 three times (a deterministic cell: its computed variance is rounding noise, ~1e-28, and
    scipy warns of catastrophic cancellation) against a spread sample: Welch with that side's variance
    exactly 0 is t = diff / (s_b / sqrt 3) on n_b - 1 = 2 degrees of freedom, p from the closed-form
    CDF of Student's t with 2 df (as in test_paired_hand_worked); no warning reaches the user; a
    constant paired difference that is not exactly representable (0.1 three times) counts as zero spread."""
    a = np.array([89.28, 89.28, 89.28])
    b = np.array([23.97119048, 27.71683629, 26.26404408])
    diff = 89.28 - b.mean()
    t = diff / (b.std(ddof=1) / math.sqrt(3))
    p_hand = 0.5 - t / (2 * math.sqrt(2 + t * t))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got_diff, d, p = one_sided_test(a, b, "welch")
        rev = one_sided_test(b, a, "welch")
        paired = one_sided_test(np.array([0.3, 0.4, 1.1]), np.array([0.2, 0.3, 1.0]), "paired")
    assert got_diff == pytest.approx(diff) and d == pytest.approx(diff / math.sqrt(b.var(ddof=1) / 2))
    assert p == pytest.approx(p_hand, rel=1e-9) and rev[2] == pytest.approx(1 - p_hand, rel=1e-9)
    assert paired[2] == 0.0 and paired[1] == math.inf


# --------------------------------------------------------------------------- verdicts on results

CLAIMS_TREE = {
    "tasks/tiny-mse.yaml": """
        id: tiny-mse
        version: 1
        description: a lower-is-better task (test fixture)
        dataset: {name: digits}
        protocol: {name: knn, params: {k: 5}}
        primary_metric: mse
    """,
    "baselines/claimer.yaml": """
        id: claimer
        description: a method whose paper makes claims (test fixture)
        provides: [image_encoder]
        arch: {name: small-resnet, params: {width: 8}}
        paper:
          title: A paper
          claims:
            - {statement: "good > bad on tiny-knn", source: "Table 1"}
            - {statement: "bad > good on tiny-knn"}
            - {statement: "same-a > same-b on tiny-knn"}
            - {statement: "good > one-seed on tiny-knn"}
            - {statement: "good > absent on tiny-knn"}
            - {statement: "good > old on tiny-knn"}
            - {statement: "good > bad on tiny-mse"}
            - {statement: "good > mid > bad on tiny-knn"}
            - {statement: "mid > good > bad on tiny-knn"}
            - {statement: "good > good[top5] on tiny-knn", test: paired}
            - {statement: "good > bad on tiny-knn[nope]"}
    """,
    **{f"baselines/{m}.yaml": f"""
        id: {m}
        description: fixture
        provides: [image_encoder]
        arch: {{name: small-resnet, params: {{width: 8}}}}
    """ for m in ("good", "bad", "mid", "same-a", "same-b", "one-seed", "absent", "old")},
}


def _record(task, method: str, seed: int, metrics: dict[str, float], spec_hash: str | None = None) -> ResultRecord:
    return ResultRecord(
        task=task.id, task_version=task.version, task_spec_hash=spec_hash or task.spec_hash(), method=method,
        method_spec_hash=_method_hash(method, task.id), seed=seed, primary_metric=task.primary_metric, metrics=metrics,
        model_fingerprint="f" * 64, model_source="trained", dataset_fingerprint="d" * 64, code_version="0.1.0",
        git_commit="0123456789abcdef", libraries={"torch": "2"}, device="cpu:test:1threads",
        timings=Timings(total_s=1.0), created_utc="2026-01-02T03:04:05Z",
    )


@pytest.fixture
def claim_results(tiny_root: Path, tmp_path: Path) -> Path:
    write_tree(tiny_root, CLAIMS_TREE)
    reg = Registry()
    knn, mse = reg.task("tiny-knn"), reg.task("tiny-mse")
    res = tmp_path / "results"
    cells = {"good": [80.0, 82.0, 81.0], "mid": [70.0, 71.5, 69.0], "bad": [60.0, 61.0, 59.5],
             "same-a": [50.0, 52.0, 51.0], "same-b": [50.5, 51.5, 51.0]}
    for method, values in cells.items():
        for seed, v in enumerate(values):
            write_result(res, _record(knn, method, seed, {"top1": v, "top5": v - 5.0}))
    write_result(res, _record(knn, "one-seed", 0, {"top1": 10.0}))
    write_result(res, _record(knn, "old", 0, {"top1": 10.0}, spec_hash="0" * 64))
    write_result(res, _record(knn, "old", 1, {"top1": 11.0}, spec_hash="0" * 64))
    for seed, (g, b) in enumerate([(0.10, 0.30), (0.12, 0.35), (0.11, 0.32)]):  # lower is better
        write_result(res, _record(mse, "good", seed, {"mse": g}))
        write_result(res, _record(mse, "bad", seed, {"mse": b}))
    return res


def test_verdicts(claim_results: Path) -> None:
    out = {r.statement: r for r in evaluate_all(claim_results, Registry(), ["claimer"])}
    r = out["good > bad on tiny-knn"]
    link = r.links[0]
    ref = stats.ttest_ind([80.0, 82.0, 81.0], [60.0, 61.0, 59.5], equal_var=False, alternative="greater")
    assert r.verdict == HOLDS and link.p_value == pytest.approx(ref.pvalue) and link.diff == pytest.approx(81.0 - 180.5 / 3)
    assert r.source == "Table 1" and (link.n_better, link.n_worse) == (3, 3)
    r = out["bad > good on tiny-knn"]
    assert r.verdict == FAILS and r.links[0].contradicted and r.links[0].diff < 0
    r = out["same-a > same-b on tiny-knn"]
    assert r.verdict == FAILS and not r.links[0].contradicted
    r = out["good > one-seed on tiny-knn"]
    assert r.verdict == UNMEASURABLE and "at least 2" in r.links[0].reason
    assert out["good > absent on tiny-knn"].links[0].reason == "absent on tiny-knn: no results"
    assert out["good > old on tiny-knn"].links[0].reason == "old on tiny-knn: only stale results"
    r = out["good > bad on tiny-mse"]  # mse: lower is better, so good (0.11) beats bad (0.32)
    assert r.verdict == HOLDS and not r.higher_is_better and r.links[0].diff == pytest.approx(0.97 / 3 - 0.11)
    assert out["good > mid > bad on tiny-knn"].verdict == HOLDS
    r = out["mid > good > bad on tiny-knn"]
    assert r.verdict == FAILS and [link.verdict for link in r.links] == [FAILS, HOLDS]
    r = out["good > good[top5] on tiny-knn"]  # paired by seed: top1 - top5 = 5 exactly -> p = 0
    assert r.verdict == HOLDS and r.links[0].p_value == 0.0 and r.test == "paired"
    r = out["good > bad on tiny-knn[nope]"]
    assert r.verdict == UNMEASURABLE and "no metric 'nope'" in r.links[0].reason
    text = render(list(out.values()))
    assert "11 claim(s): 4 holds, 3 does not hold, 4 not measurable" in text
    assert "contradicted" in text and "lower is better" in text


def test_cli_claims(claim_results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["claims", "--results-dir", str(claim_results), "--methods", "claimer", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 11 and rows[0]["verdict"] == HOLDS and rows[0]["links"][0]["n_better"] == 3
    assert main(["claims", "--results-dir", str(claim_results), "--methods", "nobody"]) == 2
    assert "nobody" in capsys.readouterr().err


def test_claims_are_not_in_the_method_hash_and_bad_ones_fail_on_load(tiny_root: Path) -> None:
    write_tree(tiny_root, CLAIMS_TREE)
    reg = Registry()
    with_claims = reg.method("claimer")
    write_tree(tiny_root, {"baselines/claimer.yaml": CLAIMS_TREE["baselines/claimer.yaml"].split("        paper:")[0]})
    assert Registry().method("claimer").spec_hash() == with_claims.spec_hash()
    write_tree(tiny_root, {"baselines/claimer.yaml": CLAIMS_TREE["baselines/claimer.yaml"].replace(
        "good > bad on tiny-knn\", source", "good beats bad\", source")})
    with pytest.raises(ClBenchError, match="no ' on TASK'"):
        Registry().method("claimer")
    write_tree(tiny_root, {"baselines/claimer.yaml": CLAIMS_TREE["baselines/claimer.yaml"].replace(
        "good > bad on tiny-knn\", source", "good > nobody on tiny-knn\", source")})
    with pytest.raises(ClBenchError, match="unknown method"):
        evaluate_all(Path("results"), Registry(), ["claimer"])


def test_committed_claims_evaluate() -> None:
    """Every claim in baselines/ parses, names a known task and methods, and evaluates on the
    committed results (whatever its verdict)."""
    reg = Registry([PROJECT_ROOT])
    results = evaluate_all(PROJECT_ROOT / "results", reg)
    assert results, "no method lists paper claims"
    for r in results:
        assert r.verdict in (HOLDS, FAILS, UNMEASURABLE)
        for link in r.links:
            assert (link.p_value is None) == (link.verdict == UNMEASURABLE)
