"""Documents, drop records and per-step statistics: what every corpus step passes along.

A step is a small object with `name` and `run(docs, log) -> list[Document]`. A
filter step only decides `filter(doc) -> True | (False, reason)` and hands the
loop to `keep_passing`, so every dropped document is logged with its step and
reason (datatrove's contract; nothing is silently lost).
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol, Sequence

import pyarrow as pa

Verdict = bool | tuple[bool, str]


@dataclass
class Document:
    id: str
    text: str
    source: str
    url: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Dropped:
    id: str
    source: str
    step: str
    reason: str
    text: str
    detail: str = ""  # e.g. the id a duplicate was dropped in favour of


@dataclass
class StepStats:
    step: str
    docs_in: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)   # reason -> documents
    counters: Counter = field(default_factory=Counter)  # edits: replaced PII, removed lines, ...
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "docs_in": self.docs_in, "kept": self.kept,
                "dropped": dict(sorted(self.dropped.items())), "counters": dict(sorted(self.counters.items())),
                "seconds": round(self.seconds, 4)}


class StepLog:
    """Collects one step's drops and counters; `run_steps` makes one per step."""

    def __init__(self, step: str):
        self.stats = StepStats(step)
        self.dropped: list[Dropped] = []

    def drop(self, doc: Document, reason: str, detail: str = "") -> None:
        self.stats.dropped[reason] += 1
        self.dropped.append(Dropped(doc.id, doc.source, self.stats.step, reason, doc.text, detail))

    def count(self, key: str, n: int = 1) -> None:
        if n:
            self.stats.counters[key] += n


class Step(Protocol):
    name: str

    def run(self, docs: Sequence[Document], log: StepLog) -> list[Document]: ...


def keep_passing(check: Callable[[Document], Verdict], docs: Iterable[Document], log: StepLog) -> list[Document]:
    """The loop every filter shares: keep what passes, log the rest with its reason."""
    kept = []
    for doc in docs:
        verdict = check(doc)
        if verdict is True:
            kept.append(doc)
        else:
            log.drop(doc, verdict[1] if isinstance(verdict, tuple) else "filtered")
    return kept


def run_steps(steps: Sequence[Step], docs: Sequence[Document]) -> tuple[list[Document], list[StepStats], list[Dropped]]:
    """Run steps in order; returns the kept documents, each step's stats and every drop."""
    stats, dropped = [], []
    current = list(docs)
    for step in steps:
        log = StepLog(step.name)
        log.stats.docs_in = len(current)
        start = time.perf_counter()
        current = step.run(current, log)
        log.stats.seconds = time.perf_counter() - start
        log.stats.kept = len(current)
        stats.append(log.stats)
        dropped += log.dropped
    return current, stats, dropped


DOCUMENT_SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string()), ("source", pa.string()),
                             ("url", pa.string()), ("metadata", pa.string())])
DROPPED_SCHEMA = pa.schema([("id", pa.string()), ("source", pa.string()), ("step", pa.string()),
                            ("reason", pa.string()), ("detail", pa.string()), ("text", pa.string())])


def documents_to_table(docs: Sequence[Document], extra: dict[str, pa.Array] | None = None) -> pa.Table:
    table = pa.table({"id": [d.id for d in docs], "text": [d.text for d in docs],
                      "source": [d.source for d in docs], "url": [d.url for d in docs],
                      "metadata": [json.dumps(d.metadata, sort_keys=True) for d in docs]}, schema=DOCUMENT_SCHEMA)
    for name, column in (extra or {}).items():
        table = table.append_column(name, column)
    return table


def documents_from_table(table: pa.Table) -> list[Document]:
    cols = table.select(["id", "text", "source", "url", "metadata"]).to_pydict()
    return [Document(i, t, s, u, json.loads(m) if m else {})
            for i, t, s, u, m in zip(cols["id"], cols["text"], cols["source"], cols["url"], cols["metadata"])]


def dropped_to_table(dropped: Sequence[Dropped]) -> pa.Table:
    return pa.table({"id": [d.id for d in dropped], "source": [d.source for d in dropped],
                     "step": [d.step for d in dropped], "reason": [d.reason for d in dropped],
                     "detail": [d.detail for d in dropped], "text": [d.text for d in dropped]}, schema=DROPPED_SCHEMA)


def dropped_from_table(table: pa.Table) -> list[Dropped]:
    c = table.to_pydict()
    return [Dropped(i, s, st, r, t, d) for i, s, st, r, d, t in
            zip(c["id"], c["source"], c["step"], c["reason"], c["detail"], c["text"])]


def stats_from_dict(row: dict[str, Any]) -> StepStats:
    return StepStats(row["step"], row["docs_in"], row["kept"], Counter(row["dropped"]), Counter(row["counters"]), row["seconds"])
