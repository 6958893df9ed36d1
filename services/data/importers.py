"""Public SFT, preference and prompt files -> rows of our contracts; every record that cannot be used is quarantined
with its line (JSONL) or row index (Parquet) and a reason, and counted by reason.

Files: JSONL, gzip-compressed JSONL (told apart by the gzip magic bytes) and Parquet (read with pyarrow). A file may
mix the layouts of its kind; each row's layout is counted.

| kind | layouts (the ones TRL and OpenRLHF read) |
|---|---|
| sft | `messages`; `prompt`/`completion` (TRL: texts, or message lists: conversational); `prompt`/`response` (ours, optional `system`). `text`-only rows are refused: no prompt/answer split |
| preference | `prompt`/`chosen`/`rejected` as texts (OpenRLHF, TRL standard) or message lists (TRL conversational: answers alone; OpenRLHF: whole conversations starting with the prompt); `chosen`/`rejected` conversations only, sharing every turn but the answer (TRL implicit prompt); `chosen`/`rejected` HH-RLHF transcripts |
| prompts | `prompt` (text or messages) or `messages` ending on a user turn; optional `reference`, `id`, `category` |

Preference scores: `margin`, `score_chosen` and `score_rejected` (TRL's RewardTrainer margin, UltraFeedback ratings)
are kept as float columns beside the pair and not turned into a margin level: no documented scale maps them onto the
paper's four rating levels (Llama 2 §3.2.1), so every pair gets the one level the caller gives
(annotation.public_margin_level), as for HH-RLHF.

Reading (`read_records`) and converting (`import_records`) are apart: the converters take plain dicts. HH-RLHF
transcripts are parsed by a function passed in (`annotation.hh_rlhf.parse_transcript`; services do not import
annotation).
"""
from __future__ import annotations

import gzip
import json
import math
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from alignline.services.progress import track
from alignline.storage.schemas import (MARGIN_LEVELS, ComparisonDataError, Message, SFTDataError, comparisons_table,
                                       has_lone_surrogate, parse_prompt, prompt_key, prompt_table, validate_comparisons,
                                       validate_sft, validate_sft_dialogue)

from .sft_records import dialogues_table, to_dialogue

ImportKind = Literal["sft", "preference", "prompts"]
IMPORT_KINDS: tuple[ImportKind, ...] = ("sft", "preference", "prompts")
TranscriptParser = Callable[[str], list[Message]]   # '\n\nHuman: ...\n\nAssistant: ...' -> messages, or ValueError

GZIP_MAGIC, PARQUET_MAGIC = b"\x1f\x8b", b"PAR1"
HH_MARKER = "\n\nHuman:"
SCORE_FIELDS = ("margin", "score_chosen", "score_rejected")
RECORD_TEXT_LIMIT = 20_000   # characters of a quarantined record kept


class ImportFileError(ValueError):
    """The file as a whole cannot be used (missing, not gzip, damaged, not Parquet, nothing usable); one line."""


class RecordError(ValueError):
    """One record cannot be used: `reason` is the short label counted in the metadata; the message adds the rule."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class Record:
    """One JSONL line (numbered from 1) or Parquet row (index from 0, as pyarrow counts); `error` when it did not
    parse, with the raw `text`."""
    index: int
    unit: Literal["line", "row"]
    value: Any
    error: RecordError | None = None
    text: str | None = None

    @property
    def where(self) -> str:
        return f"{self.unit} {self.index}"


# -- reading -------------------------------------------------------------------------------------------
def read_records(path: str | Path) -> Iterator[Record]:
    """The file's records, lazily; ImportFileError (one line) when the file cannot be read at all."""
    path = Path(path)
    if not path.is_file():
        raise ImportFileError(f"{path}: no such file")
    with path.open("rb") as fh:
        head = fh.read(4)
    if head == PARQUET_MAGIC or path.suffix == ".parquet":
        yield from _parquet_records(path)
    else:
        yield from _jsonl_records(path, compressed=head[:2] == GZIP_MAGIC)


def _one_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())


def _parquet_records(path: Path) -> Iterator[Record]:
    index = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for value in batch.to_pylist():
                yield Record(index, "row", value)
                index += 1
    except (pa.ArrowException, OSError) as e:
        raise ImportFileError(f"{path}: not a readable Parquet file at row {index} ({_one_line(e)})") from None


def _jsonl_records(path: Path, compressed: bool) -> Iterator[Record]:
    if path.suffix == ".gz" and not compressed:
        raise ImportFileError(f"{path}: named .gz but it is not a gzip file (no gzip header)")
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as fh:
            # binary lines split on b"\n" only: JSON strings may hold a raw U+2028, which str.splitlines() splits on
            for n, raw in enumerate(fh, start=1):
                if raw.strip():
                    yield _parse_line(n, raw.rstrip(b"\r\n"))
    except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as e:
        raise ImportFileError(f"{path}: the gzip stream is damaged or truncated ({_one_line(e)})") from None


