"""Task, method and result records (pydantic v2), and loading them from YAML/JSON."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    FiniteFloat,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from cl_bench.errors import ClBenchError
from cl_bench.params import Strict, describe_validation_error
from cl_bench.spec_include import deep_merge, load_with_includes

CAPABILITIES = ("image_encoder", "text_encoder", "image_text", "causal_lm", "sequence_model")
Capability = Literal["image_encoder", "text_encoder", "image_text", "causal_lm", "sequence_model"]
# A task / method id is a plain name: one path component of the results store, never "." or ".."
# (it starts with a letter or digit), never a separator, at most 100 characters.
PLAIN_NAME = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$"
PlainName = Annotated[str, StringConstraints(pattern=PLAIN_NAME)]
MAX_SEED = 2**31 - 1
# The predictions file a result names: a sibling of its JSON (seed<k>.preds.npz, or content-addressed
# seed<k>.<sha256 prefix>.preds.npz).
PREDICTIONS_FILE = re.compile(r"^seed\d+(\.[0-9a-f]{16,64})?\.preds\.npz$")


class SpecFile(Strict):
    """A spec read from a YAML file; remembers the file for error messages."""

    _path: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> str:
        return str(self._path) if self._path else f"<{type(self).__name__} {getattr(self, 'id', '')}>"


class DatasetRef(Strict):
    """A dataset component and its parameters (see ``clbench list datasets``)."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class ProtocolRef(Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class RegressionTolerance(Strict):
    """How much a metric may drop before ``clbench regress`` calls it a regression:
    max(abs_floor, k_std × the baseline's seed std)."""

    abs_floor: float = Field(default=1.0, ge=0)
    k_std: float = Field(default=3.0, ge=0)
    lower_is_better: list[str] = Field(default_factory=list)


class Resources(Strict):
    """What one run of the task asks of an executor (Ray)."""

    cpus: float = Field(default=1.0, gt=0)
    gpus: float = Field(default=0.0, ge=0)


class ArchRef(Strict):
    """An encoder architecture component and its parameters."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class TaskSetting(Strict):
    """The published setting a task reproduces, for checking ``same_setting`` claims: the paper's
    evaluation ``protocol`` and ``data`` split in words, and the backbones it was run with
    (a method matches an entry when the arch name is equal and every listed param is equal).
    Descriptive: not part of the spec hash."""

    protocol: str
    data: str
    architecture: list[ArchRef] = Field(min_length=1)


class TaskSpec(SpecFile):
    id: PlainName
    version: int = Field(ge=1)
    description: str
    dataset: DatasetRef
    protocol: ProtocolRef
    primary_metric: str
    metrics: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    changelog: dict[int, str] = Field(default_factory=dict)
    regression: RegressionTolerance | None = None
    resources: Resources | None = None
    setting: TaskSetting | None = None  # the paper setting it reproduces, if any

    def spec_hash(self) -> str:
        """Hash of everything that changes numbers (not prose, tags, tolerances, resources or setting)."""
        content = self.model_dump(
            mode="json", exclude={"description", "tags", "changelog", "regression", "resources", "setting"}
        )
        return canonical_hash(content)


class TrainRecipe(Strict):
    """How to train the method's encoder fresh. Everything here goes into the recipe hash."""

    objective: str
    params: dict[str, Any] = Field(default_factory=dict)
    epochs: int = Field(ge=0, le=100_000)
    batch_size: int = Field(ge=2, le=1_000_000)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    momentum: float = 0.9
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: int = Field(default=0, ge=0, le=100_000)
    augment: dict[str, Any] = Field(default_factory=dict)
    data: DatasetRef | None = None  # None: the train split of the task being evaluated


class ReportedNumber(Strict):
    """A number the method's paper reports, with where it comes from and its setting."""

    metric: str
    value: float
    setting: str  # dataset, backbone, schedule... in words
    source: str  # e.g. "arXiv 2110.06848, Table 2"
    task: str | None = None  # the cl_bench task measuring the same thing, if any
    # true only when ``task`` reproduces the paper's exact setting: the registry refuses it unless
    # the task declares a ``setting`` whose protocol and data equal ``protocol`` / ``data`` here
    # and whose architecture list admits the method's arch
    same_setting: bool = False
    protocol: str | None = None  # the paper's evaluation protocol (as the task's setting names it)
    data: str | None = None  # the paper's data split (as the task's setting names it)


