"""``clbench leaderboard``: a static site (works offline) from result records.

``index.html``: the methods × tasks matrix (primary metric, mean ± std, seeds, a colour scale
per task), the reported-vs-reproduced view, suspect and stale results. ``task-<id>.html``: all
metrics of one task, provenance and a "reproduce this cell" line per method, plots (SVG
files under ``plots/``). Everything user-controlled goes through jinja2 autoescaping; the only
script is the inline column sorter. The output depends only on the results and the registry
(no timestamps), so a committed site can be checked for staleness by regenerating it.
"""

from __future__ import annotations

import hashlib
import math
import re
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from cl_bench.atomic import write_atomic
from cl_bench.errors import ClBenchError
from cl_bench.registry import Registry
from cl_bench.regress import metric_cells, suspect_reasons, tolerance_for
from cl_bench.report import plots
from cl_bench.report.table import Cell
from cl_bench.specs import MethodSpec, ResultRecord, TaskSpec
from cl_bench.store import read_result, result_path

MARKER = ".clbench-leaderboard"
TEMPLATES = Path(__file__).with_name("templates")


def slug(text: str) -> str:
    """A file-name-safe form of an id (a hash suffix when characters had to be replaced)."""
    clean = re.sub(r"[^A-Za-z0-9_.-]", "_", text)
    return clean if clean == text else f"{clean[:40]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def fmt_cell(c: Cell | None, digits: int = 2) -> str:
    if c is None:
        return ""
    return f"{c.mean:.{digits}f}" + ("" if math.isnan(c.std) else f" ± {c.std:.{digits}f}")


def colour(value: float, lo: float, hi: float, higher_is_better: bool) -> str:
    """Background for a matrix cell: red (worst of the task) to green (best)."""
    t = 0.5 if hi - lo < 1e-12 else (value - lo) / (hi - lo)
    t = t if higher_is_better else 1 - t
    return f"hsl({round(120 * t)}, 65%, 82%)"


def reproduce_command(rec: ResultRecord, seeds: list[int]) -> str:
    parts = ["clbench", "run", "--method", rec.method, "--task", rec.task]
    if seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        parts += ["--seed", str(seeds[0])] + (["--seeds", str(len(seeds))] if len(seeds) > 1 else [])
    else:
        parts += ["--seed", str(seeds[0])]
    if rec.checkpoint and rec.checkpoint.get("path"):
        parts += ["--checkpoint", str(rec.checkpoint["path"])]
    cmd = shlex.join(parts)
    if len(seeds) > 1 and seeds != list(range(seeds[0], seeds[0] + len(seeds))):
        cmd += "   # and likewise for seeds " + ", ".join(map(str, seeds[1:]))
    return cmd


@dataclass
class Provenance:
    seed: int
    model_fingerprint: str
    model_source: str
    task_version: int
    task_spec_hash: str
    code_version: str
    git_commit: str | None
    created_utc: str
    device: str
    total_s: float


@dataclass
class Entry:
    """One (method, task): every metric's cell, its records' provenance, flags."""

    method: str
    task: str
    cells: dict[str, Cell]
    provenance: list[Provenance]
    suspect: list[str]
    reproduce: str
    code: str
    colour: str = ""

    @property
    def summary_line(self) -> str:
        fps = sorted({p.model_fingerprint[:12] for p in self.provenance})
        p = self.provenance[0]
        return (f"model {', '.join(fps)} · task v{p.task_version} spec {p.task_spec_hash[:10]} · "
                f"code {self.code} · {p.created_utc} · {p.device}")


@dataclass
class TaskView:
    spec: TaskSpec
    slug: str
    higher_is_better: bool
    metrics: list[str]
    entries: dict[str, Entry] = field(default_factory=dict)
    plots: list[tuple[str, str]] = field(default_factory=list)  # (title, relative path)


