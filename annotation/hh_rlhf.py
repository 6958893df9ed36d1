"""Anthropic HH-RLHF JSONL (plain or .gz) -> comparisons, so public preference sets can be mixed in (Llama 2 §3.2.2).

Each record has `chosen` and `rejected` transcripts made of `\\n\\nHuman:` and
`\\n\\nAssistant:` turns; they share every turn but the last assistant answer.
The shared prefix is the prompt. The public data has no strength rating, so
every pair gets one configurable margin level, and no safety category (its
harmlessness pairs say which answer is less harmful, not which bin they fall in).
The caller says what kind of file it is: `helpful-base` is helpfulness data,
`harmless-base` safety data (the paper's "Anthropic Harmless", fed to the safety
RM). A malformed record is quarantined with its line number, a reason and its
text; nothing is dropped silently. A held-out share of the prompts, chosen by a
hash of the prompt, is returned apart so publishers can store it as its own
dataset that no training step reads.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import re
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple

import pyarrow as pa

from alignline.storage.schemas import KINDS, MARGIN_LEVELS, comparisons_table, has_lone_surrogate, validate_comparisons

TURN = re.compile(r"\n\n(Human|Assistant):")
ROLES = {"Human": "user", "Assistant": "assistant"}
GZIP_MAGIC = b"\x1f\x8b"


class TranscriptError(ValueError):
    pass


class HHImportError(ValueError):
    """The file as a whole cannot be read (not gzip, truncated, missing); the message says which and why."""


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


def parse_record(line: str) -> tuple[list[dict[str, str]], str, str]:
    """One JSONL line -> (prompt messages, chosen answer, rejected answer); raises TranscriptError with the reason."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise TranscriptError(f"not JSON: {e.msg}") from None
    except RecursionError:
        raise TranscriptError("not JSON: nested too deeply") from None
    if not isinstance(record, dict) or not {"chosen", "rejected"} <= set(record):
        raise TranscriptError("needs 'chosen' and 'rejected'")
    chosen, rejected = parse_transcript(record["chosen"]), parse_transcript(record["rejected"])
    if chosen[:-1] != rejected[:-1]:
        raise TranscriptError("chosen and rejected do not share the prompt turns")
    if chosen[-1]["content"] == rejected[-1]["content"]:
        raise TranscriptError("chosen and rejected answers are identical")
    if not chosen[-1]["content"] or not rejected[-1]["content"]:
        raise TranscriptError("empty final answer")
    return chosen[:-1], chosen[-1]["content"], rejected[-1]["content"]


def prompt_digest(prompt: list[dict[str, str]]) -> str:
    return hashlib.sha256(json.dumps(prompt, sort_keys=True).encode()).hexdigest()


def is_heldout(digest: str, share: float, seed: int = 0) -> bool:
    """A prompt's side from a hash of (seed, prompt): every pair of a prompt lands on the same side, and keeps it
    when the file is imported again or grows."""
    h = hashlib.sha256(f"{seed}:{digest}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < share


def read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes) of a .jsonl or gzip-compressed file (told apart by the gzip magic bytes)."""
    if not path.is_file():
        raise HHImportError(f"{path}: no such file")
    with path.open("rb") as fh:
        compressed = fh.read(2) == GZIP_MAGIC
    if path.suffix == ".gz" and not compressed:
        raise HHImportError(f"{path}: named .gz but it is not a gzip file (no gzip header)")
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as fh:
            yield from enumerate(fh, start=1)
    except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as e:
        raise HHImportError(f"{path}: the gzip stream is damaged or truncated ({type(e).__name__}: {e}); "
                            "download the file again") from None


class Rejected(NamedTuple):
    line: int
    reason: str
    text: str          # the raw line (first 2,000 characters), for the quarantine file


@dataclass
class ImportResult:
    table: pa.Table                                         # pairs for training
    heldout: pa.Table                                       # pairs of held-out prompts: evaluation only
    rejects: list[Rejected] = field(default_factory=list)

    def reject_counts(self) -> dict[str, int]:
        """Quarantined records by reason (the part before ':', so 'not JSON: ...' counts as one reason)."""
        return dict(Counter(r.reason.split(":")[0] for r in self.rejects))


def read_hh_rlhf(path: str | Path, kind: str = "helpfulness", margin_level: str = "better", source: str | None = None,
                 heldout_share: float = 0.0, seed: int = 0) -> ImportResult:
    """Read an HH-RLHF JSONL(.gz) file into COMPARISON_SCHEMA rows: `kind` 'safety' marks every pair is_safety
    (harmless-base), margin level `margin_level` for all, prompts with `is_heldout` apart."""
    if margin_level not in MARGIN_LEVELS:
        raise ValueError(f"margin level {margin_level!r} is not one of {MARGIN_LEVELS}")
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {KINDS} (helpful-base: helpfulness, harmless-base: safety)")
    path = Path(path)
    source = source or f"hh-rlhf:{path.name}"
    train, heldout, rejects = [], [], []
    for n, raw in read_lines(path):
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as e:
            rejects.append(Rejected(n, f"not UTF-8: byte {e.start}", raw[:2000].decode("utf-8", "replace")))
            continue
        if not line.strip():
            continue
        try:
            prompt, chosen, rejected = parse_record(line)
            if has_lone_surrogate(raw, [prompt, chosen, rejected]):
                raise TranscriptError("a lone surrogate escape (\\ud800-\\udfff without its pair)")
        except TranscriptError as e:
            rejects.append(Rejected(n, str(e), line[:2000].encode("utf-8", "replace").decode("utf-8")))
            continue
        digest = prompt_digest(prompt)
        row = {"comparison_id": f"{source}:{n}", "source": source, "kind": kind, "prompt_id": f"hh-{digest[:16]}",
               "prompt": prompt, "chosen": chosen, "rejected": rejected, "margin_level": margin_level,
               "safety_category": None, "is_safety": kind == "safety", "annotator": "anthropic", "task_id": n}
        (heldout if is_heldout(digest, heldout_share, seed) else train).append(row)
    tables = comparisons_table(train), comparisons_table(heldout)
    for table in tables:
        validate_comparisons(table, source)
    return ImportResult(*tables, rejects)


def quarantine_rows(rejects: list[Rejected], source: str) -> list[dict]:
    """The rejects as QUARANTINE_SCHEMA rows (file, line, reason, the line's text)."""
    return [{"source": source, "record_id": f"line {r.line}", "reason": r.reason, "record": r.text} for r in rejects]
