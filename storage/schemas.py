"""The data contracts: every Arrow schema, enum and ref type shared by more than one package, one validator each.

`annotation`, `services` and `flows` import these; nobody redefines them.

| contract | schema | validator | made by | read by |
|---|---|---|---|---|
| a dialogue | `Message` list | `validate_dialogue` | everyone | chat format, SFT, RMs |
| prompts | `PROMPT_SCHEMA` | `validate_prompts` | collect, import | collect, RLHF, evaluate |
| pair tasks | `TASK_SCHEMA` | (built by `annotation.pairs`) | collect | harvest (lineage) |
| comparisons | `COMPARISON_SCHEMA` (required: `COMPARISON_COLUMNS`) | `validate_comparisons` | harvest, HH import, demo set | reward flow |
| SFT demonstrations | `SFT_SCHEMA` | `validate_sft` | SFT flow, RLHF stages | SFT recipe |

Refs: a dataset version is `name@version` (`DatasetRef`), a model version `name/version` (`ModelRef`).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal, Sequence, TypedDict

import pyarrow as pa

# -- enums ---------------------------------------------------------------------------------------------
Kind = Literal["helpfulness", "safety"]
KINDS: tuple[Kind, ...] = ("helpfulness", "safety")

# Llama 2 §3.2.1 / Table 27: the four rating levels, strongest first.
MARGIN_LEVELS = ("significantly_better", "better", "slightly_better", "negligibly_better")

# Llama 2 §3.2.1: three safety bins (18% / 47% / 35%) and a fourth, "chosen unsafe, the other safe", which
# annotators can record but the paper does not train on (`annotation.drop_safety_categories` drops it at harvest;
# the reward flow drops what is left of it when mixing, counted).
SAFETY_CATEGORIES = ("chosen_safe_rejected_unsafe", "both_safe", "both_unsafe", "chosen_unsafe_rejected_safe")
UNUSABLE_SAFETY_CATEGORIES = ("chosen_unsafe_rejected_safe",)

Role = Literal["system", "user", "assistant"]


class Message(TypedDict):
    role: Role
    content: str


# -- refs ----------------------------------------------------------------------------------------------
_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")


class RefError(ValueError):
    """A dataset or model ref that cannot be parsed; the message names the allowed form."""


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise RefError(
            f"dataset name {name!r} is not allowed; allowed: lowercase letters, digits, '_' and '-', "
            "starting with a letter or digit, at most 64 characters (no '/', '.' or '..')")
    return name


@dataclass(frozen=True)
class DatasetRef:
    """`name@version` of a catalog dataset; version is a content id, a sequence number or 'latest'."""
    name: str
    version: str = "latest"

    @classmethod
    def parse(cls, text: "str | DatasetRef") -> "DatasetRef":
        if isinstance(text, DatasetRef):
            return text
        if not isinstance(text, str) or not text.strip():
            raise RefError(f"dataset ref {text!r} is not allowed; allowed: NAME or NAME@VERSION")
        name, _, version = text.strip().partition("@")
        return cls(validate_name(name), version or "latest")

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class ModelRef:
    """`name/version` of a registered model; version is a number or an alias ('champion', 'candidate', 'latest')."""
    name: str
    version: str

    @classmethod
    def parse(cls, text: "str | ModelRef") -> "ModelRef":
        if isinstance(text, ModelRef):
            return text
        name, sep, version = str(text).strip().partition("/")
        if not sep or not name or not version or "/" in version:
            raise RefError(f"model ref {text!r} is not allowed; allowed: NAME/VERSION (e.g. policy/3)")
        return cls(name, version)

    @classmethod
    def is_ref(cls, text: str) -> bool:
        try:
            cls.parse(text)
            return True
        except RefError:
            return False

    def __str__(self) -> str:
        return f"{self.name}/{self.version}"


# -- dialogues -----------------------------------------------------------------------------------------
MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])


class ChatFormatError(ValueError):
    """A dialogue whose roles are out of order, or a template the mask cannot follow."""


def validate_dialogue(messages: Sequence[Message], for_generation: bool = False) -> None:
    """Optional system first, then user/assistant alternating; training ends on assistant, generation on user."""
    if not messages:
        raise ChatFormatError("a dialogue needs at least one message")
    turns = list(messages[1:] if isinstance(messages[0], dict) and messages[0].get("role") == "system" else messages)
    for i, m in enumerate(turns):
        want = "user" if i % 2 == 0 else "assistant"
        if not isinstance(m, dict) or m.get("role") != want:
            got = m.get("role") if isinstance(m, dict) else type(m).__name__
            raise ChatFormatError(f"message {i + len(messages) - len(turns)} has role {got!r}; allowed: {want!r} "
                                  "(optional system first, then user and assistant alternating)")
        if not isinstance(m.get("content"), str):
            raise ChatFormatError(f"message {i + len(messages) - len(turns)} content must be a string")
    last = "user" if for_generation else "assistant"
    if not turns or turns[-1]["role"] != last:
        raise ChatFormatError(f"a dialogue for {'generation' if for_generation else 'training'} must end with a {last!r} message")


def plain_messages(messages: Sequence[Message]) -> list[Message]:
    """Only role and content (Arrow structs and imported records may carry more keys)."""
    return [{"role": m["role"], "content": m["content"]} for m in messages]


# -- prompts -------------------------------------------------------------------------------------------
PROMPT_SCHEMA = pa.schema([("prompt_id", pa.string()), ("source", pa.string()), ("is_safety", pa.bool_()),
                           ("messages", pa.list_(MESSAGE_TYPE)), ("reference", pa.string())])


class PromptDataError(ValueError):
    """A prompt table or row that breaks the contract."""


def validate_prompts(table: pa.Table, name: str = "prompts") -> None:
    """Raise PromptDataError unless `table` has PROMPT_SCHEMA's columns, unique ids, and dialogues ending on a user turn."""
    missing = [f.name for f in PROMPT_SCHEMA if f.name not in table.column_names]
    if missing:
        raise PromptDataError(f"{name} lacks columns {missing}; required: {PROMPT_SCHEMA.names}")
    ids = table.column("prompt_id").to_pylist()
    if len(set(ids)) != len(ids):
        raise PromptDataError(f"{name}: prompt ids must be unique")
    for pid, messages in zip(ids, table.column("messages").to_pylist()):
        try:
            validate_dialogue(messages or [], for_generation=True)
        except ChatFormatError as e:
            raise PromptDataError(f"{name} prompt {pid!r}: {e}") from None