@dataclass
class ReportedRow:
    method: str
    metric: str
    reported: float
    setting: str
    source: str
    task: str | None
    ours: Cell | None
    same_setting: bool

    @property
    def delta(self) -> float | None:
        """ours - reported, only for a same-setting number (the registry checked the claim)."""
        return None if self.ours is None or not self.same_setting else self.ours.mean - self.reported


@dataclass
class Board:
    tasks: list[TaskView]
    methods: list[str]
    method_specs: dict[str, MethodSpec]
    reported: list[ReportedRow]
    stale: list[Any]
    records: dict[tuple[str, str], list[ResultRecord]]

    @property
    def flagged(self) -> list[Entry]:
        return [e for t in self.tasks for e in t.entries.values() if e.suspect]

    @property
    def stale_pairs(self) -> set[tuple[str, str]]:
        return {(s.method, s.task) for s in self.stale}


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


def _code(rec: ResultRecord) -> str:
    return rec.code_version + (f" ({rec.git_commit[:12]})" if rec.git_commit else "")


def collect(results_dir: Path, registry: Registry, tasks: list[str] | None = None,
            methods: list[str] | None = None) -> Board:
    cells, primary = metric_cells(results_dir, registry, tasks, methods)
    method_specs = {m.id: m for m in registry.methods()}
    views: list[TaskView] = []
    records: dict[tuple[str, str], list[ResultRecord]] = {}
    known = set(registry.task_ids())
    stale_tasks = {s.task for s in primary.stale if s.task in known}
    for task_id in sorted(set(primary.tasks()) | stale_tasks):
        spec = registry.task(task_id)
        tol = tolerance_for(spec)
        metric_names = [spec.primary_metric] + [m for m in spec.metrics if m != spec.primary_metric]
        view = TaskView(spec, slug(task_id), tol.higher_is_better(spec.primary_metric), metric_names)
        for c in (c for c in primary.cells if c.task == task_id):
            recs = [read_result(result_path(results_dir, c.method, task_id, s)) for s in c.seeds]
            records[(c.method, task_id)] = recs
            suspect = [f"seed {r.seed}: {why}" for r in recs for why in suspect_reasons(r, view.higher_is_better)]
            prov = [Provenance(r.seed, r.model_fingerprint, r.model_source, r.task_version, r.task_spec_hash,
                               r.code_version, r.git_commit, r.created_utc, r.device, r.timings.total_s)
                    for r in recs]
            codes = sorted({_code(r) for r in recs})
            view.entries[c.method] = Entry(
                c.method, task_id, {m: cells[(c.method, task_id, m)] for m in metric_names
                                    if (c.method, task_id, m) in cells},
                prov, suspect, reproduce_command(recs[0], c.seeds), ", ".join(codes))
        means = [e.cells[spec.primary_metric].mean for e in view.entries.values()] or [0.0]
        for e in view.entries.values():
            e.colour = colour(e.cells[spec.primary_metric].mean, min(means), max(means), view.higher_is_better)
        views.append(view)
    reported = []
    shown = set(primary.methods())
    for mid in sorted(shown & set(method_specs)):
        paper = method_specs[mid].paper
        for rep in (paper.reported if paper else []):
            ours = cells.get((mid, rep.task, rep.metric)) if rep.task else None
            reported.append(ReportedRow(mid, rep.metric, rep.value, rep.setting, rep.source, rep.task, ours,
                                        rep.same_setting))
    stale = [replace(st, path=_relative(st.path, results_dir)) for st in primary.stale]
    rows = sorted(set(primary.methods()) | {s.method for s in primary.stale if s.task in known})
    return Board(views, rows, method_specs, reported, stale, records)


