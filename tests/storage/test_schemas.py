import json

import pyarrow as pa
import pytest

from alignline.services.data import demo_comparisons_table
from alignline.storage.schemas import (COMPARISON_COLUMNS, COMPARISON_SCHEMA, SAFETY_CATEGORIES, ComparisonDataError,
                                       DatasetRef, ModelRef, RefError, comparison_rows, comparisons_table, parse_prompt)


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
        table = comparisons_table([row])
        comparison_rows(table.set_column(table.schema.get_field_index("is_safety"), "is_safety", pa.array(["no"])))


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
    table = table.set_column(table.schema.get_field_index("prompt"), "prompt",
                             pa.array([[{"role": "user", "content": "hello"}]], pa.list_(message)))
    assert comparison_rows(table)[0]["prompt"] == [{"role": "user", "content": "hello"}]
    assert table.schema == COMPARISON_SCHEMA


def test_a_json_text_prompt_column_is_accepted():
    row = {"prompt": "q", "chosen": "a", "rejected": "b", "margin_level": "better", "safety_category": None,
           "is_safety": False, "source": "x"}
    table = pa.table({**{k: [v] for k, v in row.items()}, "safety_category": pa.array([None], pa.string()),
                      "prompt": [json.dumps([{"role": "user", "content": "hi"}])]})
    assert comparison_rows(table)[0]["prompt"] == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("category", SAFETY_CATEGORIES)
def test_every_safety_category_an_annotator_can_pick_is_in_the_contract(category):
    row = {"prompt": "q", "chosen": "a", "rejected": "b", "margin_level": "better", "safety_category": category,
           "is_safety": True, "source": "annotators"}
    assert comparison_rows(comparisons_table([row]))[0]["safety_category"] == category


def test_refs_parse_and_format():
    assert DatasetRef.parse("prompts-default@abc123") == DatasetRef("prompts-default", "abc123")
    assert DatasetRef.parse("corpus") == DatasetRef("corpus", "latest")
    assert str(DatasetRef("corpus", "7")) == "corpus@7"
    assert ModelRef.parse("policy/3") == ModelRef("policy", "3") and str(ModelRef("rm-safety", "2")) == "rm-safety/2"
    for bad in ("policy", "policy/", "/3", "a/b/c"):
        with pytest.raises(RefError, match="allowed: NAME/VERSION"):
            ModelRef.parse(bad)
    with pytest.raises(RefError, match="is not allowed"):
        DatasetRef.parse("../etc@1")
