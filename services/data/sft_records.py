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

from alignline.storage.schemas import SFT_SCHEMA, Message, SFTDataError, validate_sft, validate_sft_dialogue


def to_dialogue(record: Any, where: str) -> list[Message]:
    """One record -> messages (system?, user, assistant, ...), or SFTDataError naming `where`."""
    if not isinstance(record, dict):
        raise SFTDataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if "messages" in record:
        messages = record["messages"]
    elif "prompt" in record and "response" in record:
        for key in ("prompt", "response", "system"):
            if key in record and record[key] is not None and not isinstance(record[key], str):
                raise SFTDataError(f"{where}: {key!r} must be a string")
        messages = ([{"role": "system", "content": record["system"]}] if record.get("system") else []) + [
            {"role": "user", "content": record["prompt"]}, {"role": "assistant", "content": record["response"]}]
    else:
        raise SFTDataError(f"{where}: needs 'prompt' and 'response' (optional 'system'), or 'messages'; "
                           f"got keys {sorted(record)}")
    return validate_sft_dialogue(messages, where)


def read_jsonl(path: str | Path) -> list[list[Message]]:
    path = Path(path)
    if not path.is_file():
        raise SFTDataError(f"SFT data file {str(path)!r} does not exist")
    dialogues = []
    # split on newlines only: str.splitlines() also splits on U+2028/U+2029, which JSON strings may contain raw
    for n, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
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


def table_dialogues(table: pa.Table, name: str = "SFT table") -> list[list[Message]]:
    return validate_sft(table, name)