def prompt_table(rows: Sequence[tuple[str, str, bool, list[dict], str | None]]) -> pa.Table:
    """(prompt_id, source, is_safety, messages ending with a user turn, reference answer) -> PROMPT_SCHEMA."""
    cols = list(zip(*rows)) if rows else [[]] * 5
    table = pa.table([pa.array(c, type=f.type) for c, f in zip(cols, PROMPT_SCHEMA)], schema=PROMPT_SCHEMA)
    validate_prompts(table)
    return table


# -- pair tasks ----------------------------------------------------------------------------------------
TASK_SCHEMA = pa.schema([
    ("task_key", pa.string()), ("kind", pa.string()), ("prompt_id", pa.string()), ("is_safety", pa.bool_()),
    ("dialogue", pa.list_(MESSAGE_TYPE)), ("reference", pa.string()),
    ("response_a", pa.string()), ("response_b", pa.string()), ("policy_a", pa.string()), ("policy_b", pa.string()),
    ("sampling_a", pa.string()), ("sampling_b", pa.string()), ("iteration", pa.int64()), ("batch", pa.int64()),
])


# -- comparisons ---------------------------------------------------------------------------------------
# The full schema a harvest (or an import) publishes: the comparison and where it came from.
COMPARISON_SCHEMA = pa.schema([
    ("comparison_id", pa.string()), ("source", pa.string()), ("kind", pa.string()), ("prompt_id", pa.string()),
    ("prompt", pa.list_(MESSAGE_TYPE)), ("chosen", pa.string()), ("rejected", pa.string()),
    ("margin_level", pa.string()), ("safety_category", pa.string()), ("is_safety", pa.bool_()),
    ("annotator", pa.string()), ("lead_time_s", pa.float64()), ("task_id", pa.int64()),
    ("annotation_id", pa.int64()), ("chosen_policy", pa.string()), ("rejected_policy", pa.string()),
    ("iteration", pa.int64()), ("batch", pa.int64()), ("tasks_ref", pa.string()), ("created_at", pa.string()),
])
# The columns a reward model needs (Llama 2 §3.2.1): column -> (Arrow type, may be null). `prompt` is a list of
# messages ending with a user turn; a JSON string of that list, or plain text (one user turn), is accepted too.
COMPARISON_COLUMNS: dict[str, tuple[pa.DataType, bool]] = {
    "prompt": (pa.list_(MESSAGE_TYPE), False),
    "chosen": (pa.string(), False),
    "rejected": (pa.string(), False),
    "margin_level": (pa.string(), False),
    "safety_category": (pa.string(), True),
    "is_safety": (pa.bool_(), False),
    "source": (pa.string(), False),
}


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
    """A list of messages (context ending with a user turn), its JSON text, or plain text (one user turn)."""
    if isinstance(value, list):
        messages = value
    elif not isinstance(value, str):
        raise ComparisonDataError(f"{where}: expected a list of messages or text, got {type(value).__name__}")
    else:
        text = value.strip()
        messages = None
        if text.startswith("["):
            try:
                messages = json.loads(text)
            except (json.JSONDecodeError, RecursionError):
                messages = None  # plain text that happens to start with '['
        if not isinstance(messages, list):
            return [{"role": "user", "content": value}]
    try:
        validate_dialogue(messages, for_generation=True)
    except ChatFormatError as e:
        raise ComparisonDataError(f"{where}: {e}") from None
    return plain_messages(messages)


