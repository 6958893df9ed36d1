"""Prompts and the pair tasks annotators compare.

Llama 2 §3.2.1: each prompt gets two responses sampled from the latest model with
different settings (temperatures or model variants); annotators compare them.
A task carries everything needed to trace a comparison back: prompt id, the
policy version and sampling parameters of each side, iteration and batch.
Which side is "A" is decided by a hash, so neither temperature sits always on
the left (position bias).
"""
from __future__ import annotations

import hashlib
import html
import json
from dataclasses import dataclass
from typing import Any, Sequence

import pyarrow as pa

from alignline.storage.schemas import TASK_SCHEMA, plain_messages


def _rank(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def select_prompts(prompts: pa.Table, count: int, safety_share: float, iteration: int, batch: int) -> list[dict]:
    """A deterministic batch of prompts: `safety_share` of them safety prompts, the rest helpfulness.

    Each (iteration, batch) reshuffles by hash, so batches differ but a rerun picks the same prompts.
    """
    rows = prompts.to_pylist()
    safety = [r for r in rows if r["is_safety"]]
    helpful = [r for r in rows if not r["is_safety"]]
    n_safety = min(len(safety), round(count * safety_share))
    n_helpful = min(len(helpful), count - n_safety)
    order = lambda r: _rank(f"{iteration}/{batch}/{r['prompt_id']}")  # noqa: E731
    return sorted(helpful, key=order)[:n_helpful] + sorted(safety, key=order)[:n_safety]


def dialogue_html(messages: Sequence[dict]) -> str:
    """The conversation as escaped HTML for the labeling view (its HyperText tag), one block per turn.

    Line breaks are kept (`pre-wrap`) so code and lists in earlier turns read as written.
    """
    return "".join(f'<div style="white-space: pre-wrap; margin: 0 0 0.5em"><b>{html.escape(m["role"].capitalize())}:'
                   f'</b> {html.escape(m["content"])}</div>' for m in messages)


@dataclass(frozen=True)
class Side:
    """One response source: a policy version sampled with these parameters."""
    policy: str                  # registry ref, e.g. 'policy/3'
    sampling: dict[str, Any]     # temperature, top_p, max_new_tokens, seed


def pair_tasks(prompts: Sequence[dict], first: Side, second: Side, answers_first: Sequence[str],
               answers_second: Sequence[str], iteration: int, batch: int) -> list[dict[str, Any]]:
    """Label Studio task data, one per prompt; A/B order by hash so each side lands left about half the time."""
    if not len(prompts) == len(answers_first) == len(answers_second):
        raise ValueError("one answer per prompt and side")
    tasks = []
    for prompt, x, y in zip(prompts, answers_first, answers_second):
        (a, ra), (b, rb) = (first, x), (second, y)
        if int(_rank(f"side/{prompt['prompt_id']}/{iteration}/{batch}"), 16) % 2:
            (a, ra), (b, rb) = (b, rb), (a, ra)
        dialogue = plain_messages(prompt["messages"])
        tasks.append({
            "kind": "safety" if prompt["is_safety"] else "helpfulness",
            "prompt_id": prompt["prompt_id"], "is_safety": bool(prompt["is_safety"]),
            "dialogue": dialogue, "conversation": dialogue_html(dialogue),  # harvest reads `dialogue`; raters see HTML
            "reference": prompt["reference"], "response_a": ra, "response_b": rb,
            "policy_a": a.policy, "policy_b": b.policy,
            "sampling_a": json.dumps(a.sampling, sort_keys=True), "sampling_b": json.dumps(b.sampling, sort_keys=True),
            "iteration": int(iteration), "batch": int(batch),
        })
    return tasks


def tasks_table(tasks: Sequence[dict[str, Any]]) -> pa.Table:
    """Task data (with task_key) -> TASK_SCHEMA, for the catalog."""
    return pa.Table.from_pylist([{f.name: t.get(f.name) for f in TASK_SCHEMA} for t in tasks], schema=TASK_SCHEMA)
