"""The leaderboard overview by task family: one compact table per family, with a family average
where the field reports one.

A task's family follows from its protocol: the capability the protocol ``requires`` of a method
(image encoder, image–text model, text encoder, causal LM, sequence model) and, where that is not
enough, the protocol's ``data_kind`` (detection and segmentation make an image-encoder task dense;
few-shot prompting of a causal LM is in-context learning). No task id is named here, so a new task
lands in its family by its YAML alone.

Family averages (the mean over the family's averaged tasks of each task's mean, for the methods
that have a comparable result on every one of them):

- vision: the mean top-1 over the family's top-1 tasks, as transfer suites do (VTAB-1k's mean
  accuracy over its tasks); tasks whose primary metric is not top-1 (e.g. a separation score)
  are shown but not averaged.
- image–text: the mean over the family's tasks, as DataComp (mean over zero-shot classification
  and retrieval) and MMEB (overall = mean over its meta-tasks) do.
- text: the mean over the family's tasks, as MTEB's "Average" column does.
- dense, language and ICL: no average. Dense transfer papers (MoCo, DenseCL, PixPro) report each
  benchmark's AP / mIoU on its own; TruthfulQA's mc1/mc2/mc3 are three scorings of the same
  questions (averaging them counts one benchmark three times); the ICL tasks mix an error
  (lower is better) with accuracies and their papers report each task on its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Protocol

from cl_bench import components
from cl_bench.specs import TaskSpec


class TaskView(Protocol):
    """What grouping reads of a leaderboard task view (:class:`cl_bench.report.leaderboard.TaskView`)."""

    spec: TaskSpec
    higher_is_better: bool
    entries: dict[str, Any]  # method -> entry with .cells[metric].mean


@dataclass(frozen=True)
class Family:
    key: str  # html id
    title: str
    averaged: bool  # whether the field reports a mean over the family's tasks
    average_metric: str | None  # only tasks with this primary metric are averaged (None: all)
    note: str  # what the average is and why, or why there is none


VISION = Family("vision", "Vision: linear, kNN, few-shot", True, "top1",
                "Average: mean top-1 over this family's top-1 tasks (as VTAB-1k reports a mean accuracy "
                "over its tasks), for methods with all of them; other metrics are not averaged in.")
DENSE = Family("dense", "Dense: detection, segmentation", False, None,
               "No average: dense transfer papers (MoCo, DenseCL, PixPro) report each benchmark's AP / mIoU "
               "on its own, and AP and mIoU are different quantities.")
IMAGE_TEXT = Family("image-text", "Image–text", True, None,
                    "Average: mean over this family's tasks (as DataComp averages zero-shot classification and "
                    "retrieval, and MMEB's overall score averages its meta-tasks), for methods with all of them.")
TEXT = Family("text", "Text embeddings", True, None,
              "Average: mean over this family's tasks (as MTEB's Average column), for methods with all of them.")
LANGUAGE = Family("language", "Language models", False, None,
                  "No average: TruthfulQA's mc1/mc2/mc3 score the same questions three ways; averaging them "
                  "would count one benchmark three times.")
ICL = Family("icl", "In-context learning", False, None,
             "No average: the tasks mix an error (lower is better) with accuracies, and their papers "
             "report each task on its own.")
FAMILIES = (VISION, DENSE, IMAGE_TEXT, TEXT, LANGUAGE, ICL)

# the capability a protocol requires of a method -> its family; a data kind that says more wins
BY_CAPABILITY = {"image_encoder": VISION, "image_text": IMAGE_TEXT, "text_encoder": TEXT,
                 "causal_lm": LANGUAGE, "sequence_model": ICL}
BY_DATA_KIND = {"detection": DENSE, "segmentation": DENSE, "fewshot_text": ICL}


def family_of(requires: str, data_kind: str) -> Family:
    """The family of a protocol that requires ``requires`` and reads ``data_kind`` data; a
    capability no family knows gets a family of its own, named for it, without an average."""
    found = BY_DATA_KIND.get(data_kind) or BY_CAPABILITY.get(requires)
    if found is not None:
        return found
    return Family(f"other-{requires}", f"Other: {requires}", False, None,
                  f"No average: no family is defined for protocols that require {requires}.")


def protocol_family(protocol_name: str) -> Family:
    """The family of a registered protocol."""
    protocol = components.get("protocol", protocol_name)
    return family_of(protocol.requires, protocol.data_kind)


def family_average(means: dict[str, float | None]) -> float | None:
    """The mean of the per-task means over every averaged task; None when a task has no mean."""
    values = [v for v in means.values() if v is not None and not math.isnan(v)]
    if not values or len(values) < len(means):
        return None
    return sum(values) / len(values)


@dataclass
class FamilyView:
    family: Family
    tasks: list[TaskView]
    methods: list[str]  # those with a result (comparable or stale) on one of the tasks; best average first
    averaged_tasks: list[str] = field(default_factory=list)
    averages: dict[str, float] = field(default_factory=dict)  # method -> family average
    higher_is_better: bool = True  # of the averaged tasks (all alike)
    average_colours: dict[str, str] = field(default_factory=dict)  # set by the leaderboard


def group(tasks: Sequence[TaskView], stale_pairs: set[tuple[str, str]],
          other_precision: AbstractSet[str] = frozenset()) -> list[FamilyView]:
    """The tasks shown, one view per family (in :data:`FAMILIES` order, others after, by key).
    Rows in ``other_precision`` (features at bf16/fp16, their own rows) get no family average:
    they are not the tasks' fp32 setting."""
    by_key: dict[str, tuple[Family, list[TaskView]]] = {}
    for view in tasks:
        fam = protocol_family(view.spec.protocol.name)
        by_key.setdefault(fam.key, (fam, []))[1].append(view)
    order = {f.key: i for i, f in enumerate(FAMILIES)}
    out = []
    for key in sorted(by_key, key=lambda k: (order.get(k, len(order)), k)):
        fam, views = by_key[key]
        ids = {v.spec.id for v in views}
        methods = sorted({m for v in views for m in v.entries} | {m for m, t in stale_pairs if t in ids})
        fv = FamilyView(fam, views, methods)
        averaged = [v for v in views if fam.average_metric in (None, v.spec.primary_metric)]
        if fam.averaged and len(averaged) > 1 and len({v.higher_is_better for v in averaged}) == 1:
            fv.averaged_tasks = [v.spec.id for v in averaged]
            for m in (m for m in methods if m not in other_precision):
                means = {v.spec.id: (v.entries[m].cells[v.spec.primary_metric].mean if m in v.entries else None)
                         for v in averaged}
                avg = family_average(means)
                if avg is not None:
                    fv.averages[m] = avg
            fv.higher_is_better = averaged[0].higher_is_better
            better = 1 if fv.higher_is_better else -1
            fv.methods.sort(key=lambda m: (m not in fv.averages, -better * fv.averages.get(m, 0.0), m))
        out.append(fv)
    return out