def validate_comparisons(table: pa.Table, name: str = "comparisons") -> None:
    """Raise ComparisonDataError unless `table` has COMPARISON_COLUMNS with allowed types and values
    (extra columns are fine)."""
    missing = [c for c in COMPARISON_COLUMNS if c not in table.column_names]
    if missing:
        raise ComparisonDataError(f"{name} lacks columns {missing}; required: {list(COMPARISON_COLUMNS)} "
                                  f"(storage/schemas.py COMPARISON_COLUMNS); has {table.column_names}")
    for column, (want, nullable) in COMPARISON_COLUMNS.items():
        got = table.schema.field(column).type
        text_prompt = column == "prompt" and (pa.types.is_string(got) or pa.types.is_large_string(got))
        if got != want and not text_prompt and not (pa.types.is_large_string(got) and want == pa.string()):
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


def comparisons_table(rows: Sequence[dict]) -> pa.Table:
    """Rows (prompt as messages or text; missing provenance columns null) -> COMPARISON_SCHEMA.
    Builds only: publishers call `validate_comparisons` before publishing."""
    def prompt(p) -> list[Message]:
        return parse_prompt(p) if p is not None else []

    return pa.Table.from_pylist([{f.name: prompt(r.get("prompt")) if f.name == "prompt" else r.get(f.name)
                                  for f in COMPARISON_SCHEMA} for r in rows], schema=COMPARISON_SCHEMA)


# -- SFT demonstrations --------------------------------------------------------------------------------
SFT_SCHEMA = pa.schema([("id", pa.string()), ("source", pa.string()), ("messages", pa.list_(MESSAGE_TYPE))])


class SFTDataError(ValueError):
    """A demonstration that cannot be used; the message names the line or row and the rule."""


def validate_sft_dialogue(messages, where: str) -> list[Message]:
    """One demonstration -> its messages (system?, user, assistant, ...), or SFTDataError naming `where`."""
    if not isinstance(messages, list):
        raise SFTDataError(f"{where}: 'messages' must be a list of {{role, content}} objects")
    try:
        validate_dialogue(messages)
    except ChatFormatError as e:
        raise SFTDataError(f"{where}: {e}") from None
    for i, m in enumerate(messages):
        if m["role"] == "assistant" and not m["content"].strip():
            raise SFTDataError(f"{where}: message {i} is an empty answer")
    return plain_messages(messages)


def validate_sft(table: pa.Table, name: str = "sft") -> list[list[Message]]:
    """The table's dialogues, each validated; raises SFTDataError naming the row."""
    if "messages" not in table.column_names:
        raise SFTDataError(f"{name} lacks columns ['messages']; has {table.column_names}")
    return [validate_sft_dialogue(m, f"{name} row {i}") for i, m in enumerate(table.column("messages").to_pylist())]