class ClaimSpec(Strict):
    """A qualitative claim of the method's paper as a statement over results (grammar in
    :mod:`cl_bench.claim_statements`), tested one-sided over seeds by ``clbench claims``."""

    statement: str
    test: Literal["welch", "paired"] = "welch"  # Welch's t over seeds, or paired t by seed
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    source: str = ""  # where the paper says it (section / table / figure)

    @field_validator("statement")
    @classmethod
    def _parses(cls, v: str) -> str:
        from cl_bench.claim_statements import parse_statement

        parse_statement(v)  # ValueError -> a validation error naming the claim
        return v


class PaperRef(Strict):
    title: str
    arxiv: str | None = None
    url: str | None = None
    reported: list[ReportedNumber] = Field(default_factory=list)
    claims: list[ClaimSpec] = Field(default_factory=list)  # not in the spec hash (paper is not)


class ReleasedWeights(Strict):
    """Where a method's authors publish its weights and how their file is laid out. Never fetched:
    the user downloads ``files`` from ``source`` and passes them with ``--checkpoint``. The loader
    checks a file against ``encoder_prefix`` and ``dropped`` (nothing else may be in it)."""

    source: str  # the download page or hub id the authors give
    files: list[str] = Field(default_factory=list)  # published file names, in stage order when stacked
    encoder_prefix: str | None = None  # the encoder's key prefix in the file ("" = none); None: not checked
    dropped: list[str] = Field(default_factory=list)  # key prefixes that are not the encoder (heads, copies)
    weights: Literal["online", "ema", "single"] = "single"  # which copy is evaluated when the file holds two


class TaskOverride(Strict):
    """What a method changes on one task (``MethodSpec.by_task``): mappings merged onto its
    ``arch`` and ``train``."""

    arch: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)


class MethodSpec(SpecFile):
    id: PlainName
    description: str
    provides: list[Capability]
    arch: ArchRef
    train: TrainRecipe | None = None
    checkpoint: str | None = None  # a default checkpoint path (users pass --checkpoint)
    released: ReleasedWeights | None = None  # the authors' released weights (layout, download location)
    paper: PaperRef | None = None
    tags: list[str] = Field(default_factory=list)
    # per-task overrides of ``arch`` and ``train``, deep-merged on top of them (as ``include:`` merges)
    # for the runs of that task only: a task-keyed model size and budget. Runs of other tasks never
    # see it, nor does their spec hash (:meth:`for_task`), so one task's budget can change without
    # making another task's results stale.
    by_task: dict[PlainName, TaskOverride] = Field(default_factory=dict)

    @field_validator("provides")
    @classmethod
    def _nonempty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("must list at least one capability")
        return v

    @model_validator(mode="after")
    def _by_task_resolves(self) -> MethodSpec:
        for task_id, over in self.by_task.items():
            if over.train and self.train is None:
                raise ValueError(f"by_task.{task_id}.train overrides a train recipe; add train: or drop it")
            try:
                self.for_task(task_id)
            except ValidationError as e:
                err = e.errors()[0]
                where = ".".join(str(p) for p in err["loc"])
                raise ValueError(f"by_task.{task_id}: {where}: {err['msg']}") from None
        return self

    def for_task(self, task_id: str) -> MethodSpec:
        """The method as it runs on ``task_id``: its ``by_task`` entry for that task (if any) merged
        into ``arch`` and ``train``, and no ``by_task`` left; ``self`` when it has none."""
        if not self.by_task:
            return self
        update: dict[str, Any] = {"by_task": {}}
        over = self.by_task.get(task_id)
        if over is not None and over.arch:
            update["arch"] = ArchRef.model_validate(deep_merge(self.arch.model_dump(), over.arch))
        if over is not None and over.train and self.train is not None:
            update["train"] = TrainRecipe.model_validate(deep_merge(self.train.model_dump(), over.train))
        return self.model_copy(update=update)

    def spec_hash(self) -> str:
        """Hash of what changes numbers; a method with a ``by_task`` entry has another hash on that
        task than on the others: a run's result carries the hash of ``for_task(task)``."""
        content = self.model_dump(mode="json", exclude={"description", "tags", "paper", "released", "by_task"})
        if self.by_task:
            content["by_task"] = {k: v.model_dump(mode="json") for k, v in self.by_task.items()}
        if self.train is not None:  # an objective past version 1 (its code changed what it trains)
            from cl_bench.methods.objective import objective_version

            try:
                v = objective_version(self.train.objective)
            except ClBenchError:  # an unknown objective: refused where the method is trained
                v = 1
            if v != 1:
                content["objective_version"] = v
        return canonical_hash(content)


