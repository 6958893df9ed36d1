"""Parsing exported tasks into comparisons: counts of what is not used, dedup, unsafe drops, agreement, GE."""
import json

import pyarrow as pa
import pytest

from alignline.annotation import Judgement, agreement, check_comparisons, parse_tasks, result_for
from alignline.storage.schemas import comparisons_table
from alignline.annotation.harvest import Ledger, decode_ids, drop_unsafe_chosen, encode_ids, one_label_per_annotator

DATA = {"prompt_id": "p1", "dialogue": [{"role": "user", "content": "q?"}], "response_a": "A text",
        "response_b": "B text", "policy_a": "policy/1", "policy_b": "policy/2", "iteration": 1, "batch": 2,
        "is_safety": True, "tasks_ref": "preference-tasks-safety@x"}


def ann(i, user, judgement=None, cancelled=False, result=None):
    return {"id": i, "completed_by": user, "was_cancelled": cancelled, "lead_time": 3.5, "created_at": "t",
            "result": result if result is not None else (result_for(judgement) if judgement else [])}


def test_parse_counts_skipped_cancelled_drafts_invalid_and_maps_sides():
    tasks = [{"id": 10, "data": DATA, "drafts": [{"id": 1}], "annotations": [
        ann(1, 7, Judgement("b", "slightly_better", "chosen_safe_rejected_unsafe")),
        ann(2, 8, cancelled=True),
        ann(3, 9, Judgement("a", "better", "both_safe"), cancelled=True),
        ann(4, 10, result=result_for(Judgement("a", "better", "both_safe"))[:1]),
        ann(5, 11, Judgement("a", "better", "both_safe")),
    ]}]
    parsed = parse_tasks(tasks, "safety", harvested={5}, annotators={7: "ann@x"}, source="ls:1")
    assert parsed.seen_ids == {1, 2, 3, 4}
    assert dict(parsed.counts) == {"drafts": 1, "skipped": 1, "cancelled": 1, "invalid: no margin level": 1}
    (row,) = parsed.rows
    assert (row["chosen"], row["rejected"], row["chosen_policy"], row["rejected_policy"]) == ("B text", "A text", "policy/2", "policy/1")
    assert (row["margin_level"], row["annotator"], row["lead_time_s"], row["task_id"]) == ("slightly_better", "ann@x", 3.5, 10)


def rows(*specs):
    return [{"source": "s", "task_id": t, "annotator": u, "annotation_id": i, "chosen": c, "margin_level": m,
             "safety_category": cat} for i, (t, u, c, m, cat) in enumerate(specs)]


def test_dedup_unsafe_drop_and_agreement():
    r = rows((1, "x", "A", "better", "both_safe"), (1, "x", "B", "better", "both_safe"),
             (1, "y", "A", "slightly_better", "both_unsafe"), (2, "x", "B", "better", "chosen_unsafe_rejected_safe"),
             (2, "y", "A", "better", "both_safe"))
    kept, dup = one_label_per_annotator(r)
    assert dup == 1 and [k["annotation_id"] for k in kept] == [0, 2, 3, 4]
    ag = agreement(kept)
    assert ag["overlapping_tasks"] == 2 and ag["preference_agreement"] == 0.5 and ag["margin_agreement"] == 0.0
    safe, dropped = drop_unsafe_chosen(kept, ("chosen_unsafe_rejected_safe",))
    assert dict(dropped) == {"chosen_unsafe_rejected_safe": 1} and len(safe) == 3


def test_ledger_ranges_roundtrip(tmp_path):
    ids = {1, 2, 3, 7, 9, 10}
    assert encode_ids(ids) == "1-3,7,9-10" and decode_ids(encode_ids(ids)) == ids
    Ledger(ids, "2026-01-01T00:00:00").save(tmp_path / "l.json")
    assert Ledger.load(tmp_path / "l.json").ids == ids and Ledger.load(tmp_path / "none.json").ids == set()


def test_validation_catches_double_labels_missing_margin_and_same_answers(tmp_path):
    good = {"comparison_id": "c1", "source": "s", "task_id": 1, "annotator": "x", "chosen": "a", "rejected": "b",
            "margin_level": "better", "safety_category": None}
    assert check_comparisons(comparisons_table([good]), tmp_path / "ok.json").success
    bad = comparisons_table([good, {**good, "comparison_id": "c2"}, {**good, "comparison_id": "c3", "task_id": 2,
                             "margin_level": None}, {**good, "comparison_id": "c4", "task_id": 3, "rejected": "a"}])
    result = check_comparisons(bad, tmp_path / "bad.json")
    # exactly the three broken rules, with the rows that break them (c1/c2 share a task and annotator); no other rule
    assert not result.success and result.failed == [
        "expect_compound_columns_to_be_unique(['source', 'task_id', 'annotator']): 2 unexpected",
        "expect_column_values_to_not_be_null(margin_level): 1 unexpected",
        "expect_column_values_to_be_in_set(chosen_differs): 1 unexpected"]
    # the kept GE report says the same: 8 rules run, 3 failed, the failing ones named
    report = json.loads((tmp_path / "bad.json").read_text())
    assert report["success"] is False
    assert (report["statistics"]["evaluated_expectations"], report["statistics"]["unsuccessful_expectations"]) == (8, 3)
    assert sorted(r["expectation_config"]["type"] for r in report["results"] if not r["success"]) == [
        "expect_column_values_to_be_in_set", "expect_column_values_to_not_be_null", "expect_compound_columns_to_be_unique"]
    assert json.loads((tmp_path / "ok.json").read_text())["statistics"]["unsuccessful_expectations"] == 0


def test_malformed_results_and_empty_answers_are_quarantined_not_raised():
    weird = [{"from_name": "preferred", "type": "choices", "value": None}]  # 'value' is not a dict
    tasks = [{"id": 11, "data": {**DATA, "response_b": ""}, "annotations": [
                ann(20, 7, Judgement("b", "better", "both_safe")),    # chose the empty answer
                ann(21, 7, result=weird),
                ann(22, 7, result="not a list")]},
             {"id": 12, "data": DATA, "annotations": [ann(23, 8, Judgement("a", "better", "both_safe")),
                                                      {"id": None, "result": []}]}]
    parsed = parse_tasks(tasks, "safety", harvested=set(), annotators={}, source="ls:1")
    assert [r["annotation_id"] for r in parsed.rows] == [23]
    reasons = {q["record_id"]: q["reason"] for q in parsed.quarantined}
    assert reasons["20"] == "invalid: empty answer" and reasons["21"].startswith("invalid:")
    assert reasons["22"].startswith("invalid:") and set(reasons) == {"20", "21", "22"}
    assert all(q["task_id"] == 11 and q["source"] == "ls:1" and q["record"] for q in parsed.quarantined)
