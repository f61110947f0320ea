"""The ``clbench`` command line."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import yaml

from cl_bench import __version__, components
from cl_bench.errors import ClBenchError
from cl_bench.registry import Registry


def _show_progress() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


def _run_options(args: argparse.Namespace, reg: Registry, seed: int = 0):
    from cl_bench.budget import Budget
    from cl_bench.engine import RunOptions, resolve_device
    from cl_bench.feed import auto_threads, auto_workers, parse_count

    workers = parse_count(getattr(args, "workers", 0), "--workers")
    if workers is None:
        workers = auto_workers(resolve_device(args.device))
    threads = parse_count(getattr(args, "threads", None), "--threads") or auto_threads(workers)
    return RunOptions(registry=reg,
        seed=seed, device=args.device, checkpoint=Path(args.checkpoint) if getattr(args, "checkpoint", None) else None,
        data_root=Path(args.data_root) if args.data_root else None,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        results_dir=Path(args.results_dir), progress=_show_progress(),
        command="clbench " + shlex.join(sys.argv[1:]) if sys.argv[1:] else None,
        workers=workers, precision=getattr(args, "precision", "fp32"), threads=threads,
        arch_params=_arch_params(getattr(args, "arch_param", None) or []),
        budget=Budget(smoke=bool(getattr(args, "smoke", False)), limit=getattr(args, "limit", None)),
        name=getattr(args, "name", None),
    )


def _arch_params(pairs: list[str]) -> dict:
    """``--arch-param KEY=VALUE`` pairs; VALUE is read as YAML (numbers, booleans, lists), safely."""
    from cl_bench.yaml_loader import load_yaml_value

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ClBenchError(f"--arch-param {pair!r}: expected KEY=VALUE, e.g. --arch-param model=resnet50")
        out[key.strip()] = load_yaml_value(value, f"--arch-param {key.strip()}") if value.strip() else ""
    return out


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


MAX_SEEDS = 1000  # seeds per command; checked before any list of runs is built
MAX_RUNS = 100_000  # methods × tasks × seeds of one sweep


def _seeds(args: argparse.Namespace) -> list[int]:
    from cl_bench.specs import MAX_SEED

    if not 0 <= args.seed <= MAX_SEED:
        raise ClBenchError(f"--seed must be in 0..{MAX_SEED}, got {args.seed}")
    if args.seeds is not None:
        if not 1 <= args.seeds <= MAX_SEEDS:
            raise ClBenchError(f"--seeds must be in 1..{MAX_SEEDS}, got {args.seeds}")
        if args.seed + args.seeds - 1 > MAX_SEED:
            raise ClBenchError(f"--seed {args.seed} with --seeds {args.seeds} passes the largest seed {MAX_SEED}")
        return list(range(args.seed, args.seed + args.seeds))
    return [args.seed]


def _method_list(reg: Registry, value: str | None, results_dirs: list[Path]) -> list[str] | None:
    """--methods as ids; each must be a registered method or have results in ``results_dirs``."""
    from cl_bench.regress import check_names

    methods = _csv(value) if value else None
    check_names(reg, None, methods, results_dirs)
    return methods


def cmd_list(args: argparse.Namespace, reg: Registry) -> int:
    if args.what == "tasks":
        for t in reg.tasks():
            print(f"{t.id:28s} v{t.version}  {t.protocol.name:14s} {t.description.splitlines()[0]}")
    elif args.what == "methods":
        for m in reg.methods():
            print(f"{m.id:28s} {','.join(m.provides):14s} {m.description.splitlines()[0]}")
    else:
        kind = args.what.removesuffix("s")
        for name in components.names(kind):
            print(name)
    return 0


def cmd_show(args: argparse.Namespace, reg: Registry) -> int:
    ids_t, ids_m = set(reg.task_ids()), set(reg.method_ids())
    if args.name in ids_t:
        spec, path, kind = reg.task(args.name), reg.task_path(args.name), "task"
    elif args.name in ids_m:
        spec, path, kind = reg.method(args.name), reg.method_path(args.name), "method"
    else:
        from cl_bench.suggest import did_you_mean

        raise ClBenchError(f"no task or method named '{args.name}'{did_you_mean(args.name, ids_t | ids_m)}")
    print(f"# {kind} {spec.id} — {path}")
    print(f"# spec hash {spec.spec_hash()}")
    from cl_bench.spec_include import direct_includes
    from cl_bench.specs import read_yaml

    includes = direct_includes(path, read_yaml)
    if includes:
        print(f"# includes: {', '.join(includes)} (resolved below)")
    print(yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False, allow_unicode=True), end="")
    return 0


def _print_outcome(outcome) -> None:
    r = outcome.record
    metrics = "  ".join(f"{k}={'n/a' if v is None else f'{v:.2f}'}" for k, v in r.metrics.items())
    t = r.timings
    reused = " (cached checkpoint)" if outcome.model.reused else ""
    print(
        f"{r.method}  {r.task}  seed={r.seed}  {metrics}  [{r.primary_metric}]  "
        f"train {t.train_s:.1f}s{reused}  features {t.features_s:.1f}s  protocol {t.protocol_s:.1f}s  "
        f"total {t.total_s:.1f}s"
        + (f"  -> {outcome.path}" if outcome.path else "")
    )
    report = r.checkpoint
    if report and report.get("dropped"):
        print(f"  checkpoint: loaded {report.get('n_loaded')} tensors, dropped {len(report['dropped'])} "
              f"non-backbone keys (e.g. {', '.join(report['dropped'][:3])})")


def cmd_run(args: argparse.Namespace, reg: Registry) -> int:
    from cl_bench.distributed import init_from_env
    from cl_bench.engine import run

    task, method = reg.task(args.task), reg.method(args.method)
    if args.name and args.name != method.id and args.name in set(reg.method_ids()):
        raise ClBenchError(f"--name {args.name} is a registered method; a named result must not pass for it: "
                           "pick another name (e.g. my-moco-ep200)")
    args.device = init_from_env(args.device)  # under torchrun: one process per device
    for seed in _seeds(args):
        outcome = run(task, method, _run_options(args, reg, seed))
        if outcome is not None:  # None: a torchrun worker rank (rank 0 reports)
            _print_outcome(outcome)
    return 0


def cmd_train(args: argparse.Namespace, reg: Registry) -> int:
    from cl_bench.atomic import ensure_writable_dir
    from cl_bench.cache import Cache
    from cl_bench.components import get
    from cl_bench.engine import data_root_of, resolve_device
    from cl_bench.obtain import obtain_model

    task, method = reg.task(args.task), reg.method(args.method)
    if method.train is None:
        raise ClBenchError(f"method '{method.id}' has no train recipe: nothing to train")
    opts = _run_options(args, reg, _seeds(args)[0])
    cache = Cache(opts.cache_dir)
    ensure_writable_dir(cache.root, "cache directory (--cache-dir)")
    data = get("dataset", task.dataset.name)(task.dataset.params, data_root_of(opts))
    got = obtain_model(method, data, seed=args.seed, device=resolve_device(args.device), cache=cache,
                       data_root=opts.data_root, progress=opts.progress, registry=reg)
    where = cache.checkpoint_dir(got.card["cache_key"]) if got.card else None
    state = "reused" if got.reused else f"trained in {got.train_s:.1f}s"
    print(f"{method.id} seed={args.seed}: {state}; fingerprint {got.fingerprint[:16]}; checkpoint {where}")
    return 0


def cmd_sweep(args: argparse.Namespace, reg: Registry) -> int:
    from cl_bench.sweep import dry_run, plan, render_dry_run, run_sweep

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ClBenchError("clbench sweep runs in one process (parallel runs: --executor ray); torchrun is for clbench run")
    seeds, methods, tasks = _seeds(args), _csv(args.methods), _task_list(reg, args.tasks) or []
    if len(seeds) * len(methods) * len(tasks) > MAX_RUNS:
        raise ClBenchError(f"{len(methods)} method(s) × {len(tasks)} task(s) × {len(seeds)} seed(s) is more than "
                           f"{MAX_RUNS} runs; split the sweep")
    runs = plan(reg, methods, tasks, seeds)
    opts = _run_options(args, reg)
    if args.dry_run:
        sys.stdout.write(render_dry_run(dry_run(runs, opts.results_dir)))
        return 0
    t0 = time.perf_counter()
    report = run_sweep(runs, opts, progress=_show_progress(), executor=args.executor, address=args.address,
                       jobs=args.jobs)
    for r, value, secs in report.done:
        print(f"done     {r.label}: {r.task.primary_metric}={value:.2f} ({secs:.1f}s)")
    print(f"{len(report.done)} run(s) done, {len(report.skipped)} skipped (comparable result exists), "
          f"{len(report.failed)} failed, {time.perf_counter() - t0:.1f}s")
    for r, err in report.failed:
        print(f"FAILED   {r.label}: {err}", file=sys.stderr)
    return 1 if report.failed else 0


def _task_list(reg: Registry, value: str | None) -> list[str] | None:
    from cl_bench.suites import expand_tasks

    return expand_tasks(reg, _csv(value)) if value else None


def cmd_table(args: argparse.Namespace, reg: Registry) -> int:
    from cl_bench.regress import cell_suspects
    from cl_bench.report.table import render, summarize

    results = Path(args.results_dir)
    summary = summarize(results, reg, tasks=_task_list(reg, args.tasks),
                        methods=_method_list(reg, args.methods, [results]), metric=args.metric)
    sys.stdout.write(render(summary, args.format))
    if args.format == "markdown":
        flagged = [(c, why) for c in summary.cells
                   if (why := cell_suspects(results, c, records=summary.records.get((c.method, c.task))))]
        if flagged:
            print(f"\n{len(flagged)} suspect cell(s) (checkpoint sanity gate):")
            for c, why in flagged:
                print(f"- {c.method} / {c.task}: {'; '.join(why)}")
    return 0


def cmd_leaderboard(args: argparse.Namespace, reg: Registry) -> int:
    from cl_bench.report.leaderboard import build_site

    out = build_site(Path(args.results_dir), reg, Path(args.out), tasks=_task_list(reg, args.tasks),
                     methods=_method_list(reg, args.methods, [Path(args.results_dir)]))
    print(f"leaderboard written to {out / 'index.html'}")
    return 0


def cmd_claims(args: argparse.Namespace, reg: Registry) -> int:
    from cl_bench.claims import evaluate_all, render

    methods = _csv(args.methods) if args.methods else None
    for m in methods or []:
        reg.method(m)  # an unknown id is one line
    sys.stdout.write(render(evaluate_all(Path(args.results_dir), reg, methods), args.format))
    return 0


def cmd_agree(args: argparse.Namespace, reg: Registry) -> int:
    from cl_bench.report.rank_agreement import rank_agreement

    tasks = _csv(args.tasks)
    if len(tasks) != 2:
        raise ClBenchError(f"--tasks takes exactly two task ids (A,B), got {len(tasks)}")
    out = rank_agreement(Path(args.results_dir), reg, tasks[0], tasks[1], _csv(args.methods) if args.methods else None)
    sys.stdout.write(out.render())
    return 0


def cmd_regress(args: argparse.Namespace, reg: Registry) -> int:
    import tempfile

    from cl_bench.regress import compare, render_report

    tasks = _task_list(reg, args.tasks)
    methods = _csv(args.methods) if args.methods else None
    current = Path(args.results_dir) if args.results_dir else None
    seeds = _seeds(args)
    if args.checkpoint:
        from cl_bench.engine import run

        if not methods or len(methods) != 1 or not tasks:
            raise ClBenchError("--checkpoint needs exactly one --methods M and --tasks (e.g. suite:embedded-fast)")
        method = reg.method(methods[0])
        current = current or Path(tempfile.mkdtemp(prefix="clbench-regress-"))
        for task in tasks:
            for seed in seeds:
                opts = _run_options(args, reg, seed)
                opts.results_dir = current
                _print_outcome(run(reg.task(task), method, opts))
    report = compare(current or Path(default_results()), Path(args.baseline), reg, tasks=tasks, methods=methods,
                     allow_missing=args.allow_missing)
    sys.stdout.write(render_report(report))
    return report.exit_code


def cmd_export(args: argparse.Namespace, reg: Registry) -> int:
    from cl_bench.export import cli_export

    return cli_export(args.checkpoint, args.out, args.to)


def cmd_diff(args: argparse.Namespace, reg: Registry) -> int:
    import json

    from cl_bench.diff import diff_results

    report = diff_results(Path(args.a), Path(args.b))
    if args.format == "json":
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.to_text(limit=args.limit))
    return 0


def default_results() -> str:
    """Where results go without --results-dir: $CLBENCH_RESULTS, else ./results."""
    return os.environ.get("CLBENCH_RESULTS") or "results"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clbench", description="Benchmark contrastive and in-context learning methods.")
    p.add_argument("--version", action="version", version=f"cl_bench {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def run_args(sp: argparse.ArgumentParser, checkpoint: bool = True, budget: bool = True) -> None:
        sp.add_argument("--seed", type=int, default=0, help="seed (first seed with --seeds)")
        sp.add_argument("--seeds", type=int, default=None, help="run N seeds: seed, seed+1, ...")
        sp.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
        if checkpoint:
            sp.add_argument("--checkpoint", default=None, help="evaluate this checkpoint under the method's loader")
            sp.add_argument("--arch-param", action="append", default=[], metavar="KEY=VALUE",
                            help="override one of the method's arch params (e.g. model=resnet50); repeatable")
        sp.add_argument("--data-root", default=None, help="root of real datasets (else $CLBENCH_DATA)")
        sp.add_argument("--cache-dir", default=None,
                        help="cache root: checkpoints, features, generated data, text vectors (else $CLBENCH_CACHE)")
        sp.add_argument("--results-dir", default=default_results(),
                        help="where result JSONs go (default $CLBENCH_RESULTS, else ./results)")
        sp.add_argument("--workers", default="auto",
                        help="loader workers decoding images for feature extraction: N or auto (0: in-process)")
        sp.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                        help="feature extraction precision (bf16/fp16: autocast; recorded, marked in tables)")
        sp.add_argument("--threads", default="auto",
                        help="torch threads: N or auto ($OMP_NUM_THREADS, else the CPUs left by workers); recorded")
        if budget:
            sp.add_argument("--smoke", action="store_true",
                            help="the task's real pipeline at a tiny budget (a few training iterations, "
                                 "8 evaluated items): recorded, never mixed into table / leaderboard / regress")
            sp.add_argument("--limit", type=int, default=None, metavar="N",
                            help="evaluate only the first N test items (per dataset / pattern / language pair "
                                 "where a task averages several); recorded, never mixed into comparisons")

    sp = sub.add_parser("list", help="list tasks, methods or components")
    sp.add_argument("what", choices=["tasks", "methods", "datasets", "protocols", "objectives", "archs"])
    sp.set_defaults(fn=cmd_list)

    sp = sub.add_parser("show", help="show one task or method spec")
    sp.add_argument("name")
    sp.set_defaults(fn=cmd_show)

    sp = sub.add_parser("run", help="evaluate one method on one task")
    sp.add_argument("--method", required=True)
    sp.add_argument("--task", required=True)
    run_args(sp)
    sp.add_argument("--name", default=None,
                    help="record the result under this id (its own row in table / leaderboard / regress), "
                         "e.g. one per checkpoint of a generic method; the method id is kept as built_from")
    sp.set_defaults(fn=cmd_run)

    sp = sub.add_parser("train", help="train (or reuse) a method's checkpoint for a task's data")
    sp.add_argument("--method", required=True)
    sp.add_argument("--task", required=True)
    run_args(sp, checkpoint=False, budget=False)
    sp.set_defaults(fn=cmd_train)

    sp = sub.add_parser("sweep", help="methods × tasks × seeds, resumable")
    sp.add_argument("--methods", required=True, help="comma-separated method ids")
    sp.add_argument("--tasks", required=True, help="comma-separated task ids and/or suite:NAME")
    run_args(sp, checkpoint=False)
    sp.add_argument("--executor", default="local", choices=["local", "ray"], help="where runs execute")
    sp.add_argument("--address", default=None, help="Ray cluster: auto | HOST:PORT (default: start a local one)")
    sp.add_argument("--dry-run", action="store_true", help="list runs to do / skip with time estimates")
    sp.add_argument("--jobs", type=int, default=1,
                    help="local executor: independent runs in N processes (threads split between them)")
    sp.set_defaults(fn=cmd_sweep)

    sp = sub.add_parser("table", help="methods × tasks: mean ± std over seeds")
    sp.add_argument("--results-dir", default=default_results())
    sp.add_argument("--format", default="markdown", choices=["markdown", "csv", "latex", "json"])
    sp.add_argument("--tasks", default=None)
    sp.add_argument("--methods", default=None)
    sp.add_argument("--metric", default=None, help="metric to show (default: each task's primary)")
    sp.set_defaults(fn=cmd_table)

    sp = sub.add_parser("leaderboard", help="static HTML leaderboard (works offline)")
    sp.add_argument("--results-dir", default=default_results())
    sp.add_argument("--out", default="leaderboard", help="output folder (default ./leaderboard)")
    sp.add_argument("--tasks", default=None, help="task ids and/or suite:NAME (default: all)")
    sp.add_argument("--methods", default=None)
    sp.set_defaults(fn=cmd_leaderboard)

    sp = sub.add_parser("claims", help="check the papers' claims (method YAML paper.claims) against the results")
    sp.add_argument("--results-dir", default=default_results())
    sp.add_argument("--methods", default=None, help="only these methods' claims (default: all)")
    sp.add_argument("--format", default="markdown", choices=["markdown", "json"])
    sp.set_defaults(fn=cmd_claims)

    sp = sub.add_parser("agree", help="how alike two tasks rank the methods (Spearman over method means)")
    sp.add_argument("--tasks", required=True, help="two task ids: A,B")
    sp.add_argument("--methods", default=None)
    sp.add_argument("--results-dir", default=default_results())
    sp.set_defaults(fn=cmd_agree)

    sp = sub.add_parser(
        "regress", help="compare results with a baseline set; exit 1 on a regression",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit codes:\n"
               "  0  every baseline cell has a comparable current result and none regressed\n"
               "  1  a metric regressed beyond its tolerance, or a current result is suspect (sanity gate)\n"
               "  2  usage error: unknown task/method name, missing --results-dir/--baseline, bad input\n"
               "  3  a baseline cell is missing or incomparable (other spec) in the current results;\n"
               "     --allow-missing accepts that\n"
               "  4  nothing was compared: no method/task has comparable results on both sides")
    sp.add_argument("--baseline", required=True, help="results directory to compare against")
    sp.add_argument("--tasks", default=None, help="task ids and/or suite:NAME (default: all)")
    sp.add_argument("--methods", default=None, help="method ids (exactly one with --checkpoint)")
    sp.add_argument("--checkpoint", default=None,
                    help="first evaluate this checkpoint of --methods M on --tasks, then compare")
    sp.add_argument("--allow-missing", action="store_true",
                    help="do not fail (exit 3) when baseline cells are missing or incomparable in the current results")
    run_args(sp, checkpoint=False)
    sp.set_defaults(fn=cmd_regress, results_dir=None)
    sp = sub.add_parser("export", help="convert a ResNet backbone checkpoint for detectron2 / mmdet / mmseg")
    sp.add_argument("--to", required=True, choices=["detectron2", "mmdet", "mmseg"])
    sp.add_argument("checkpoint", help="encoder checkpoint (.safetensors / .pth; MoCo/PixPro prefixes handled)")
    sp.add_argument("out", help="output file: .pkl for detectron2, .pth for mmdet/mmseg")
    sp.set_defaults(fn=cmd_export)

    sp = sub.add_parser("diff", help="which test items flipped between two results (same task)")
    sp.add_argument("a", help="result A: results/<method>/<task>/seed<k>.json")
    sp.add_argument("b", help="result B (e.g. another checkpoint or seed of the same task)")
    sp.add_argument("--limit", type=int, default=20, help="flipped items to list (default 20)")
    sp.add_argument("--format", default="text", choices=["text", "json"])
    sp.set_defaults(fn=cmd_diff)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cache_dir = getattr(args, "cache_dir", None)
    env_before = os.environ.get("CLBENCH_CACHE")
    if cache_dir:  # the whole cache moves (generated data, text vectors, sweep workers), not only checkpoints
        os.environ["CLBENCH_CACHE"] = str(Path(cache_dir).expanduser().resolve())
    try:
        return args.fn(args, Registry())
    except ClBenchError as e:
        print(f"clbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("clbench: interrupted", file=sys.stderr)
        return 130
    finally:
        if cache_dir:  # in-process callers (tests, notebooks) get their environment back
            if env_before is None:
                os.environ.pop("CLBENCH_CACHE", None)
            else:
                os.environ["CLBENCH_CACHE"] = env_before


if __name__ == "__main__":
    sys.exit(main())