class Timings(Strict):
    train_s: float = 0.0
    features_s: float = 0.0
    protocol_s: float = 0.0
    total_s: float = 0.0


class RunBudget(Strict):
    """A reduced budget (``--smoke`` / ``--limit``; :mod:`cl_bench.budget`): what was asked and what
    the protocol cut. A result with one is never combined with full results."""

    smoke: bool = False
    limit: int | None = Field(default=None, ge=1)  # evaluated items (per dataset / pattern / pair where stated)
    train_steps: int | None = Field(default=None, ge=0)  # training iterations the protocol ran
    applied: dict[str, str] = Field(default_factory=dict)  # part -> what was kept, in words


class ResultRecord(Strict):
    """One (method, task, seed) run: metrics + provenance. Written once, atomically."""

    schema_version: int = 1
    task: PlainName
    task_version: int
    task_spec_hash: str
    method: PlainName
    method_spec_hash: str
    seed: int = Field(ge=0, le=MAX_SEED)
    primary_metric: str
    metrics: dict[str, FiniteFloat | None]  # None: undefined on the data (COCO APl without large objects)
    extras: dict[str, Any] = Field(default_factory=dict)
    model_fingerprint: str
    model_source: Literal["trained", "checkpoint", "untrained", "parameter-free"]
    recipe_hash: str | None = None
    checkpoint: dict[str, Any] | None = None  # path, sha256, load report
    dataset_fingerprint: str
    code_version: str
    git_commit: str | None = None
    libraries: dict[str, str]
    device: str
    timings: Timings
    created_utc: str
    command: str | None = None
    predictions: dict[str, Any] | None = None  # {file, sha256, n}: per-item predictions beside the JSON
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # of feature extraction (--precision)
    threads: int | None = None  # torch threads chosen for the run (None: not recorded)
    loader_workers: int | None = None  # data-loader workers of feature extraction
    budget: RunBudget | None = None  # None: the task's full budget
    built_from: PlainName | None = None  # run --name: the method id the named result was made with

    @model_validator(mode="after")
    def _primary_is_a_number(self) -> ResultRecord:
        if self.metrics.get(self.primary_metric) is None:
            raise ValueError(f"the primary metric '{self.primary_metric}' has no finite value")
        if self.predictions is not None and not PREDICTIONS_FILE.match(str(self.predictions.get("file", ""))):
            raise ValueError(f"predictions file {self.predictions.get('file')!r} is not a seed<k>[.<sha>].preds.npz "
                             "sibling of the result")
        return self

    @property
    def primary(self) -> float:
        value = self.metrics[self.primary_metric]
        assert value is not None  # checked on construction
        return value


def canonical_hash(content: Any) -> str:
    blob = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def read_yaml(path: Path) -> Any:
    """The one way a spec file is read: a bounded regular file, strict safe YAML (the C parser
    when available, duplicate keys and alias bombs refused; see :mod:`cl_bench.yaml_loader`)."""
    from cl_bench.bounded_io import MAX_SPEC_BYTES, read_text
    from cl_bench.yaml_loader import load_yaml_text

    return load_yaml_text(read_text(Path(path), MAX_SPEC_BYTES, "YAML file"), str(path))


def parse_model(model: type[BaseModel], data: Any, path: Path) -> Any:
    if not isinstance(data, dict):
        raise ClBenchError(f"{path}: expected a mapping of fields at the top level")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ClBenchError(describe_validation_error(path, e)) from None


def load_task(path: Path) -> TaskSpec:
    """A task spec, its ``include:`` files resolved (:mod:`cl_bench.spec_include`)."""
    spec = parse_model(TaskSpec, load_with_includes(path, read_yaml), path)
    _check_id_matches_file(spec.id, path)
    spec._path = path
    return spec


def load_method(path: Path) -> MethodSpec:
    """A method spec, its ``include:`` files resolved (:mod:`cl_bench.spec_include`)."""
    spec = parse_model(MethodSpec, load_with_includes(path, read_yaml), path)
    _check_id_matches_file(spec.id, path)
    spec._path = path
    return spec


def load_result(path: Path) -> ResultRecord:
    from cl_bench.bounded_io import MAX_RESULT_BYTES, read_json

    return parse_model(ResultRecord, read_json(Path(path), MAX_RESULT_BYTES, "result JSON"), path)


def _check_id_matches_file(spec_id: str, path: Path) -> None:
    if spec_id != path.stem:
        raise ClBenchError(f"{path}: id '{spec_id}' must equal the file name '{path.stem}'")
