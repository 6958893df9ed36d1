"""Human-evaluation tasks and harvest parsing: side randomisation undone, 7-point results, quarantine reasons."""
import pytest

from alignline.annotation.human_eval import (ScriptedRater, candidate_side, conversation_text, human_eval_tasks,
                                             label_config, one_rating_per_rater, parse_human_eval_tasks, parse_rating,
                                             rating_result)
from alignline.annotation.labeling import ResultError
from alignline.storage.schemas import (HUMAN_EVAL_SCALE, HumanEvalDataError, human_eval_category, human_eval_dataset,
                                       human_eval_table, validate_human_eval)

SYSTEM = {"role": "system", "content": "Be helpful."}
PROMPTS = [{"prompt_id": f"p{i}", "is_safety": i == 0, "reference": "ref",
            "messages": [SYSTEM, {"role": "user", "content": f"question {i} <b>?</b>"}]} for i in range(20)]


def test_tasks_randomise_and_record_sides():
    tasks = human_eval_tasks(PROMPTS, [f"mine {i}" for i in range(20)], [f"theirs {i}" for i in range(20)],
                             "policy/2", "policy/1", seed=0)
    sides = [t["candidate_side"] for t in tasks]
    assert set(sides) == {"a", "b"}  # both sides used over 20 prompts
    for i, t in enumerate(tasks):
        assert t[f"response_{t['candidate_side']}"] == f"mine {i}" and t[f"policy_{t['candidate_side']}"] == "policy/2"
    assert tasks == human_eval_tasks(PROMPTS, [f"mine {i}" for i in range(20)], [f"theirs {i}" for i in range(20)],
                                     "policy/2", "policy/1", seed=0)  # a rerun makes the same tasks (content key)
    assert tasks[0]["category"] == "safety/single-turn" and tasks[1]["category"] == "helpfulness/single-turn"
    assert "&lt;b&gt;" in tasks[1]["conversation"] and "Be helpful" not in tasks[1]["conversation"]


def test_category_counts_user_turns():
    multi = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    assert human_eval_category(False, multi) == "helpfulness/multi-turn"
    assert human_eval_category(True, multi[:1]) == "safety/single-turn"
    assert human_eval_dataset("3", "2") == "human-eval-3-vs-2"


def test_label_config_has_seven_points_with_hotkeys_and_plain_conversation():
    xml = label_config()
    for n, label in enumerate(HUMAN_EVAL_SCALE, start=1):
        assert f'value="{label}" hotkey="{n}"' in xml
    assert "<HyperText" in xml and "<Paragraphs" not in xml and "flex: 1 1 0" in xml


def test_rating_round_trip_and_errors():
    for score in range(-3, 4):
        assert parse_rating(rating_result(score)) == score
    with pytest.raises(ResultError, match="no rating"):
        parse_rating([])
    with pytest.raises(ResultError, match="unknown rating"):
        parse_rating([{"from_name": "rating", "type": "choices", "value": {"choices": ["Meh"]}}])


DATA = {"prompt_id": "p1", "category": "helpfulness/single-turn", "policy": "policy/2", "baseline": "policy/1",
        "candidate_side": "b", "tasks_ref": "human-eval-2-vs-1-tasks@x"}


def ann(i, user, result=None, cancelled=False):
    return {"id": i, "completed_by": user, "was_cancelled": cancelled, "lead_time": 1.5, "created_at": "t",
            "result": result if result is not None else []}


def test_parse_undoes_the_side_and_quarantines_with_reasons():
    tasks = [{"id": 10, "data": DATA, "drafts": [{"id": 9}], "annotations": [
        ann(1, 7, rating_result(2)),                 # "A better" with the candidate on B: -2 for the candidate
        ann(2, 8, cancelled=True),                   # skipped
        ann(3, 9, rating_result(1), cancelled=True), # started, then cancelled
        ann(4, 10, [{"from_name": "rating", "type": "choices", "value": {"choices": []}}]),
        ann(5, 11, [{"from_name": "rating", "type": "choices", "value": "oops"}]),
        ann(6, 12, rating_result(-3)),               # already harvested
    ]}, {"id": 11, "data": {**DATA, "candidate_side": None}, "annotations": [ann(7, 7, rating_result(0))]},
        "not a task"]
    parsed = parse_human_eval_tasks(tasks, harvested={6}, annotators={7: "bot@x"}, source="ls:1", simulated={"bot@x"})
    assert parsed.seen_ids == {1, 2, 3, 4, 5, 7}
    assert dict(parsed.counts) == {"drafts": 1, "skipped": 1, "cancelled": 1, "invalid: no rating": 1,
                                   "invalid: malformed result (AttributeError)": 1,
                                   "invalid: task does not record the candidate's side": 1,
                                   "invalid: task is not an object": 1}
    (row,) = parsed.rows
    assert (row["a_score"], row["score"], row["rater"], row["simulated"], row["task_id"]) == (2, -2, "bot@x", True, 10)
    validate_human_eval(human_eval_table(parsed.rows))


def test_duplicates_kept_once_and_contract_checks():
    row = {"source": "s", "task_id": 1, "annotation_id": 5, "rater": "r", "a_score": 1, "score": 1,
           "candidate_side": "a", "category": "safety/multi-turn"}
    kept, dropped = one_rating_per_rater([{**row, "annotation_id": 9}, row])
    assert [r["annotation_id"] for r in kept] == [5] and [r["annotation_id"] for r in dropped] == [9]
    with pytest.raises(HumanEvalDataError, match="not the A-side score"):
        validate_human_eval(human_eval_table([{**row, "score": -1}]))
    with pytest.raises(HumanEvalDataError, match="rated task 1 twice"):
        validate_human_eval(human_eval_table([row, {**row, "annotation_id": 9}]))


def test_scripted_raters_follow_the_oracle_with_their_own_seeded_noise():
    close = lambda a, ref: 1.0 if a == ref else 0.0  # noqa: E731
    data = {"response_a": "ref", "response_b": "other", "reference": "ref", "is_safety": False, "task_key": "k"}
    exact = ScriptedRater(close, lambda t: False, rater=1, noise=0.0)
    assert exact.rate(data) == 3 and exact.rate({**data, "response_a": "x", "response_b": "ref"}) == -3
    noisy = [ScriptedRater(close, lambda t: False, rater=n, noise=0.2).rate({**data, "response_b": "ref"})
             for n in range(1, 30)]
    assert len(set(noisy)) > 1  # raters disagree on a tie
    assert noisy == [ScriptedRater(close, lambda t: False, rater=n, noise=0.2).rate({**data, "response_b": "ref"})
                     for n in range(1, 30)]  # seeded
    assert candidate_side("p1", "policy/2", "policy/1", 0) == candidate_side("p1", "policy/2", "policy/1", 0)
    assert conversation_text([{"role": "user", "content": "x"}]) == "<p><b>User:</b> x</p>"
