"""One run, end to end: resolve, check, obtain the model, load data, features, protocol, record."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cl_bench import components
from cl_bench.atomic import ensure_writable_dir
from cl_bench.budget import Budget, apply_budget
from cl_bench.budget import record as budget_record
from cl_bench.cache import Cache, cache_root
from cl_bench.distributed import check_protocol, is_main
from cl_bench.errors import ClBenchError
from cl_bench.extract import DEFAULT_PRECISION, check_precision, extract_entry
from cl_bench.extract import extract_features as extract_features  # re-exported: callers import it from here
from cl_bench.feature_store import ArrayFeatures, Features
from cl_bench.feed import Feeder, auto_workers
from cl_bench.finite import check_array, check_metrics, json_safe
from cl_bench.obtain import ObtainedModel, obtain_model, seed_everything, with_arch_params
from cl_bench.protocols.base import Protocol, RunContext
from cl_bench.provenance import code_version, describe_device, git_commit, library_versions, utc_now
from cl_bench.registry import Registry
from cl_bench.specs import MethodSpec, ResultRecord, TaskSpec, Timings, canonical_hash
from cl_bench.params import validate_params
from cl_bench.store import check_name, read_result, result_path, write_result

FEATURE_EXTRACTOR_VERSION = "embed-v2"  # v2: chunked entries; the key also holds the precision


@dataclass
class RunOptions:
    seed: int = 0
    device: str = "auto"
    checkpoint: Path | None = None
    data_root: Path | None = None
    cache_dir: Path | None = None
    results_dir: Path = Path("results")
    progress: bool = False
    write: bool = True
    command: str | None = None
    registry: Registry | None = None  # where method names inside an arch resolve (None: the default)
    workers: int | None = 0  # loader workers for lazily decoded data; None: auto_workers(device)
    precision: str = DEFAULT_PRECISION  # fp32 | bf16 | fp16 (autocast) for extraction
    threads: int | None = None  # torch threads the caller set (recorded); None: not chosen
    arch_params: dict[str, Any] = field(default_factory=dict)  # --arch-param overrides, recorded in extras
    budget: Budget = field(default_factory=Budget)  # --smoke / --limit (recorded; never mixed into tables)
    name: str | None = None  # --name: record under this id instead of the method's (built_from = method id)


@dataclass
class RunOutcome:
    record: ResultRecord
    path: Path | None
    model: ObtainedModel
    feature_cache_hits: int = 0
    feature_cache_misses: int = 0
    notes: list[str] = field(default_factory=list)
    predictions: Any = None  # cl_bench.predictions.Predictions, when the protocol gives them


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ClBenchError(f"--device {name} asked for, but no CUDA device is available; use --device cpu")
        return torch.device(name)
    raise ClBenchError(f"unknown --device '{name}'; use auto, cpu or cuda[:N]")


def data_root_of(opts: RunOptions) -> Path | None:
    if opts.data_root is not None:
        root = Path(opts.data_root).expanduser()
    elif os.environ.get("CLBENCH_DATA"):
        root = Path(os.environ["CLBENCH_DATA"]).expanduser()
    else:
        return None
    if not root.is_dir():
        raise ClBenchError(f"data root {root} does not exist or is not a directory; check --data-root / CLBENCH_DATA")
    return root


def check_compatible(task: TaskSpec, method: MethodSpec) -> Protocol:
    protocol: Protocol = components.get("protocol", task.protocol.name)
    if protocol.requires not in method.provides:
        raise ClBenchError(
            f"task '{task.id}' needs {protocol.requires}; method '{method.id}' provides "
            f"{', '.join(method.provides)} — pick a method that provides {protocol.requires}"
        )
    return protocol


def lazy_splits(data: Any) -> list[Any]:
    """The splits of ``data`` decoded item by item (image folders): one worker pool serves them."""
    out = []
    for name in ("train", "test"):
        try:
            split = getattr(data, name, None)
        except ClBenchError:  # evaluation-only data refuses ``train``
            continue
        if split is not None and hasattr(split, "__getitem__") and not hasattr(split, "tensor"):
            out.append(split)
    return out


def result_id(name: str | None, method_id: str) -> str:
    """The id a run records under: ``--name`` (a plain name, like the store's ids) or the method's."""
    if name is None or name == method_id:
        return method_id
    return check_name(name, "--name")


def check_no_full_result_replaced(results_dir: Path, method_id: str, task_id: str, seed: int, budget: Budget) -> None:
    """A reduced-budget run never overwrites a full result (the committed reference results included)."""
    if budget.full:
        return
    path = result_path(results_dir, method_id, task_id, seed)
    if not path.exists():
        return
    try:
        existing = read_result(path)
    except ClBenchError:
        return  # unreadable: the store reports it, a rerun replaces it
    if existing.budget is None:
        raise ClBenchError(f"{path} holds a full-budget result; a --smoke / --limit run would replace it: "
                           "pass --results-dir DIR (a scratch folder) or --name NAME")


def run(task: TaskSpec, method: MethodSpec, opts: RunOptions) -> RunOutcome | None:
    """Evaluate ``method`` on ``task`` for one seed; write the result unless ``opts.write`` is off.

    None only on the worker ranks of a ``torchrun`` job (:mod:`cl_bench.distributed`). Everything
    cached (generated data and text vectors too) goes under ``opts.cache_dir`` when it is set,
    also in a sweep's worker processes.
    """
    with cache_root(opts.cache_dir):
        return _run(task, method, opts)


def _run(task: TaskSpec, method: MethodSpec, opts: RunOptions) -> RunOutcome | None:
    t_start = time.perf_counter()
    if opts.threads is not None:
        torch.set_num_threads(opts.threads)  # a deliberate choice, recorded in the result
    method = with_arch_params(method.for_task(task.id), opts.arch_params)
    protocol = check_compatible(task, method)
    check_protocol(protocol.name)
    params = validate_params(protocol.params, task.protocol.params, f"{task.source}: protocol.params")
    device = resolve_device(opts.device)
    data_root = data_root_of(opts)
    if opts.checkpoint is not None and not Path(opts.checkpoint).exists():
        raise ClBenchError(f"checkpoint {opts.checkpoint} does not exist; check the --checkpoint path")
    cache = Cache(opts.cache_dir)
    record_id = result_id(opts.name, method.id)
    if opts.write:  # before any work: a results or cache path that is a file or read-only is one line
        ensure_writable_dir(opts.results_dir, "results directory (--results-dir)")
        check_no_full_result_replaced(opts.results_dir, record_id, task.id, opts.seed, opts.budget)
    ensure_writable_dir(cache.root, "cache directory (--cache-dir)")

    loader = components.get("dataset", task.dataset.name)
    data = loader(task.dataset.params, data_root)
    reduced = apply_budget(protocol, params, data, opts.budget)  # the protocol says how (cl_bench.budget)
    params, data = reduced.params, reduced.data

    obtained = obtain_model(
        method, data, seed=opts.seed, device=device, cache=cache,
        checkpoint=opts.checkpoint, data_root=data_root, progress=opts.progress, registry=opts.registry,
        smoke=opts.budget.smoke,
    )

    stats: dict[str, float] = {"features_s": 0.0, "hits": 0, "misses": 0}
    precision = check_precision(opts.precision)
    workers = auto_workers(device) if opts.workers is None else int(opts.workers)
    feeder = Feeder(workers, device, datasets=lazy_splits(data))

    def stored(model: torch.nn.Module, split: Any) -> Features:
        t0 = time.perf_counter()

        def finite(rows: np.ndarray) -> None:  # every batch, before it is written to the cache
            check_array(rows, f"features of {type(split).__name__} from method '{method.id}'",
                        "non-finite weights or activations; check the checkpoint")

        feats: Features
        if model is not obtained.model:  # a protocol's own model (e.g. fine-tuned): no caching
            own = ArrayFeatures(extract_features(model, split, device, feeder=feeder, precision=precision))
            finite(own.array)
            feats, hit = own, False
        else:
            key = canonical_hash({
                "model": obtained.fingerprint, "split": split.fingerprint,
                "extractor": FEATURE_EXTRACTOR_VERSION, "precision": precision,
            })
            feats, hit = cache.stored_features(
                key, lambda folder: extract_entry(folder, model, split, device, feeder, precision, check=finite))
        stats["hits" if hit else "misses"] += 1
        stats["features_s"] += time.perf_counter() - t0
        return feats

    def features(model: torch.nn.Module, split: Any) -> np.ndarray:
        return stored(model, split).load()

    seed_everything(opts.seed)
    ctx = RunContext(device=device, seed=opts.seed, extract=features, progress=opts.progress, stored=stored,
                     model_fingerprint=obtained.fingerprint)
    t_proto = time.perf_counter()
    try:
        result = protocol.run(obtained.model, data, params, ctx)
    finally:
        feeder.close()
    protocol_s = time.perf_counter() - t_proto - stats["features_s"]
    if not is_main():  # a torchrun worker: rank 0 evaluates and writes
        return None

    if opts.arch_params:
        result.extras["arch_params"] = dict(opts.arch_params)
    result.extras.setdefault(
        "n_trainable_params", sum(p.numel() for p in obtained.model.parameters() if p.requires_grad)
    )
    if task.primary_metric not in result.metrics:
        raise ClBenchError(
            f"{task.source}: primary_metric '{task.primary_metric}' is not produced by protocol "
            f"'{protocol.name}' (it gives {', '.join(sorted(result.metrics))})"
        )
    total_s = time.perf_counter() - t_start
    budget = None
    if not opts.budget.full:
        budget = budget_record(opts.budget, reduced)
        if obtained.source == "trained" and obtained.card is not None:  # a fresh recipe cut to one epoch
            budget["applied"]["recipe"] = (f"1 of {method.train.epochs if method.train else '?'} training epochs "
                                           f"({obtained.card.get('steps', '?')} steps)")
    record = ResultRecord(
        task=task.id, task_version=task.version, task_spec_hash=task.spec_hash(),
        method=record_id, built_from=method.id if record_id != method.id else None,
        method_spec_hash=method.spec_hash(), seed=opts.seed, budget=budget,
        primary_metric=task.primary_metric,
        metrics=check_metrics(result.metrics, f"protocol '{protocol.name}' on task '{task.id}'", task.primary_metric),
        extras=json_safe(result.extras),
        model_fingerprint=obtained.fingerprint, model_source=obtained.source,
        recipe_hash=obtained.recipe_hash, checkpoint=obtained.checkpoint,
        dataset_fingerprint=data.fingerprint,
        code_version=code_version(), git_commit=git_commit(), libraries=library_versions(),
        device=describe_device(device),
        timings=Timings(
            train_s=round(obtained.train_s, 3), features_s=round(stats["features_s"], 3),
            protocol_s=round(protocol_s, 3), total_s=round(total_s, 3),
        ),
        created_utc=utc_now(), command=opts.command,
        precision=precision, threads=opts.threads, loader_workers=workers,
    )
    path = write_result(opts.results_dir, record, result.predictions) if opts.write else None
    return RunOutcome(record, path, obtained, int(stats["hits"]), int(stats["misses"]), predictions=result.predictions)