def _parse_line(n: int, raw: bytes) -> Record:
    try:
        value = json.loads(raw.decode("utf-8"))
        if not has_lone_surrogate(raw, value):
            return Record(n, "line", value)
        error = RecordError("not UTF-8", "a lone surrogate escape (\\ud800-\\udfff without its pair)")
    except UnicodeDecodeError as e:
        error = RecordError("not UTF-8", f"{e.reason} at byte {e.start}")
    except (json.JSONDecodeError, RecursionError) as e:
        error = RecordError("not JSON", e.msg if isinstance(e, json.JSONDecodeError) else "nested too deeply")
    return Record(n, "line", None, error, raw[:RECORD_TEXT_LIMIT].decode("utf-8", "replace"))


# -- shared pieces -------------------------------------------------------------------------------------
def _object(record: Any) -> dict:
    """The record's fields, null ones left out (a Parquet file that mixes layouts has every layout's columns)."""
    if not isinstance(record, dict):
        raise RecordError("not an object", f"expected a JSON object, got {type(record).__name__}")
    return {key: value for key, value in record.items() if value is not None}


def _turns(value: Any, role: str, key: str) -> list:
    """Text -> one `role` message; a message list as it is (validated by the caller)."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list):
        return value
    raise RecordError("bad field", f"{key!r} must be text or a list of {{role, content}} messages, "
                                   f"got {type(value).__name__}")


def _same_turns(a: list, b: list) -> bool:
    key = lambda m: (m.get("role"), m.get("content")) if isinstance(m, dict) else m  # noqa: E731 (extra keys ignored)
    return [key(m) for m in a] == [key(m) for m in b]


def _answer_text(message: Any, key: str) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str) or not content.strip():
        raise RecordError("empty answer", f"{key!r} has no answer text")
    return content


def _optional_text(record: dict, key: str) -> str | None:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):  # ids may be numbers; nothing else
        raise RecordError("bad field", f"{key!r} must be text, got {type(value).__name__}")
    return str(value)


# -- sft -----------------------------------------------------------------------------------------------
def sft_dialogue(record: Any) -> tuple[str, list[Message]]:
    """One row -> (layout, dialogue: system?, user, assistant, ...) or RecordError."""
    record = _object(record)
    try:
        if "messages" in record:
            return "messages", to_dialogue(record, "messages")
        if "prompt" in record and "completion" in record:
            prompt, completion = record["prompt"], record["completion"]
            conversational = isinstance(prompt, list) or isinstance(completion, list)
            layout = "prompt/completion (conversational)" if conversational else "prompt/completion"
            system = record.get("system")
            messages = (([{"role": "system", "content": system}] if isinstance(system, str) and system else [])
                        + _turns(prompt, "user", "prompt") + _turns(completion, "assistant", "completion"))
            return layout, validate_sft_dialogue(messages, layout)
        if "prompt" in record and "response" in record:
            return "prompt/response", to_dialogue(record, "prompt/response")
    except SFTDataError as e:
        raise RecordError("bad dialogue", str(e)) from None
    if "text" in record:
        # Llama 2 §3.1: the loss is zeroed on the prompt, so a demonstration needs its prompt and answer apart
        raise RecordError("text only", "a 'text' row has no prompt/answer split; give 'messages', "
                                       "'prompt'/'completion' or 'prompt'/'response'")
    raise RecordError("unknown layout", "needs 'messages', 'prompt'/'completion' or 'prompt'/'response'; "
                                        f"got keys {sorted(record)}")


# -- preference ----------------------------------------------------------------------------------------
def _answer(value: Any, context: list, key: str) -> str:
    """An answer given as text, as one assistant message, or as the whole conversation starting with the prompt."""
    if isinstance(value, str):
        if not value.strip():
            raise RecordError("empty answer", f"{key!r} has no answer text")
        return value
    if not isinstance(value, list):
        raise RecordError("bad field", f"{key!r} must be text or a list of messages, got {type(value).__name__}")
    turns = value[len(context):] if context and _same_turns(value[:len(context)], context) else value
    if len(turns) != 1 or not isinstance(turns[0], dict) or turns[0].get("role") != "assistant":
        raise RecordError("bad answer", f"{key!r} must be one assistant message, alone or after the prompt's turns")
    return _answer_text(turns[0], key)


def _implicit_prompt(chosen: list, rejected: list) -> tuple[list, str, str]:
    """TRL implicit prompt: two conversations that share every turn but the last, the assistant's answer."""
    for key, conversation in (("chosen", chosen), ("rejected", rejected)):
        if not conversation or not isinstance(conversation[-1], dict) or conversation[-1].get("role") != "assistant":
            raise RecordError("bad answer", f"{key!r} must end with the assistant's answer")
    if not _same_turns(chosen[:-1], rejected[:-1]):
        raise RecordError("prompt mismatch",
                          "chosen and rejected do not share the prompt turns (all but the last message)")
    if not chosen[:-1]:
        raise RecordError("no prompt", "the conversations hold only the answers; give 'prompt'")
    return chosen[:-1], _answer_text(chosen[-1], "chosen"), _answer_text(rejected[-1], "rejected")


