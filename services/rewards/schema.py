"""The comparisons contract: the columns a preference dataset must have, validated with clear errors.

Llama 2 §3.2.1: a prompt, two responses, which one is better, how much better on
four levels, and for safety data one of three safety categories. Datasets
`comparisons-helpfulness` and `comparisons-safety` (harvested from Label Studio,
or imported from HH-RLHF) and the built-in `comparisons-demo` all conform.
"""
from __future__ import annotations

import json
from typing import Any, TypedDict

import pyarrow as pa

from alignline.services.models.chat import ChatFormatError, Message, validate_dialogue

MARGIN_LEVELS = ("significantly_better", "better", "slightly_better", "negligibly_better")  # Llama 2 §3.2.1
SAFETY_CATEGORIES = ("chosen_safe_rejected_unsafe", "both_safe", "both_unsafe")              # Llama 2 §3.2.1

# column -> (Arrow type, may be null). `prompt` is a JSON list of {role, content} messages ending with a user
# turn, or plain text (one user turn); a list<struct<role, content>> column of the messages is accepted too.
COMPARISON_COLUMNS: dict[str, tuple[pa.DataType, bool]] = {
    "prompt": (pa.string(), False),
    "chosen": (pa.string(), False),
    "rejected": (pa.string(), False),
    "margin_level": (pa.string(), False),
    "safety_category": (pa.string(), True),
    "is_safety": (pa.bool_(), False),
    "source": (pa.string(), False),
}
COMPARISON_SCHEMA = pa.schema([pa.field(k, t, nullable=n) for k, (t, n) in COMPARISON_COLUMNS.items()])


class ComparisonDataError(ValueError):
    """A comparisons table or row that breaks the contract; the message names column, row and rule."""


class Comparison(TypedDict):
    prompt: list[Message]
    chosen: str
    rejected: str
    margin_level: str
    safety_category: str | None
    is_safety: bool
    source: str


def parse_prompt(value: str | list, where: str = "prompt") -> list[Message]:
    """A JSON list of messages (context ending with a user turn), plain text (one user turn), or the messages."""
    if isinstance(value, list):
        value = json.dumps(value)
    text = value.strip()
    if text.startswith("["):
        try:
            messages = json.loads(text)
        except json.JSONDecodeError:
            messages = None  # plain text that happens to start with '['
        if isinstance(messages, list):
            try:
                validate_dialogue(messages, for_generation=True)
            except ChatFormatError as e:
                raise ComparisonDataError(f"{where}: {e}") from None
            return [{"role": m["role"], "content": m["content"]} for m in messages]
    return [{"role": "user", "content": value}]


def validate_comparisons(table: pa.Table, name: str = "comparisons") -> None:
    """Raise ComparisonDataError unless `table` has COMPARISON_COLUMNS with allowed values (extra columns are fine)."""
    missing = [c for c in COMPARISON_COLUMNS if c not in table.column_names]
    if missing:
        raise ComparisonDataError(f"{name} lacks columns {missing}; required: {list(COMPARISON_COLUMNS)} "
                                  f"(services/rewards/schema.py COMPARISON_COLUMNS); has {table.column_names}")
    for column, (want, nullable) in COMPARISON_COLUMNS.items():
        got = table.schema.field(column).type
        messages = column == "prompt" and pa.types.is_list(got) and pa.types.is_struct(got.value_type)
        if got != want and not messages and not (pa.types.is_large_string(got) and want == pa.string()):
            raise ComparisonDataError(f"{name}.{column} has type {got}; allowed: {want}")
        if not nullable and table.column(column).null_count:
            raise ComparisonDataError(f"{name}.{column} has {table.column(column).null_count} null values; allowed: none")
    for column, allowed in (("margin_level", MARGIN_LEVELS), ("safety_category", SAFETY_CATEGORIES)):
        values = set(table.column(column).to_pylist()) - {None}
        bad = sorted(values - set(allowed))
        if bad:
            raise ComparisonDataError(f"{name}.{column} has value {bad[0]!r}; allowed: {', '.join(allowed)}")


def comparison_rows(table: pa.Table, name: str = "comparisons") -> list[Comparison]:
    """Validated rows with the prompt parsed into messages; pairs with chosen == rejected are refused."""
    validate_comparisons(table, name)
    rows: list[Comparison] = []
    for i, r in enumerate(table.select(list(COMPARISON_COLUMNS)).to_pylist()):
        if r["chosen"] == r["rejected"]:
            raise ComparisonDataError(f"{name} row {i}: chosen and rejected are the same text; allowed: different answers")
        rows.append(Comparison(prompt=parse_prompt(r["prompt"], f"{name} row {i} prompt"), chosen=r["chosen"],
                               rejected=r["rejected"], margin_level=r["margin_level"],
                               safety_category=r["safety_category"], is_safety=bool(r["is_safety"]),
                               source=r["source"]))
    return rows


def comparisons_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows (prompt as messages or text) -> a table with COMPARISON_SCHEMA."""
    def prompt_text(p: Any) -> str:
        return p if isinstance(p, str) else json.dumps(list(p), ensure_ascii=False)

    data = {c: [prompt_text(r[c]) if c == "prompt" else r.get(c) for r in rows] for c in COMPARISON_COLUMNS}
    return pa.Table.from_pydict(data, schema=COMPARISON_SCHEMA)
