import json

import pyarrow as pa
import pytest

from alignline.services.data import demo_comparisons_table
from alignline.services.rewards import (COMPARISON_COLUMNS, ComparisonDataError, comparison_rows, comparisons_table,
                                        parse_prompt)


def test_prompt_is_a_json_message_list_or_plain_text():
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert parse_prompt(json.dumps(messages)) == messages
    assert parse_prompt("What is 2+2?") == [{"role": "user", "content": "What is 2+2?"}]
    assert parse_prompt("[1, 2] is a list") == [{"role": "user", "content": "[1, 2] is a list"}]
    with pytest.raises(ComparisonDataError, match="must end with a 'user' message"):
        parse_prompt(json.dumps([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]))


def test_validation_names_the_column_and_the_rule():
    row = {"prompt": "q", "chosen": "a", "rejected": "b", "margin_level": "better", "safety_category": None,
           "is_safety": False, "source": "annotators"}
    assert comparison_rows(comparisons_table([row]))[0]["prompt"] == [{"role": "user", "content": "q"}]
    with pytest.raises(ComparisonDataError, match="margin_level has value 'much_better'; allowed: significantly_better"):
        comparison_rows(comparisons_table([{**row, "margin_level": "much_better"}]))
    with pytest.raises(ComparisonDataError, match=r"lacks columns \['is_safety'\]"):
        comparison_rows(comparisons_table([row]).drop(["is_safety"]))
    with pytest.raises(ComparisonDataError, match="chosen and rejected are the same"):
        comparison_rows(comparisons_table([{**row, "rejected": "a"}]))
    with pytest.raises(ComparisonDataError, match="is_safety has type string"):
        comparison_rows(comparisons_table([row]).set_column(5, "is_safety", pa.array(["no"])))


def test_demo_comparisons_conform_and_cover_every_level_and_category():
    table = demo_comparisons_table(40)
    rows = comparison_rows(table, "comparisons-demo")
    assert set(COMPARISON_COLUMNS) <= set(table.column_names)
    assert {r["margin_level"] for r in rows if not r["is_safety"]} == {
        "significantly_better", "better", "slightly_better", "negligibly_better"}
    assert {r["safety_category"] for r in rows if r["is_safety"]} == {
        "chosen_safe_rejected_unsafe", "both_safe", "both_unsafe"}
    assert demo_comparisons_table(40).equals(table)  # deterministic


def test_prompt_column_of_message_structs_is_accepted():
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    table = comparisons_table([{"prompt": "q", "chosen": "a", "rejected": "b", "margin_level": "better",
                                "safety_category": None, "is_safety": False, "source": "hh-rlhf:x.jsonl"}])
    table = table.set_column(0, "prompt", pa.array([[{"role": "user", "content": "hello"}]], pa.list_(message)))
    assert comparison_rows(table)[0]["prompt"] == [{"role": "user", "content": "hello"}]
