"""The hostile corpus: one case per class of bad input the reliability issue (#15) names, and per
real on-disk format. Each case builds its input in a scratch folder and says how ``clbench``
must end: ``rc=2`` with one ``clbench: error:`` line matching ``match`` (the default), or a
documented clean outcome (another exit code, with ``match`` searched in stdout + stderr).

Conventions inside the scratch folder: ``data/`` is the data root, ``results/`` the results
directory, ``cache/`` the cache, ``registry/`` extra task/method specs (the tiny fixtures of
``tests/conftest.py`` plus :data:`CORPUS_SPECS`).
"""

from __future__ import annotations

import json
import os
import pickle
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tests.hostile import formats as fmt

CORPUS_SPECS = {
    "tasks/h-imagefolder.yaml": """
        id: h-imagefolder
        version: 1
        description: kNN on a tiny image folder (hostile corpus)
        dataset: {name: imagefolder, params: {root: imagefolder, resize: 32, crop: 24}}
        protocol: {name: knn, params: {k: 1}}
        primary_metric: top1
    """,
    "tasks/h-mmeb.yaml": """
        id: h-mmeb
        version: 1
        description: one MMEB dataset, small images (hostile corpus)
        dataset: {name: mmeb, params: {datasets: [VOC2007], image_size: 32}}
        protocol: {name: mmeb, params: {normalize: true}}
        primary_metric: overall
    """,
    "tasks/h-huge.yaml": """
        id: h-huge
        version: 1
        description: a size typo (hostile corpus)
        dataset: {name: scenes-coco, params: {n_train: 1000000000, n_test: 10}}
        protocol: {name: knn, params: {k: 1}}
        primary_metric: top1
    """,
    "baselines/h-clip.yaml": """
        id: h-clip
        description: an untrained scene-clip (hostile corpus)
        provides: [image_text]
        arch: {name: scene-clip, params: {embed_dim: 64, image_width: 16, text_width: 64, text_layers: 2}}
    """,
}


@dataclass
class Case:
    name: str
    klass: str  # the class of the issue it stands for
    build: Callable[[Path], list[str]]  # writes the input under scratch, returns the CLI arguments
    match: str = ""
    rc: int = 2
    writes: tuple[str, ...] = ("results/", "cache/")  # where new files may appear
    tags: list[str] = field(default_factory=list)


def write_registry(scratch: Path, extra: dict[str, str] | None = None) -> Path:
    from tests.conftest import TINY

    root = scratch / "registry"
    for rel, text in {**TINY, **CORPUS_SPECS, **(extra or {})}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text).lstrip())
    return root


def dirs(s: Path) -> tuple[Path, Path, Path]:
    return s / "data", s / "results", s / "cache"


def run_args(s: Path, method: str, task: str, *extra: str) -> list[str]:
    data, results, cache = dirs(s)
    data.mkdir(parents=True, exist_ok=True)
    return ["run", "--method", method, "--task", task, "--device", "cpu", "--data-root", str(data),
            "--results-dir", str(results), "--cache-dir", str(cache), *extra]


# ------------------------------------------------------------------ results that cannot lie


def _small_resnet_state(poison: str) -> dict:

    from cl_bench import components

    model = components.get("arch", "small-resnet")({"width": 8}, in_channels=1, image_size=(8, 8))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for k, v in state.items():
        if v.is_floating_point():
            if poison == "nan":
                v.fill_(float("nan"))
            elif poison == "inf" and k.endswith("conv1.weight"):
                v.view(-1)[0] = float("inf")
    return state


def bad_checkpoint(s: Path, poison: str) -> Path:
    from safetensors.torch import save_file

    path = s / "data" / f"{poison}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(_small_resnet_state(poison), str(path))
    return path


