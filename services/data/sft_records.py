"""SFT demonstrations: JSONL in, validated dialogues out, stored as an Arrow table.

A JSONL line is either {"prompt", "response", optional "system"} or
{"messages": [{"role", "content"}, ...]} (multi-turn). Every problem is reported
with its line number and what is allowed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa

from alignline.services.models.chat import ChatFormatError, Message, validate_dialogue

MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])
SFT_SCHEMA = pa.schema([("id", pa.string()), ("source", pa.string()), ("messages", pa.list_(MESSAGE_TYPE))])


class SFTDataError(ValueError):
    """A demonstration that cannot be used; the message names the line and the rule."""


def to_dialogue(record: Any, where: str) -> list[Message]:
    """One record -> messages (system?, user, assistant, ...), or SFTDataError naming `where`."""
    if not isinstance(record, dict):
        raise SFTDataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list):
            raise SFTDataError(f"{where}: 'messages' must be a list of {{role, content}} objects")
    elif "prompt" in record and "response" in record:
        for key in ("prompt", "response", "system"):
            if key in record and record[key] is not None and not isinstance(record[key], str):
                raise SFTDataError(f"{where}: {key!r} must be a string")
        messages = ([{"role": "system", "content": record["system"]}] if record.get("system") else []) + [
            {"role": "user", "content": record["prompt"]}, {"role": "assistant", "content": record["response"]}]
    else:
        raise SFTDataError(f"{where}: needs 'prompt' and 'response' (optional 'system'), or 'messages'; "
                           f"got keys {sorted(record)}")
    try:
        validate_dialogue(messages)
    except ChatFormatError as e:
        raise SFTDataError(f"{where}: {e}") from None
    for i, m in enumerate(messages):
        if m["role"] == "assistant" and not m["content"].strip():
            raise SFTDataError(f"{where}: message {i} is an empty answer")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def read_jsonl(path: str | Path) -> list[list[Message]]:
    path = Path(path)
    if not path.is_file():
        raise SFTDataError(f"SFT data file {str(path)!r} does not exist")
    dialogues = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise SFTDataError(f"{path.name} line {n}: not valid JSON ({e.msg})") from None
        dialogues.append(to_dialogue(record, f"{path.name} line {n}"))
    if not dialogues:
        raise SFTDataError(f"SFT data file {str(path)!r} has no records")
    return dialogues


def dialogues_table(dialogues: Iterable[list[Message]], source: str | Iterable[str], ids: Iterable[str] | None = None) -> pa.Table:
    dialogues = list(dialogues)
    sources = [source] * len(dialogues) if isinstance(source, str) else list(source)
    ids = list(ids) if ids is not None else [f"{s}-{i:06d}" for i, s in enumerate(sources)]
    return pa.Table.from_pydict({"id": ids, "source": sources, "messages": dialogues}, schema=SFT_SCHEMA)


def table_dialogues(table: pa.Table) -> list[list[Message]]:
    missing = {"messages"} - set(table.column_names)
    if missing:
        raise SFTDataError(f"SFT table lacks columns {sorted(missing)}; has {table.column_names}")
    return [to_dialogue({"messages": m}, f"row {i}") for i, m in enumerate(table.column("messages").to_pylist())]
