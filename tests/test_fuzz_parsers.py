"""Property-based fuzzing of the parsers that read what people hand us (issue 14): random bytes, surrogates,
U+2028, deep nesting and huge lines either parse or fail with the parser's own clear error, never a traceback
from inside (TypeError, AttributeError, RecursionError, UnicodeError ...)."""
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alignline.annotation.harvest import parse_tasks
from alignline.config import ConfigError, load_config
from alignline.services.data import SFTDataError, read_jsonl
from alignline.storage.schemas import ComparisonDataError, parse_prompt

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
nasty_text = st.one_of(st.text(), st.sampled_from(["\ud800", "\u2028", "\u2029", "\x00", "{" * 5000, "[" * 3000,
                                                   "x" * 200_000, "\ufeff{}"]))
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | nasty_text,
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=20)


@FUZZ
@given(st.binary(max_size=2000) | nasty_text.map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_sft_jsonl_reader_raises_only_its_own_error(tmp_path, blob):
    path = tmp_path / "demos.jsonl"
    path.write_bytes(blob)
    try:
        read_jsonl(path)
    except SFTDataError:
        pass


@FUZZ
@given(st.lists(json_values, max_size=5))
def test_sft_jsonl_records_of_any_shape(tmp_path, records):
    path = tmp_path / "demos.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    try:
        dialogues = read_jsonl(path)
    except SFTDataError:
        return
    assert all(d[-1]["role"] == "assistant" for d in dialogues)


@FUZZ
@given(json_values)
def test_label_studio_results_of_any_shape_are_quarantined_not_raised(result):
    tasks = [{"id": 1, "data": {"dialogue": [{"role": "user", "content": "q"}], "response_a": "a", "response_b": "b"},
              "annotations": [{"id": 5, "completed_by": 1, "result": result}]}]
    parsed = parse_tasks(tasks, "safety", set(), {}, "ls:1")
    assert len(parsed.rows) + len(parsed.quarantined) == 1


@FUZZ
@given(json_values)
def test_label_studio_tasks_of_any_shape(task):
    parsed = parse_tasks([task], "helpfulness", set(), {}, "ls:1")  # never raises: bad shapes are quarantined
    assert all(q["reason"] for q in parsed.quarantined)


@FUZZ
@given(nasty_text | json_values)
def test_prompts_of_any_shape(value):
    try:
        parse_prompt(value)
    except ComparisonDataError:
        pass


@FUZZ
@given(st.text(max_size=300))
def test_config_files_of_any_text(tmp_path, text):
    path = tmp_path / "run.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_config(file=path, home=tmp_path / "home")
    except ConfigError:
        pass


@FUZZ
@given(st.lists(st.text(max_size=60), max_size=4))
def test_set_overrides_of_any_text(tmp_path, overrides):
    try:
        load_config(overrides=overrides, home=tmp_path / "home")
    except ConfigError:
        pass