def record(s: Path, method: str, task: str, seed: int, top1: float, spec_hash: str | None = None) -> dict:
    from cl_bench.registry import Registry
    from tests.record_helpers import make_record

    reg = Registry([write_registry(s)])
    rec = make_record(reg.task(task), method, seed, top1, spec_hash=spec_hash)
    if method in set(reg.method_ids()):  # made by today's method spec (else the record is stale)
        rec = rec.model_copy(update={"method_spec_hash": reg.method(method).spec_hash()})
    return rec.model_dump(mode="json")


def put(results: Path, rec: dict, name: str | None = None, text: str | None = None) -> Path:
    path = results / rec["method"] / rec["task"] / (name or f"seed{rec['seed']}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text is not None else json.dumps(rec, indent=2))
    return path


def with_results(s: Path, base: list[tuple], cur: list[tuple], *extra: str) -> list[str]:
    """``regress`` of ``cur`` against ``base``; each a list of (method, task, seed, top1[, spec_hash])."""
    for folder, rows in (("base", base), ("results", cur)):
        (s / folder).mkdir(parents=True, exist_ok=True)
        for row in rows:
            put(s / folder, record(s, *row))
    return ["regress", "--baseline", str(s / "base"), "--results-dir", str(s / "results"), *extra]


def nan_metric_result(s: Path, value: str = "NaN") -> Path:
    rec = record(s, "tiny-random", "tiny-knn", 0, 50.0)
    text = json.dumps(rec, indent=2).replace('"top1": 50.0', f'"top1": {value}')
    return put(s / "results", rec, text=text)


def duplicate_key_task(s: Path) -> list[str]:
    write_registry(s, {"tasks/h-dup.yaml": """
        id: h-dup
        version: 1
        description: k given twice (hostile corpus)
        dataset: {name: digits}
        protocol:
          name: knn
          params:
            k: 20
            k: 1
        primary_metric: top1
    """})
    return ["show", "h-dup"]


def coco_with(s: Path, part: str = "annotations", **fields: object) -> list[str]:
    """A valid COCO tree whose first ``images`` / ``annotations`` entry gets ``fields``."""
    doc = fmt.coco_doc()
    doc[part][0].update(fields)
    return coco_raw(s, json.dumps(doc))


def coco_raw(s: Path, text: str | bytes) -> list[str]:
    js = fmt.coco_tree(s / "data")
    for path in js.values():
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return run_args(s, "random", "coco-det-fpn-1x")


def coco_image(s: Path, **img: object) -> list[str]:
    return coco_with(s, "images", **img)


def voc_with(s: Path, **fields: object) -> list[str]:
    fmt.voc_tree(s / "data", **fields)
    return run_args(s, "random", "voc07-det-c4")


def truthfulqa_with(s: Path, labels: list) -> list[str]:
    fmt.truthfulqa_tree(s / "data", labels)
    return run_args(s, "tiny-lm", "truthfulqa-mc1")


CASES: list[Case] = [
    Case("nan-checkpoint-run", "non-finite weights", lambda s: run_args(
        s, "tiny-random", "tiny-knn", "--checkpoint", str(bad_checkpoint(s, "nan"))) if write_registry(s) else [],
        r"weight '.*' has \d+ of \d+ values NaN or infinite"),
    Case("inf-checkpoint-run", "non-finite weights", lambda s: run_args(
        s, "tiny-random", "tiny-knn", "--checkpoint", str(bad_checkpoint(s, "inf"))) if write_registry(s) else [],
        r"weight '[\w.]*conv1.weight' has 1 of \d+ values NaN or infinite"),
    Case("nan-checkpoint-regress", "non-finite weights", lambda s: (write_registry(s), with_results(
        s, [("tiny-random", "tiny-knn", 0, 80.0)], [], "--checkpoint", str(bad_checkpoint(s, "nan")),
        "--methods", "tiny-random", "--tasks", "tiny-knn", "--device", "cpu",
        "--cache-dir", str(s / "cache")))[1], r"NaN or infinite"),
    Case("nan-metric-result-regress", "non-finite metrics", lambda s: (
        write_registry(s), nan_metric_result(s), with_results(s, [("tiny-random", "tiny-knn", 0, 80.0)], []))[2],
        r"seed0.json: field 'metrics.top1': Input should be a finite number"),
    Case("inf-metric-result-table", "non-finite metrics", lambda s: (
        write_registry(s), nan_metric_result(s, "Infinity"), ["table", "--results-dir", str(s / "results")])[2],
        r"field 'metrics.top1': Input should be a finite number"),
    Case("coco-box-infinity", "COCO/VOC boxes", lambda s: coco_raw(
        s, json.dumps(fmt.coco_doc()).replace("[2.0, 3.0, 10.0, 12.0]", "[2.0, 3.0, Infinity, 12.0]")),
        r"instances_train2017.json: field 'annotations.0.bbox.2': Input should be a finite number"),
    Case("coco-box-nan", "COCO/VOC boxes", lambda s: coco_raw(
        s, json.dumps(fmt.coco_doc()).replace("[2.0, 3.0, 10.0, 12.0]", "[NaN, 3.0, 10.0, 12.0]")),
        r"field 'annotations.0.bbox.0': Input should be a finite number"),
    Case("coco-box-negative-size", "COCO/VOC boxes", lambda s: coco_with(s, bbox=[2.0, 3.0, -10.0, 12.0]),
         r"annotations.0.bbox': Value error, box \[x, y, w, h\] = .* negative width or height"),
    Case("coco-box-absurd", "COCO/VOC boxes", lambda s: coco_with(s, bbox=[1e12, 3.0, 10.0, 12.0]),
         r"annotations.0.bbox.0': Input should be less than or equal to 200000"),
    Case("coco-box-far-outside", "COCO/VOC boxes", lambda s: coco_with(s, bbox=[5000.0, 3.0, 10.0, 12.0]),
         r"box #1 .* lies far outside the 32 x 32 image"),
    Case("voc-box-nan", "COCO/VOC boxes", lambda s: voc_with(s, x0="nan"),
         r"000001.xml object #1 \(dog\): field 'xmin': Input should be a finite number"),
    Case("voc-box-infinite", "COCO/VOC boxes", lambda s: voc_with(s, x1="inf"),
         r"field 'xmax': Input should be a finite number"),
    Case("voc-box-absurd", "COCO/VOC boxes", lambda s: voc_with(s, x1="1e9"),
         r"box #1 .* lies far outside"),
    Case("voc-size-absurd", "COCO/VOC boxes", lambda s: voc_with(s, w="10000000000"),
         r"<size>: field 'width': Input should be less than or equal to 100000"),
    Case("truthfulqa-label-1.7", "TruthfulQA label", lambda s: truthfulqa_with(s, [1.7, 0]),
         r"mc_task.json item 0: mc1_targets.labels: field '0': Input should be a valid integer \(got 1.7\)"),
    Case("truthfulqa-label-string", "TruthfulQA label", lambda s: truthfulqa_with(s, ["1", 0]),
         r"mc1_targets.labels: field '0': Input should be a valid integer"),
    Case("yaml-duplicate-key", "YAML duplicate keys", duplicate_key_task,
         r"h-dup.yaml: line 9 is not valid YAML: duplicate key 'k' \(first given on line 8\)"),
]


# ------------------------------------------------------------------ a gate that cannot pass on nothing

R = ("tiny-random", "tiny-knn")
CASES += [
    Case("regress-results-dir-missing", "regress on nothing", lambda s: (write_registry(s), with_results(
        s, [(*R, 0, 80.0)], []) + ["--results-dir", str(s / "nope")])[1], r"results directory .*nope does not exist"),
    Case("regress-all-stale", "regress on nothing", lambda s: (write_registry(s), with_results(
        s, [(*R, 0, 80.0)], [(*R, 0, 80.0, "0" * 64)]))[1], r"1 incomparable.*\nnothing was compared.*\(exit 4\)", rc=4),
    Case("regress-partly-stale", "regress on nothing", lambda s: (write_registry(s), with_results(
        s, [(*R, 0, 80.0), ("tiny-simclr", "tiny-knn", 0, 85.0)],
        [(*R, 0, 80.0), ("tiny-simclr", "tiny-knn", 0, 85.0, "0" * 64)]))[1],
        r"incomparable +tiny-simclr +tiny-knn +top1 .*current measured under task v1 spec 0000000000[\s\S]*\(exit 3\)",
        rc=3),
    Case("regress-missing", "regress on nothing", lambda s: (write_registry(s), with_results(
        s, [(*R, 0, 80.0), ("tiny-simclr", "tiny-knn", 0, 85.0)], [(*R, 0, 80.0)]))[1],
        r"1 missing.*\n1 baseline cell\(s\) missing or incomparable .*--allow-missing", rc=3),
    Case("regress-missing-allowed", "regress on nothing", lambda s: (write_registry(s), with_results(
        s, [(*R, 0, 80.0), ("tiny-simclr", "tiny-knn", 0, 85.0)], [(*R, 0, 80.0)], "--allow-missing"))[1],
        r"OK: .*1 missing.*\n1 method/task pair\(s\) compared; 1 missing .* accepted", rc=0),
    Case("regress-nothing-compared", "regress on nothing", lambda s: (write_registry(s), with_results(
        s, [], []))[1], r"nothing was compared.*exit 4", rc=4),
    Case("regress-unknown-task", "unknown names", lambda s: (write_registry(s), with_results(
        s, [(*R, 0, 80.0)], [(*R, 0, 80.0)], "--tasks", "tiny-knnn"))[1],
        r"unknown task 'tiny-knnn' \(did you mean 'tiny-knn'"),
    Case("regress-unknown-method", "unknown names", lambda s: (write_registry(s), with_results(
        s, [(*R, 0, 80.0)], [(*R, 0, 80.0)], "--methods", "tiny-randomm"))[1], r"unknown method 'tiny-randomm'"),
    Case("regress-regression", "regress exit codes", lambda s: (write_registry(s), with_results(
        s, [(*R, 0, 80.0)], [(*R, 0, 60.0)]))[1], r"REGRESSED +tiny-random +tiny-knn +top1 +80.00 \(n=1\) +60.00 \(n=1\) +-20.00[\s\S]*\(exit 1\)", rc=1),
    Case("table-unknown-method", "unknown names", lambda s: (write_registry(s), [
        "table", "--results-dir", str(s / "results"), "--methods", "simclrr"])[1], r"unknown method 'simclrr'"),
    Case("leaderboard-unknown-task", "unknown names", lambda s: (write_registry(s), [
        "leaderboard", "--results-dir", str(s / "results"), "--tasks", "tiny-knnn", "--out", str(s / "results" / "lb")])[1],
        r"unknown task 'tiny-knnn'"),
    Case("sweep-unknown-task", "unknown names", lambda s: (write_registry(s), [
        "sweep", "--methods", "tiny-random", "--tasks", "tiny-knn,tiny-linearr", "--dry-run",
        "--results-dir", str(s / "results")])[1], r"unknown task 'tiny-linearr'"),
]


# ------------------------------------------------------------------ a store that cannot be escaped or confused


def dotdot_method(s: Path) -> list[str]:
    write_registry(s, {"baselines/...yaml": """
        id: ..
        description: a method whose id is '..' (hostile corpus)
        provides: [image_encoder]
        arch: {name: small-resnet, params: {width: 8}}
    """})
    return run_args(s, "..", "tiny-knn")


def copied_result(s: Path) -> list[str]:
    write_registry(s)
    p = put(s / "results", record(s, *R, 0, 80.0))
    (p.parent / "seed1.json").write_bytes(p.read_bytes())
    return ["table", "--results-dir", str(s / "results")]


def result_file(s: Path, make: Callable[[Path], None]) -> list[str]:
    write_registry(s)
    path = s / "results" / "tiny-random" / "tiny-knn" / "seed0.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    make(path)
    return ["table", "--results-dir", str(s / "results")]


def spec_file(s: Path, make: Callable[[Path], None]) -> list[str]:
    root = write_registry(s)
    make(root / "tasks" / "h-bad.yaml")
    return ["show", "h-bad"]


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(9)) + "id: h-bad\n"