def _plots(board: Board, out: Path) -> None:
    for view in board.tasks:
        entries = sorted(view.entries.values(), key=lambda e: e.method)
        if not entries:
            continue
        pm = view.spec.primary_metric
        svg = plots.bar_plot([e.method for e in entries], [e.cells[pm].mean for e in entries],
                             [e.cells[pm].std for e in entries], pm, f"{view.spec.id}: {pm}")
        name = f"plots/{view.slug}-{slug(pm)}.svg"
        write_atomic(out / name, svg)
        view.plots.append((f"{pm} per method (mean ± std over seeds)", name))
        curves: dict[str, dict[str, Any]] = {}
        groups: dict[str, dict[str, dict[str, list[float]]]] = {}
        for e in entries:
            for rec in board.records[(e.method, view.spec.id)]:
                for cname, cv in (rec.extras.get("curves") or {}).items():
                    if isinstance(cv, dict) and len(cv.get("x", [])) == len(cv.get("y", [])) > 0:
                        curves.setdefault(cname, {"meta": cv, "series": {}}) \
                            ["series"].setdefault(e.method, []).append(cv)
                for gname, gv in _groups(rec.extras).items():
                    if isinstance(gv, dict):
                        slot = groups.setdefault(gname, {}).setdefault(e.method, {})
                        for g, v in gv.items():
                            if isinstance(v, (int, float)):
                                slot.setdefault(str(g), []).append(float(v))
        for cname, bundle in sorted(curves.items()):
            series = {}
            for m, runs in bundle["series"].items():
                x = runs[0]["x"]
                ys = [r["y"] for r in runs if r["x"] == x]
                series[m] = (x, list(np.mean(np.array(ys, dtype=float), axis=0)))
            meta = bundle["meta"]
            svg = plots.curve_plot(series, str(meta.get("x_label", "x")), str(meta.get("y_label", pm)),
                                   f"{view.spec.id}: {cname}")
            name = f"plots/{view.slug}-curve-{slug(cname)}.svg"
            write_atomic(out / name, svg)
            view.plots.append((str(cname), name))
        for gname, per_method in sorted(groups.items()):
            values = {m: {g: float(np.mean(v)) for g, v in gs.items()} for m, gs in per_method.items()}
            svg = plots.group_plot(values, pm, f"{view.spec.id}: {gname}")
            name = f"plots/{view.slug}-groups-{slug(gname)}.svg"
            write_atomic(out / name, svg)
            view.plots.append((str(gname), name))


# extras keys that protocols use for one score per group (drawn as grouped bars)
GROUP_KEYS = {"per_pattern": "per MMVP pattern", "per_dataset": "per dataset", "per_class_top1": "per class top-1"}


def _groups(extras: dict[str, Any]) -> dict[str, Any]:
    """Named {group: score} dicts of a result: ``per_group`` entries plus the well-known keys."""
    out = dict(extras.get("per_group") or {})
    for key, title in GROUP_KEYS.items():
        if isinstance(extras.get(key), dict):
            out.setdefault(title, extras[key])
    return out


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters["cell"] = fmt_cell
    env.filters["num"] = lambda v, d=2: "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{d}f}"
    env.filters["sortkey"] = lambda c: "" if c is None else f"{c.mean:.6f}"
    env.filters["slug"] = slug
    return env


def _clear_previous(out: Path) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise ClBenchError(f"--out {out} exists and is not a directory")
    if any(out.iterdir()) and not (out / MARKER).exists():
        raise ClBenchError(f"--out {out} is not empty and is not a leaderboard folder; pick another --out")
    for old in list(out.glob("*.html")) + list(out.glob("plots/*.svg")):
        old.unlink()


def build_site(results_dir: Path, registry: Registry, out: Path, tasks: list[str] | None = None,
               methods: list[str] | None = None) -> Path:
    """Write the site into ``out`` (replacing an earlier leaderboard there); return ``out``."""
    board = collect(Path(results_dir), registry, tasks, methods)
    out = Path(out)
    _clear_previous(out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / MARKER, "generated by clbench leaderboard; files here are replaced on rebuild\n")
    _plots(board, out)
    env = _environment()
    common = {"board": board, "n_results": sum(len(v) for v in board.records.values())}
    write_atomic(out / "index.html", env.get_template("index.html").render(page="index", **common))
    for view in board.tasks:
        html = env.get_template("task.html").render(page="task", view=view, **common)
        write_atomic(out / f"task-{view.slug}.html", html)
    return out
