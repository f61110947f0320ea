"""The committed reference results (results/) and the site made from them (leaderboard/).

`clbench leaderboard` is deterministic (no timestamps, fixed SVG ids), so regenerating the site
from results/ must give the committed leaderboard/ byte for byte; and every committed result
must still be comparable with its task's current spec. Refresh both as the README says.
"""

from pathlib import Path

from cl_bench.registry import Registry
from cl_bench.report.leaderboard import build_site
from cl_bench.store import iter_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS, SITE = ROOT / "results", ROOT / "leaderboard"
REFRESH = "refresh with `clbench leaderboard --out leaderboard/` (README: reference results)"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_reference_results_match_the_current_task_specs():
    reg = Registry()
    records = list(iter_results(RESULTS))
    assert len(records) >= 100, "results/ should hold the embedded suites' reference runs"
    stale = [str(p.relative_to(ROOT)) for p, r in records
             if r.task not in reg.task_ids() or r.task_spec_hash != reg.task(r.task).spec_hash()]
    assert not stale, f"results measured under an older task spec: {stale[:5]} — re-run them"


def test_committed_leaderboard_is_what_the_results_make(tmp_path):
    build_site(RESULTS, Registry(), tmp_path / "site")
    fresh, committed = _files(tmp_path / "site"), _files(SITE)
    assert sorted(fresh) == sorted(committed), REFRESH
    changed = [name for name in fresh if fresh[name] != committed[name]]
    assert not changed, f"leaderboard/ is stale ({changed[:3]}); {REFRESH}"