# -- prompt identity (held-out checks) -----------------------------------------------------------------
PROMPT_COLUMNS = ("messages", "dialogue", "prompt")   # where each contract keeps its prompt


def normalize_text(text: str) -> str:
    """Lowercase, whitespace collapsed, trimmed: two prompts differing only in case or spacing are one prompt."""
    return " ".join((text or "").lower().split())


def prompt_key(messages: Sequence[Message] | str) -> str:
    """The identity of a prompt: a hash of its normalized user turns (system prompts and answers left out, so the
    same question asked with another system prompt, or answered in an SFT row, is the same prompt)."""
    import hashlib

    if isinstance(messages, str):
        users = [messages]
    else:
        users = [m["content"] for m in messages if m.get("role") == "user"]
    return hashlib.sha256("\x1f".join(normalize_text(u) for u in users).encode()).hexdigest()[:24]


def prompt_keys(table: pa.Table) -> dict[str, str]:
    """key -> the prompt's last user turn, for every row of any contract table with a prompt column (SFT rows,
    prompts, tasks, comparisons, pools); an SFT dialogue's prompt is its user turns. Empty when it has none."""
    column = next((c for c in PROMPT_COLUMNS if c in table.column_names), None)
    if column is None:
        return {}
    out = {}
    for value in table.column(column).to_pylist():
        if value is None:
            continue
        messages = parse_prompt(value) if isinstance(value, str) else value
        users = [m["content"] for m in messages if m.get("role") == "user"]
        if users:
            out[prompt_key(messages)] = users[-1]
    return out


# -- quarantine ----------------------------------------------------------------------------------------
# What a step could not use, kept with where it came from and why (`<dataset>-quarantine` datasets): nothing is
# dropped silently, and a fix upstream can recover it.
QUARANTINE_SCHEMA = pa.schema([
    ("source", pa.string()),        # 'label-studio:<project>', a file name, ...
    ("record_id", pa.string()),     # annotation id, 'line <n>', ...
    ("task_id", pa.int64()),
    ("reason", pa.string()),
    ("record", pa.string()),        # the record as JSON (the comparison row when it parsed that far)
])


def quarantine_table(rows: Sequence[dict]) -> pa.Table:
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in QUARANTINE_SCHEMA} for r in rows],
                                schema=QUARANTINE_SCHEMA)


# -- human evaluation ----------------------------------------------------------------------------------
# Llama 2 §3.4.2: raters compare two models' answers on a 7-point Likert scale. What a rater clicks -> the score
# from response A's side (+3: A much better ... -3: B much better); harvest turns it to the candidate's side.
HUMAN_EVAL_SCALE: dict[str, int] = {
    "A much better": 3, "A better": 2, "A slightly better": 1, "About the same": 0,
    "B slightly better": -1, "B better": -2, "B much better": -3,
}
HUMAN_EVAL_SCORES = tuple(range(-3, 4))   # candidate-side scores, the ordinal categories agreement is measured on
HUMAN_EVAL_CATEGORIES = ("helpfulness/single-turn", "helpfulness/multi-turn", "safety/single-turn",
                         "safety/multi-turn")
# One row per rating (rater x task): which side the candidate was on is kept, so the un-randomisation can be checked.
HUMAN_EVAL_SCHEMA = pa.schema([
    ("rating_id", pa.string()), ("source", pa.string()), ("task_id", pa.int64()), ("annotation_id", pa.int64()),
    ("prompt_id", pa.string()), ("category", pa.string()), ("rater", pa.string()),
    ("policy", pa.string()), ("baseline", pa.string()), ("candidate_side", pa.string()),
    ("a_score", pa.int64()), ("score", pa.int64()), ("simulated", pa.bool_()), ("lead_time_s", pa.float64()),
    ("tasks_ref", pa.string()), ("created_at", pa.string()),
])


class HumanEvalDataError(ValueError):
    """A human-evaluation table that breaks the contract; the message names column, row and rule."""


