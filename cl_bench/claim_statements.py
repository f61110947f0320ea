"""A paper's qualitative claim as a statement over results, and its parser.

Grammar (whitespace around the symbols is free)::

    statement := operand (">" operand)+ " on " TASK ["[" METRIC "]"]
    operand   := METHOD ["[" METRIC "]"]

``A > B`` reads "A is better than B": higher for a metric where higher is better, lower for
one where lower is better (the task's ``regression.lower_is_better`` and the usual names:
mse, loss, error ...). The metric is the task's primary metric unless the statement names one;
an operand may name another metric of the same results (``icl-transformer >
icl-transformer[bigram_accuracy] on icll-dfa``: the model beats the in-context bigram baseline
that the protocol reports beside it). A chain ``A > B > C`` is the claim that every adjacent
pair holds (``mv-dhel-v5 > mv-dhel > mv-dhel-v2``: "improves with views").

This module only parses; :mod:`cl_bench.claims` evaluates a statement on results.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = r"[A-Za-z0-9][A-Za-z0-9._+-]*"
_OPERAND = re.compile(rf"^\s*(?P<method>{_NAME})\s*(?:\[\s*(?P<metric>{_NAME})\s*\])?\s*$")
_TAIL = re.compile(rf"\s+on\s+(?P<task>{_NAME})\s*(?:\[\s*(?P<metric>{_NAME})\s*\])?\s*$")


@dataclass(frozen=True)
class Operand:
    """A method's results on the statement's task, read at ``metric`` (None: the statement's)."""

    method: str
    metric: str | None = None

    def text(self) -> str:
        return self.method + (f"[{self.metric}]" if self.metric else "")


@dataclass(frozen=True)
class Statement:
    """``chain[0] > chain[1] > ...`` on ``task`` at ``metric`` (None: the task's primary metric)."""

    chain: tuple[Operand, ...]
    task: str
    metric: str | None = None

    def links(self) -> list[tuple[Operand, Operand]]:
        """The adjacent (better, worse) pairs the chain claims."""
        return list(zip(self.chain, self.chain[1:]))

    def methods(self) -> list[str]:
        return sorted({o.method for o in self.chain})

    def text(self) -> str:
        tail = f" on {self.task}" + (f"[{self.metric}]" if self.metric else "")
        return " > ".join(o.text() for o in self.chain) + tail


def parse_statement(text: str) -> Statement:
    """Parse ``text``; ValueError with a one-line reason (and the expected form) when it is not one."""
    form = "expected 'A > B on TASK' (operands METHOD or METHOD[metric], optional TASK[metric], chains A > B > C)"
    tail = _TAIL.search(text)
    if tail is None:
        raise ValueError(f"claim {text!r}: no ' on TASK' at the end; {form}")
    parts = text[: tail.start()].split(">")
    if len(parts) < 2:
        raise ValueError(f"claim {text!r}: no '>' comparison; {form}")
    chain = []
    for part in parts:
        m = _OPERAND.match(part)
        if m is None:
            raise ValueError(f"claim {text!r}: {part.strip()!r} is not a method id or METHOD[metric]; {form}")
        chain.append(Operand(m["method"], m["metric"]))
    if len(set(chain)) != len(chain):
        raise ValueError(f"claim {text!r}: an operand appears twice; each side must differ")
    return Statement(tuple(chain), tail["task"], tail["metric"])