def _big_yaml(p: Path) -> None:
    with open(p, "w") as f:
        f.write("id: h-bad\nversion: 1\ndescription: big\nlist:\n")
        line = "  - " + "x" * 60 + "\n"
        f.write(line * (50 * 2**20 // len(line)))


CASES += [
    Case("method-id-dotdot", "ids and store paths", dotdot_method, r"field 'id': String should match pattern"),
    Case("record-path-mismatch", "record agrees with its path", copied_result,
         r"seed1.json: the record says method 'tiny-random', task 'tiny-knn', seed 0, which belongs at "
         r"tiny-random/tiny-knn/seed0.json"),
    Case("result-invalid-utf8", "bounded reading", lambda s: result_file(s, lambda p: p.write_bytes(b'{"a": "\xff\xfe"}')),
         r"seed0.json is not valid UTF-8 \(byte 7\)"),
    Case("result-deep-json", "bounded reading", lambda s: result_file(s, lambda p: p.write_text("[" * 200_000)),
         r"seed0.json is nested too deeply"),
    Case("result-symlink-to-device", "bounded reading", lambda s: result_file(s, lambda p: p.symlink_to("/dev/zero")),
         r"seed0.json is a character device, not a regular file"),
    Case("result-fifo", "bounded reading", lambda s: result_file(s, lambda p: os.mkfifo(p)),
         r"seed0.json is a FIFO \(named pipe\), not a regular file"),
    Case("result-huge", "bounded reading", lambda s: result_file(s, lambda p: p.write_bytes(b" " * (17 * 2**20))),
         r"seed0.json is 17825792 bytes, more than the 16777216-byte limit"),
    Case("yaml-alias-bomb", "bounded reading", lambda s: spec_file(s, lambda p: p.write_text(ALIAS_BOMB)),
         r"h-bad.yaml: expands to more than 200000 values once its aliases"),
    Case("yaml-recursive-alias", "bounded reading", lambda s: spec_file(s, lambda p: p.write_text("a: &a [*a]\n")),
         r"alias \*a refers to itself"),
    Case("yaml-50mb", "bounded reading", lambda s: spec_file(s, _big_yaml),
         r"h-bad.yaml is \d+ bytes, more than the 4194304-byte limit"),
    Case("yaml-deep", "bounded reading", lambda s: spec_file(s, lambda p: p.write_text("a: " + "[" * 100_000)),
         r"nested deeper than 64 levels"),
    Case("yaml-invalid-utf8", "bounded reading", lambda s: spec_file(s, lambda p: p.write_bytes(b"id: h-bad\x80\n")),
         r"h-bad.yaml is not valid UTF-8 \(byte 9\)"),
    Case("yaml-fifo", "bounded reading", lambda s: spec_file(s, lambda p: os.mkfifo(p)),
         r"h-bad.yaml is a FIFO \(named pipe\), not a regular file"),
    Case("yaml-symlink-to-device", "bounded reading", lambda s: spec_file(s, lambda p: p.symlink_to("/dev/urandom")),
         r"h-bad.yaml is a character device"),
    Case("seeds-huge", "bounds before allocation", lambda s: (write_registry(s), [
        "sweep", "--methods", "tiny-random", "--tasks", "tiny-knn", "--seeds", "1000000000", "--dry-run"])[1],
        r"--seeds must be in 1..1000, got 1000000000"),
    Case("seed-negative", "bounds before allocation", lambda s: (write_registry(s), run_args(
        s, "tiny-random", "tiny-knn", "--seed", "-1"))[1], r"--seed must be in 0..2147483647, got -1"),
    Case("size-param-huge", "bounds before allocation", lambda s: (write_registry(s), run_args(
        s, "tiny-random", "h-huge"))[1], r"'n_train' is 1000000000, beyond 1000000"),
    Case("results-dir-is-a-file", "unwritable dirs", lambda s: (write_registry(s), (s / "results").write_text("x"),
         run_args(s, "tiny-random", "tiny-knn"))[2], r"results directory .*results is not a directory"),
    Case("cache-dir-is-a-file", "unwritable dirs", lambda s: (write_registry(s), (s / "cache").write_text("x"),
         run_args(s, "tiny-random", "tiny-knn"))[2], r"cache directory .*cache is not a directory"),
    Case("results-dir-unwritable", "unwritable dirs", lambda s: (write_registry(s), run_args(
        s, "tiny-random", "tiny-knn")[:-4] + ["--results-dir", "/proc/clbench-results", "--cache-dir", str(s / "cache")])[1],
        r"results directory \(--results-dir\) /proc/clbench-results is not writable"),
    Case("data-root-is-a-fifo", "bounded reading", lambda s: (write_registry(s), (s / "data").mkdir(),
         os.mkfifo(s / "data" / "fifo"), run_args(s, "random", "mnist-knn")[:-6] + [
             "--data-root", str(s / "data" / "fifo")])[3], r"data root .*fifo does not exist or is not a directory"),
]


# ------------------------------------------------------------------ loaders that never crash (per real format)


def mmeb_with(s: Path, **kw: object) -> list[str]:
    write_registry(s)
    fmt.mmeb_tree(s / "data", **kw)
    return run_args(s, "h-clip", "h-mmeb")


def mmvp_with(s: Path, type_name: str) -> list[str]:
    fmt.mmvp_tree(s / "data", type_name)
    return run_args(s, "clip", "mmvp-vlm")  # the data is read (and refused) before any training


def cifar_with(s: Path, batch: bytes) -> list[str]:
    fmt.cifar10_py_tree(s / "data", batch)
    return run_args(s, "random", "cifar10-knn")


def imagefolder_with(s: Path, spoil: Callable[[Path], None]) -> list[str]:
    write_registry(s)
    base = fmt.imagefolder_tree(s / "data")
    spoil(base)
    return run_args(s, "tiny-random", "h-imagefolder")


class RunsShell:
    def __reduce__(self):  # what a malicious pickle does
        return (os.system, ("touch pwned",))


PY2_EVAL = b"\x80\x02c__builtin__\neval\nU\x061 + 1 \x85R."
PY2_COMMANDS = b"\x80\x02}(U\nstate_dictccommands\ngetoutput\nU\x0btouch pwned\x85Ru."


def checkpoint_bytes(s: Path, blob: bytes, name: str = "evil.pth") -> list[str]:
    write_registry(s)
    path = s / "data" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    return run_args(s, "tiny-random", "tiny-knn", "--checkpoint", str(path))


def mnist_with(s: Path, name: str, blob: bytes) -> list[str]:
    d = fmt.mnist_tree(s / "data")
    (d / name).write_bytes(blob)
    return run_args(s, "random", "mnist-knn")


CASES += [
    Case("coco-bbox-strings", "COCO records", lambda s: coco_with(s, bbox=["1", "2", "3", "4"]),
         r"field 'annotations.0.bbox.0': Input should be a valid number"),
    Case("coco-file-name-escapes", "paths in data files", lambda s: coco_image(s, file_name="../../../../etc/passwd"),
         r"field 'images.0.file_name': Value error, path '../../../../etc/passwd' climbs out of its folder"),
    Case("coco-file-name-absolute", "paths in data files", lambda s: coco_image(s, file_name="/etc/passwd"),
         r"path '/etc/passwd' is an absolute path"),
    Case("coco-image-id-object", "COCO records", lambda s: coco_image(s, id={"x": 1}),
         r"field 'images.0.id.int': Input should be a valid integer"),
    Case("coco-not-utf8", "COCO records", lambda s: coco_raw(s, b'{"images": "\xff"}'),
         r"instances_train2017.json is not valid UTF-8"),
    Case("coco-deep-json", "COCO records", lambda s: coco_raw(s, "[" * 200_000), r"nested too deeply"),
    Case("voc-difficult-garbage", "VOC records", lambda s: voc_with(s, difficult="abc"),
         r"field 'difficult': Input should be 0 or 1"),
    Case("voc-imageset-escapes", "paths in data files", lambda s: (fmt.voc_tree(s / "data"), [
        (d / "ImageSets" / "Main" / "trainval.txt").write_text("../../../etc/passwd\n")
        for d in (s / "data" / "VOCdevkit").iterdir()], run_args(s, "random", "voc07-det-c4"))[2],
        r"trainval.txt: path '../../../etc/passwd' climbs out of its folder"),
    Case("voc-entity-bomb", "VOC records", lambda s: voc_with(s) and (
        [(d / "Annotations" / "000001.xml").write_text(
            '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>'
            "<annotation>&b;</annotation>") for d in (s / "data" / "VOCdevkit").iterdir()],
        run_args(s, "random", "voc07-det-c4"))[1], r"000001.xml is not valid VOC XML \(EntitiesForbidden"),
    Case("truthfulqa-not-utf8", "TruthfulQA records", lambda s: (
        fmt.truthfulqa_tree(s / "data").write_bytes(b'[{"question": "\xff"}]'),
        run_args(s, "tiny-lm", "truthfulqa-mc1"))[1], r"mc_task.json is not valid UTF-8"),
    Case("mmeb-path-escapes", "paths in data files", lambda s: mmeb_with(s, qry_img="../../../etc/passwd"),
         r"row 0: field 'qry_img_path': Value error, path '../../../etc/passwd' climbs out of its folder"),
    Case("mmeb-zip-bomb", "decompression bombs", lambda s: mmeb_with(s, zip_member=fmt.zip_bomb_member()),
         r"images.zip: member 'VOC2007/a.jpg' declares 629145600 bytes, more than the 268435456-byte limit"),
    Case("mmeb-corrupt-image-in-zip", "corrupt images", lambda s: mmeb_with(s, zip_member=b"\xff\xd8\xff garbage"),
         r"cannot decode image VOC2007/a.jpg \(.*images.zip\) \(UnidentifiedImageError"),
    Case("mmvp-type-escapes", "paths in data files", lambda s: mmvp_with(s, "../../../x"),
         r"Questions.csv line 2: field 'type': Value error, path '../../../x' climbs out"),
    Case("cifar-pickle-runs-code", "restricted unpickler", lambda s: cifar_with(s, pickle.dumps(RunsShell(), protocol=2)),
         r"data_batch_1: refused to unpickle: global (posix|os).system is not allowed"),
    Case("cifar-pickle-py2-builtin-eval", "restricted unpickler", lambda s: cifar_with(s, PY2_EVAL),
         r"refused to unpickle: global __builtin__.eval is not allowed"),
    Case("cifar-array-impossible-shape", "restricted unpickler", lambda s: cifar_with(
        s, fmt.pickle_array_claiming((2**31 - 1, 2**31 - 1), bytes(6))), r"needs 4611686014132420609 bytes, the pickle holds 6"),
    Case("cifar-array-object-dtype", "restricted unpickler", lambda s: cifar_with(
        s, fmt.pickle_array_claiming((2, 3), bytes(6), b"O")), r"numpy dtype 'O' is not a plain numeric"),
    Case("cifar-label-float", "CIFAR records", lambda s: cifar_with(
        s, pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1.7]}, protocol=2)),
        r"data_batch_1: 'labels': field '1': Input should be a valid integer"),
    Case("mnist-gzip-bomb", "decompression bombs", lambda s: mnist_with(s, "train-images-idx3-ubyte.gz", fmt.gzip_bomb()),
         r"train-images-idx3-ubyte.gz decompresses to more than 268435456 bytes"),
    Case("mnist-impossible-header", "binary headers", lambda s: mnist_with(
        s, "train-images-idx3-ubyte.gz", __import__("gzip").compress(fmt.idx_bytes(2051, (2**32 - 1,) * 3, b""))),
        r"header says \(4294967295, 4294967295, 4294967295\)"),
    Case("stl10-truncated", "binary headers", lambda s: (fmt.stl10_tree(s / "data"), (
        s / "data" / "stl10_binary" / "train_X.bin").write_bytes(bytes(1000)), run_args(s, "random", "stl10-linear"))[2],
        r"train_X.bin: 1000 bytes is not a whole number of 27648-byte STL-10 images"),
    Case("imagefolder-dangling-symlink", "image folders", lambda s: imagefolder_with(
        s, lambda b: (b / "train" / "cat" / "x.png").symlink_to(b / "nowhere.png")), r"x.png is a dangling symlink"),
    Case("imagefolder-symlink-loop", "image folders", lambda s: imagefolder_with(
        s, lambda b: (b / "train" / "cat" / "loop").symlink_to(b / "train")), r"is .*train/cat again \(a symlink loop"),
    Case("imagefolder-fifo", "image folders", lambda s: imagefolder_with(
        s, lambda b: os.mkfifo(b / "train" / "cat" / "f.png")), r"f.png is a FIFO \(named pipe\), not a regular file"),
    Case("imagefolder-decompression-bomb", "decompression bombs", lambda s: imagefolder_with(
        s, lambda b: fmt.bomb_png(b / "val" / "cat" / "0.png")),
        r"image .*0.png declares 3600000000 pixels .*; refused before decoding"),
    Case("imagefolder-corrupt-image", "corrupt images", lambda s: imagefolder_with(
        s, lambda b: (b / "val" / "dog" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")),
        r"cannot decode image .*1.png \("),
    Case("tatoeba-not-utf8", "Tatoeba records", lambda s: (fmt.tatoeba_tree(s / "data", b"Gr\xfc\xdfe\nTag\n"),
         run_args(s, "minilm", "tatoeba-bitext"))[1], r"tatoeba.deu-eng.deu is not valid UTF-8 \(byte 2\)"),
    Case("karpathy-path-escapes", "paths in data files", lambda s: (fmt.karpathy_tree(s / "data", {
        "split": "test", "filepath": "..", "filename": "x.jpg", "sentences": [{"raw": "a"}]}),
        run_args(s, "clip", "coco-retrieval-5k"))[1], r"field 'images.0.filepath.*climbs out"),
    Case("karpathy-wrong-type", "caption records", lambda s: (fmt.karpathy_tree(s / "data", {
        "split": "test", "filepath": "val2014", "filename": "a.jpg", "sentences": [{"raw": 7}]}),
        run_args(s, "clip", "coco-retrieval-5k"))[1], r"field 'images.0.sentences.0.raw': Input should be a valid string"),
    Case("checkpoint-py2-commands", "checkpoint allow-list", lambda s: checkpoint_bytes(s, PY2_COMMANDS),
         r"refused: .*global commands.getoutput \(Python 3: subprocess.getoutput\)"),
    Case("checkpoint-py2-builtin-eval", "checkpoint allow-list", lambda s: checkpoint_bytes(s, PY2_EVAL),
         r"refused: .*global __builtin__.eval \(Python 3: builtins.eval\)"),
    Case("checkpoint-truncated", "corrupt checkpoints", lambda s: checkpoint_bytes(
        s, bad_checkpoint(s, "inf").read_bytes()[:500], "cut.safetensors"), r"cut.safetensors is not a readable safetensors"),
]