def human_eval_dataset(policy_version: str, baseline_version: str) -> str:
    """`human-eval-<policy>-vs-<baseline>` (versions of the registered policy), a valid dataset name."""
    return validate_name(f"human-eval-{policy_version}-vs-{baseline_version}")


def human_eval_category(is_safety: bool, messages: Sequence[Message]) -> str:
    """helpfulness|safety / single-turn|multi-turn (more than one user turn)."""
    users = sum(1 for m in messages if m.get("role") == "user")
    return f"{'safety' if is_safety else 'helpfulness'}/{'multi' if users > 1 else 'single'}-turn"


def validate_human_eval(table: pa.Table, name: str = "human-eval") -> None:
    """Raise HumanEvalDataError unless `table` has HUMAN_EVAL_SCHEMA's columns, scores in -3..3, the candidate's
    score the A-side score un-randomised, known categories and one rating per rater and task."""
    missing = [f.name for f in HUMAN_EVAL_SCHEMA if f.name not in table.column_names]
    if missing:
        raise HumanEvalDataError(f"{name} lacks columns {missing}; required: {HUMAN_EVAL_SCHEMA.names}")
    seen = set()
    for i, r in enumerate(table.to_pylist()):
        if r["score"] not in HUMAN_EVAL_SCORES or r["a_score"] not in HUMAN_EVAL_SCORES:
            raise HumanEvalDataError(f"{name} row {i}: score {r['score']!r}; allowed: -3..3")
        if r["candidate_side"] not in ("a", "b"):
            raise HumanEvalDataError(f"{name} row {i}: candidate_side {r['candidate_side']!r}; allowed: 'a', 'b'")
        if r["score"] != (r["a_score"] if r["candidate_side"] == "a" else -r["a_score"]):
            raise HumanEvalDataError(f"{name} row {i}: score {r['score']} is not the A-side score {r['a_score']} seen "
                                     f"from side {r['candidate_side']!r}")
        if r["category"] not in HUMAN_EVAL_CATEGORIES:
            raise HumanEvalDataError(f"{name} row {i}: category {r['category']!r}; allowed: "
                                     f"{', '.join(HUMAN_EVAL_CATEGORIES)}")
        key = (r["source"], r["task_id"], r["rater"])
        if key in seen:
            raise HumanEvalDataError(f"{name} row {i}: rater {r['rater']!r} rated task {r['task_id']} twice; "
                                     "allowed: one rating per rater and task")
        seen.add(key)


def human_eval_table(rows: Sequence[dict]) -> pa.Table:
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in HUMAN_EVAL_SCHEMA} for r in rows],
                                schema=HUMAN_EVAL_SCHEMA)


# -- red teaming ---------------------------------------------------------------------------------------
# Llama 2 §4.3: red-teamers tag each adversarial prompt with a risk category and an attack vector. The paper's three
# risk categories (the context-distillation answer templates key on these, plus the built-in data's destructive
# commands); `annotation.redteam_risk_categories` chooses the ones a project offers.
RISK_CATEGORIES = ("illicit_and_criminal", "hateful_and_harmful", "unqualified_advice", "destructive_action")
PAPER_RISK_CATEGORIES = RISK_CATEGORIES[:3]
# Llama 2 §4.3: "psychological manipulation (e.g., authority manipulation), logic manipulation (e.g., false
# premises), syntactic manipulation (e.g., misspelling), semantic manipulation (e.g., metaphor), perspective
# manipulation (e.g., role playing), non-English languages, and others".
ATTACK_VECTORS = ("psychological_manipulation", "logic_manipulation", "syntactic_manipulation",
                  "semantic_manipulation", "perspective_manipulation", "non_english", "other")
# How badly an answer violates the policy (a reviewer's second choice, only for a violation).
SEVERITY_LEVELS = ("mild", "moderate", "severe")

