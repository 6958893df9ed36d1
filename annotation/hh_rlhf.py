"""Anthropic HH-RLHF JSONL -> comparisons, so public preference sets can be mixed in (Llama 2 §3.2.2).

Each record has `chosen` and `rejected` transcripts made of `\\n\\nHuman:` and
`\\n\\nAssistant:` turns; they share every turn but the last assistant answer.
The shared prefix is the prompt. The public data has no strength rating, so
every pair gets one configurable margin level. A malformed record is rejected
with its line number and a reason; nothing is dropped silently.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from alignline.storage.schemas import MARGIN_LEVELS, comparisons_table, validate_comparisons

TURN = re.compile(r"\n\n(Human|Assistant):")
ROLES = {"Human": "user", "Assistant": "assistant"}


class TranscriptError(ValueError):
    pass


def parse_transcript(text: str) -> list[dict[str, str]]:
    """'\\n\\nHuman: ...\\n\\nAssistant: ...' -> messages; raises TranscriptError on a malformed one."""
    if not isinstance(text, str) or not text.strip():
        raise TranscriptError("empty transcript")
    parts = TURN.split(text if text.startswith("\n\n") else "\n\n" + text.lstrip())
    if parts[0].strip():
        raise TranscriptError("text before the first turn marker")
    messages = [{"role": ROLES[role], "content": content.strip()} for role, content in zip(parts[1::2], parts[2::2])]
    if not messages:
        raise TranscriptError("no Human/Assistant turns")
    for prev, cur in zip(messages, messages[1:]):
        if prev["role"] == cur["role"]:
            raise TranscriptError(f"two {cur['role']} turns in a row")
    if messages[0]["role"] != "user" or messages[-1]["role"] != "assistant":
        raise TranscriptError("must start with Human and end with Assistant")
    return messages


@dataclass
class ImportResult:
    table: pa.Table
    rejects: list[tuple[int, str]] = field(default_factory=list)   # (line number, reason)


def read_hh_rlhf(path: str | Path, margin_level: str = "better", source: str | None = None) -> ImportResult:
    """Read an HH-RLHF JSONL file into COMPARISON_SCHEMA rows, margin level `margin_level` for all."""
    if margin_level not in MARGIN_LEVELS:
        raise ValueError(f"margin level {margin_level!r} is not one of {MARGIN_LEVELS}")
    path = Path(path)
    source = source or f"hh-rlhf:{path.name}"
    rows, rejects = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not {"chosen", "rejected"} <= set(record):
                raise TranscriptError("needs 'chosen' and 'rejected'")
            chosen, rejected = parse_transcript(record["chosen"]), parse_transcript(record["rejected"])
            if chosen[:-1] != rejected[:-1]:
                raise TranscriptError("chosen and rejected do not share the prompt turns")
            if chosen[-1]["content"] == rejected[-1]["content"]:
                raise TranscriptError("chosen and rejected answers are identical")
            if not chosen[-1]["content"] or not rejected[-1]["content"]:
                raise TranscriptError("empty final answer")
        except json.JSONDecodeError as e:
            rejects.append((n, f"not JSON: {e.msg}"))
            continue
        except TranscriptError as e:
            rejects.append((n, str(e)))
            continue
        digest = hashlib.sha256(line.encode()).hexdigest()[:16]
        rows.append({"comparison_id": f"{source}:{n}", "source": source, "kind": "public",
                     "prompt_id": f"hh-{digest}", "prompt": chosen[:-1], "chosen": chosen[-1]["content"],
                     "rejected": rejected[-1]["content"], "margin_level": margin_level, "safety_category": None,
                     "is_safety": False, "annotator": "anthropic", "lead_time_s": None, "task_id": n,
                     "annotation_id": None, "chosen_policy": None, "rejected_policy": None, "iteration": None,
                     "batch": None, "tasks_ref": None, "created_at": None})
    table = comparisons_table(rows)
    validate_comparisons(table, source)
    return ImportResult(table, rejects)