def _hh_pair(chosen: str, rejected: str, parse_transcript: TranscriptParser | None) -> tuple[list, str, str]:
    if parse_transcript is None:
        raise RecordError("hh transcript", "HH-RLHF transcripts need a transcript parser "
                                           "(the import flow passes annotation.hh_rlhf.parse_transcript)")
    try:
        c, r = parse_transcript(chosen), parse_transcript(rejected)
    except ValueError as e:
        raise RecordError("bad transcript", str(e)) from None
    if c[:-1] != r[:-1]:
        raise RecordError("prompt mismatch", "chosen and rejected do not share the prompt turns")
    return c[:-1], _answer_text(c[-1], "chosen"), _answer_text(r[-1], "rejected")


def _scores(record: dict) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key in SCORE_FIELDS:
        value = record.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            raise RecordError("bad score", f"{key!r} must be a finite number, got {str(value)[:100]!r}")
        out[key] = None if value is None else float(value)
    return out


def preference_pair(record: Any, parse_transcript: TranscriptParser | None = None) -> tuple[str, dict]:
    """One row -> (layout, {prompt: messages ending on a user turn, chosen, rejected, margin, score_*}),
    or RecordError."""
    record = _object(record)
    if "chosen" not in record or "rejected" not in record:
        raise RecordError("unknown layout", "needs 'chosen' and 'rejected' (and 'prompt', unless they are "
                                            f"conversations or HH-RLHF transcripts); got keys {sorted(record)}")
    chosen, rejected, prompt = record["chosen"], record["rejected"], record.get("prompt")
    if prompt is not None:
        context = _turns(prompt, "user", "prompt")
        conversational = any(isinstance(v, list) for v in (prompt, chosen, rejected))
        layout = "prompt/chosen/rejected (conversational)" if conversational else "prompt/chosen/rejected"
        chosen_text, rejected_text = _answer(chosen, context, "chosen"), _answer(rejected, context, "rejected")
    elif isinstance(chosen, list) and isinstance(rejected, list):
        layout = "chosen/rejected (conversational, implicit prompt)"
        context, chosen_text, rejected_text = _implicit_prompt(chosen, rejected)
    elif isinstance(chosen, str) and isinstance(rejected, str) and HH_MARKER in "\n\n" + chosen.lstrip():
        layout = "hh-rlhf transcript"
        context, chosen_text, rejected_text = _hh_pair(chosen, rejected, parse_transcript)
    else:
        raise RecordError("no prompt", "'chosen'/'rejected' without 'prompt' must be conversations sharing the "
                                       "prompt turns, or HH-RLHF transcripts")
    try:
        context = parse_prompt(context, "prompt")
    except ComparisonDataError as e:
        raise RecordError("bad prompt", str(e)) from None
    if chosen_text == rejected_text:
        raise RecordError("identical answers", "chosen and rejected are the same text; a pair needs two answers")
    return layout, {"prompt": context, "chosen": chosen_text, "rejected": rejected_text, **_scores(record)}


# -- prompts -------------------------------------------------------------------------------------------
def prompt_row(record: Any) -> tuple[str, dict]:
    """One row -> (layout, {messages ending on a user turn, reference, id, category}) or RecordError."""
    record = _object(record)
    if "prompt" in record:
        layout = "prompt (conversational)" if isinstance(record["prompt"], list) else "prompt"
        messages = _turns(record["prompt"], "user", "prompt")
    elif "messages" in record:
        layout, messages = "messages", record["messages"]
        if not isinstance(messages, list):
            raise RecordError("bad field", f"'messages' must be a list of messages, got {type(messages).__name__}")
    else:
        raise RecordError("unknown layout", f"needs 'prompt' or 'messages'; got keys {sorted(record)}")
    try:
        messages = parse_prompt(messages, layout)
    except ComparisonDataError as e:
        raise RecordError("bad prompt", str(e)) from None
    if not messages[-1]["content"].strip():
        raise RecordError("bad prompt", f"{layout}: the last user turn is empty")
    return layout, {"messages": messages, "reference": _optional_text(record, "reference"),
                    "id": _optional_text(record, "id"), "category": _optional_text(record, "category")}