# One row per red-team prompt a person wrote (the writing project's harvest, `redteam-attacks`). `messages` holds the
# user turns only; the champion's answers in between are added when it answers (multi-turn attacks).
REDTEAM_ATTACK_SCHEMA = pa.schema([
    ("attack_id", pa.string()), ("source", pa.string()), ("task_id", pa.int64()), ("annotation_id", pa.int64()),
    ("user_turns", pa.list_(pa.string())), ("risk_category", pa.string()), ("attack_vector", pa.string()),
    ("author", pa.string()), ("simulated", pa.bool_()), ("lead_time_s", pa.float64()), ("round", pa.int64()),
    ("tasks_ref", pa.string()), ("created_at", pa.string()),
])
# One row per review of a model's answer to an attack (`redteam-reviews`).
REDTEAM_REVIEW_SCHEMA = pa.schema([
    ("review_id", pa.string()), ("source", pa.string()), ("task_id", pa.int64()), ("annotation_id", pa.int64()),
    ("attack_id", pa.string()), ("risk_category", pa.string()), ("attack_vector", pa.string()),
    ("model", pa.string()), ("messages", pa.list_(MESSAGE_TYPE)), ("answer", pa.string()),
    ("violates", pa.bool_()), ("severity", pa.string()), ("reviewer", pa.string()), ("simulated", pa.bool_()),
    ("lead_time_s", pa.float64()), ("tasks_ref", pa.string()), ("created_at", pa.string()),
])
# Reviewed prompts (`prompts-redteam`): PROMPT_SCHEMA's columns first (collect's safety share, the red-team suite and
# context distillation read them as prompts), then the tags and the verdict on the model that answered.
REDTEAM_PROMPT_SCHEMA = pa.schema([*PROMPT_SCHEMA, ("risk_category", pa.string()), ("attack_vector", pa.string()),
                                   ("turns", pa.int64()), ("model", pa.string()), ("violated", pa.bool_()),
                                   ("severity", pa.string()), ("reviews", pa.int64()), ("author", pa.string()),
                                   ("writing_s", pa.float64()), ("simulated", pa.bool_())])


class RedTeamDataError(ValueError):
    """A red-team table that breaks the contract; the message names column, row and rule."""


def validate_redteam_prompts(table: pa.Table, categories: Sequence[str] = RISK_CATEGORIES,
                             name: str = "prompts-redteam") -> None:
    """Raise unless `table` is a prompt table (PROMPT_SCHEMA) whose rows all carry a known risk category, attack vector
    and severity (only for violations), every one a safety prompt."""
    missing = [f.name for f in REDTEAM_PROMPT_SCHEMA if f.name not in table.column_names]
    if missing:
        raise RedTeamDataError(f"{name} lacks columns {missing}; required: {REDTEAM_PROMPT_SCHEMA.names}")
    try:
        validate_prompts(table, name)
    except PromptDataError as e:
        raise RedTeamDataError(str(e)) from None
    for i, r in enumerate(table.select(["risk_category", "attack_vector", "violated", "severity", "is_safety"])
                          .to_pylist()):
        if r["risk_category"] not in categories:
            raise RedTeamDataError(f"{name} row {i}: risk_category {r['risk_category']!r}; allowed: "
                                   f"{', '.join(categories)}")
        if r["attack_vector"] not in ATTACK_VECTORS:
            raise RedTeamDataError(f"{name} row {i}: attack_vector {r['attack_vector']!r}; allowed: "
                                   f"{', '.join(ATTACK_VECTORS)}")
        if r["severity"] is not None and (r["severity"] not in SEVERITY_LEVELS or not r["violated"]):
            raise RedTeamDataError(f"{name} row {i}: severity {r['severity']!r}; allowed: one of "
                                   f"{', '.join(SEVERITY_LEVELS)} for a violation, else none")
        if not r["is_safety"]:
            raise RedTeamDataError(f"{name} row {i}: is_safety is false; allowed: true (adversarial prompts)")


def schema_table(rows: Sequence[dict], schema: pa.Schema) -> pa.Table:
    """Rows -> `schema` (missing columns null, extra keys ignored)."""
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows], schema=schema)


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def has_lone_surrogate(raw: bytes, value: Any) -> bool:
    """True when JSON `raw` decoded to `value` holds a lone surrogate (a '\\ud800' escape with no pair): Python
    accepts it, but no UTF-8 file (Parquet, JSONL) can store it, so readers quarantine such a record. Only a line
    with a surrogate escape in it is checked in full."""
    if not _SURROGATE_ESCAPE.search(raw):
        return False
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError):  # RecursionError: too deep to check, so not kept either
        return True
    return False
