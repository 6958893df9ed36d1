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


def read_jsonl(path: str | Path, quarantine: list[dict] | None = None) -> list[list[Message]]:
    """The file's demonstrations. Strict by default (the first bad line raises SFTDataError naming it); with a
    `quarantine` list, bad lines are appended to it (QUARANTINE_SCHEMA rows: file, line, reason) and skipped."""
    path = Path(path)
    if not path.is_file():
        raise SFTDataError(f"SFT data file {str(path)!r} does not exist")
    dialogues = []
    # bytes split on b"\n": str.splitlines() would also split on U+2028/U+2029, which JSON strings may hold raw
    for n, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise SFTDataError(f"{path.name} line {n}: not UTF-8 ({e.reason} at byte {e.start})") from None
            except (json.JSONDecodeError, RecursionError) as e:
                why = e.msg if isinstance(e, json.JSONDecodeError) else "nested too deeply"
                raise SFTDataError(f"{path.name} line {n}: not valid JSON ({why})") from None
            dialogues.append(to_dialogue(record, f"{path.name} line {n}"))
        except SFTDataError as e:
            if quarantine is None:
                raise
            quarantine.append({"source": path.name, "record_id": f"line {n}", "reason": str(e),
                               "record": raw[:20_000].decode("utf-8", "replace")})
    if not dialogues:
        raise SFTDataError(f"SFT data file {str(path)!r} has no usable records"
                           + (f" ({len(quarantine)} quarantined)" if quarantine else ""))
    return dialogues


def dialogues_table(dialogues: Iterable[list[Message]], source: str | Iterable[str], ids: Iterable[str] | None = None) -> pa.Table:
    dialogues = list(dialogues)
    sources = [source] * len(dialogues) if isinstance(source, str) else list(source)
    ids = list(ids) if ids is not None else [f"{s}-{i:06d}" for i, s in enumerate(sources)]
    return pa.Table.from_pydict({"id": ids, "source": sources, "messages": dialogues}, schema=SFT_SCHEMA)


def table_dialogues(table: pa.Table, name: str = "SFT table") -> list[list[Message]]:
    return validate_sft(table, name)