# -- records -> table ----------------------------------------------------------------------------------
@dataclass
class ImportResult:
    table: pa.Table                                            # the contract's table, validated
    quarantine: list[dict] = field(default_factory=list)       # QUARANTINE_SCHEMA rows: file, line, reason, record
    layouts: Counter = field(default_factory=Counter)          # layout -> rows kept
    reasons: Counter = field(default_factory=Counter)          # short reason -> rows quarantined

    def metadata(self) -> dict[str, Any]:
        return {"rows": self.table.num_rows, "layouts": dict(self.layouts), "quarantined": len(self.quarantine),
                "quarantine_reasons": dict(self.reasons)}


Converter = Callable[[Any], tuple[str, Any]]


def convert_records(records: Iterable[Record], convert: Converter,
                    file: str) -> tuple[list[tuple[Record, Any]], ImportResult]:
    """Run `convert` on each record: (kept (record, value) pairs, a result holding the quarantine and counts)."""
    kept, result = [], ImportResult(pa.table({}))
    for record in track(records, f"import {Path(file).name}", unit="record"):
        try:
            if record.error is not None:
                raise record.error
            layout, value = convert(record.value)
        except RecordError as e:
            result.reasons[e.reason] += 1
            text = record.text if record.text is not None else json.dumps(record.value, default=str, ensure_ascii=False)
            result.quarantine.append({"source": file, "record_id": record.where, "reason": str(e),
                                      "record": text[:RECORD_TEXT_LIMIT]})
            continue
        result.layouts[layout] += 1
        kept.append((record, value))
    return kept, result


def import_sft(records: Iterable[Record], file: str, source: str) -> ImportResult:
    kept, result = convert_records(records, sft_dialogue, file)
    result.table = dialogues_table([d for _, d in kept], source, ids=[f"{source}:{r.where}" for r, _ in kept])
    validate_sft(result.table, source)
    return result


def import_preferences(records: Iterable[Record], file: str, source: str, is_safety: bool, margin_level: str,
                       parse_transcript: TranscriptParser | None = None) -> ImportResult:
    if margin_level not in MARGIN_LEVELS:
        raise ValueError(f"margin level {margin_level!r} is not allowed; allowed: {', '.join(MARGIN_LEVELS)}")
    kept, result = convert_records(records, lambda r: preference_pair(r, parse_transcript), file)
    kind = "safety" if is_safety else "helpfulness"
    rows = [{"comparison_id": f"{source}:{r.where}", "source": source, "kind": kind,
             "prompt_id": f"import-{prompt_key(p['prompt'])}", "prompt": p["prompt"], "chosen": p["chosen"],
             "rejected": p["rejected"], "margin_level": margin_level, "safety_category": None, "is_safety": is_safety}
            for r, p in kept]
    table = comparisons_table(rows)
    for key in SCORE_FIELDS:  # kept beside the pair, only when the file has them (see the module doc)
        values = [p[key] for _, p in kept]
        if any(v is not None for v in values):
            table = table.append_column(key, pa.array(values, pa.float64()))
    validate_comparisons(table, source)
    result.table = table
    return result


def import_prompts(records: Iterable[Record], file: str, source: str, is_safety: bool) -> ImportResult:
    seen: set[str] = set()

    def unique(value: Any) -> tuple[str, dict]:
        layout, row = prompt_row(value)
        pid = row["id"] or f"import-{prompt_key(row['messages'])}"
        if pid in seen:  # prompt ids are unique in the contract; without an id, a prompt's identity is its user turns
            raise RecordError("duplicate id" if row["id"] else "duplicate prompt",
                              f"prompt id {pid!r} is used by an earlier row" if row["id"]
                              else "the same user turns as an earlier row")
        seen.add(pid)
        return layout, {**row, "id": pid}

    kept, result = convert_records(records, unique, file)
    table = prompt_table([(p["id"], source, is_safety, p["messages"], p["reference"]) for _, p in kept])
    categories = [p["category"] for _, p in kept]
    if any(c is not None for c in categories):  # read by PromptSet.from_table
        table = table.append_column("category", pa.array(categories, pa.string()))
    result.table = table
    return result


def import_records(kind: ImportKind, records: Iterable[Record], file: str, *, source: str | None = None,
                   is_safety: bool = False, margin_level: str = "better",
                   parse_transcript: TranscriptParser | None = None) -> ImportResult:
    """Records of `file` -> the `kind`'s validated table (SFT_SCHEMA, COMPARISON_SCHEMA + score columns, or
    PROMPT_SCHEMA + category) and the quarantine. `source` (default 'import:<file>') fills the source column."""
    source = source or f"import:{file}"
    if kind == "sft":
        return import_sft(records, file, source)
    if kind == "preference":
        return import_preferences(records, file, source, is_safety, margin_level, parse_transcript)
    if kind == "prompts":
        return import_prompts(records, file, source, is_safety)
    raise ValueError(f"import kind {kind!r} is not allowed; allowed: {', '.join(IMPORT_KINDS)}")
