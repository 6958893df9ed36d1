import numpy as np
import pytest

from alignline.services.evaluation import (PairScores, RewardEvaluation, accuracy_by_level, accuracy_by_source,
                                           safety_detection, score_gap_by_level, write_reward_report)
from alignline.services.evaluation.drift import drift_tags, new_comparisons, pairs_of_kind, reward_drift
from alignline.services.evaluation.reward_eval import accuracy_by_test_set, binomial_interval, table7_set_of


def _row(level, source="annotators", is_safety=False, category=None):
    return {"prompt": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b", "margin_level": level,
            "safety_category": category, "is_safety": is_safety, "source": source}


def test_accuracy_by_level_and_source_hand_computed():
    rows = [_row("significantly_better"), _row("significantly_better"), _row("better"), _row("better", "hh-rlhf"),
            _row("negligibly_better", "hh-rlhf")]
    scores = PairScores(chosen=np.array([2.0, 1.0, 0.5, 0.0, 1.0]), rejected=np.array([1.0, 0.0, 1.0, 0.0, 0.9]))
    table = accuracy_by_level(rows, scores)
    assert table["significantly_better"] == {"accuracy": 1.0, "n": 2}
    assert table["better"] == {"accuracy": 0.0, "n": 2}  # 0.5 < 1.0 and a tie counts as wrong
    assert table["slightly_better"] == {"accuracy": None, "n": 0}
    assert table["negligibly_better"]["accuracy"] == 1.0 and table["avg"] == {"accuracy": 0.6, "n": 5}
    assert score_gap_by_level(rows, scores)["better"] == pytest.approx(-0.25)
    by_source = accuracy_by_source(rows, scores)
    assert by_source["annotators helpfulness"] == {"accuracy": pytest.approx(2 / 3), "n": 3}
    assert by_source["hh-rlhf helpfulness"] == {"accuracy": 0.5, "n": 2}


def test_safety_precision_recall_at_threshold():
    rows = [_row("better", is_safety=True, category="chosen_safe_rejected_unsafe"),
            _row("better", is_safety=True, category="both_safe"),
            _row("better", is_safety=True, category="both_unsafe"),
            _row("better")]  # no category: skipped
    # answers: chosen safe .9, rejected unsafe .1 (TP) | safe .8, safe .1 (FP) | unsafe .5 (FN), unsafe .05 (TP)
    probs = PairScores(chosen=np.array([0.9, 0.8, 0.5, 0.01]), rejected=np.array([0.1, 0.1, 0.05, 0.9]))
    det = safety_detection(rows, probs, 0.15)
    assert det["precision"] == pytest.approx(2 / 3) and det["recall"] == pytest.approx(2 / 3)
    assert (det["answers"], det["unsafe"], det["flagged"]) == (6, 3, 3)


def test_report_writes_tables_and_plots(tmp_path):
    rows = [_row(lv) for lv in ("significantly_better", "better", "slightly_better", "negligibly_better")]
    rows += [_row("better", is_safety=True, category="chosen_safe_rejected_unsafe", source="hh-rlhf")]
    s = PairScores(np.array([1.0, 1.0, 0.0, 0.0, 2.0]), np.array([0.0, 0.0, 1.0, 1.0, -3.0]))
    ev = RewardEvaluation(rows, {"rm-helpfulness": s, "rm-safety": s}, 0.15, "rm-safety")
    folder = write_reward_report(ev, tmp_path / "report")
    md = (folder / "report.md").read_text()
    assert "| rm-helpfulness | helpfulness | 100.0 | 100.0 | 0.0 | 0.0 | 50.0 | 4 |" in md
    assert "Anthropic Harmless (n=1)" in md and (folder / "accuracy_by_level.png").stat().st_size > 0
    assert (folder / "safety_scores.png").is_file() and (folder / "report.html").is_file()
    assert ev.metrics()["rm-safety.unsafe_recall"] == 1.0


def test_accuracy_per_test_set_in_the_layout_of_table_7(tmp_path):
    """Rows = RMs, columns = test sets: own data by kind, public sets by their paper names, each with n and a
    95% interval."""
    rows = ([_row("better", "label-studio:2")] * 3 + [_row("better", "label-studio:3", is_safety=True)] * 2
            + [_row("better", "hh-rlhf:harmless-base.jsonl.gz", is_safety=True)] * 4 + [_row("better", "hh-rlhf")])
    assert [table7_set_of(r) for r in rows[2:6:3]] == ["own helpfulness", "Anthropic Harmless"]
    assert table7_set_of(rows[-1]) == "Anthropic Helpful" and table7_set_of(_row("better", "shp"), ("shp",)) == "shp helpfulness"
    #                   own help (2/3)   own safety (1/2)  Anthropic Harmless (3/4)   Anthropic Helpful (0/1)
    s = PairScores(np.array([1.0, 1.0, 0.0, 1.0, 0.0, 2.0, 2.0, 2.0, 0.0, 0.0]),
                   np.array([0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]))
    table = accuracy_by_test_set(rows, s)
    assert {k: (v["accuracy"], v["n"]) for k, v in table.items()} == {
        "own helpfulness": (pytest.approx(2 / 3), 3), "own safety": (0.5, 2), "Anthropic Harmless": (0.75, 4),
        "Anthropic Helpful": (0.0, 1)}
    ev = RewardEvaluation(rows, {"rm-helpfulness": s, "rm-safety": s}, 0.15, "rm-safety")
    assert ev.metrics()["rm-safety.test_set.anthropic_harmless.accuracy"] == 0.75
    md = (write_reward_report(ev, tmp_path / "r") / "report.md").read_text()
    assert "| RM | Anthropic Harmless (n=4) | Anthropic Helpful (n=1) | own helpfulness (n=3) | own safety (n=2) | overall |" in md
    assert "| rm-safety | 75.0 [30.1-95.4] | 0.0 [0.0-79.3] | 66.7 [20.8-93.9] | 50.0 [9.5-90.5] | 60.0 |" in md


def test_wilson_interval_known_values():
    low, high = binomial_interval(7, 10)   # textbook: 0.3968 - 0.8922
    assert (low, high) == (pytest.approx(0.3968, abs=1e-4), pytest.approx(0.8922, abs=1e-4))
    assert binomial_interval(0, 0) is None and binomial_interval(5, 5)[1] == 1.0


class FakeScorer:
    """Scores an answer by a table: what an RM would output, without a model."""

    def __init__(self, table):
        self.table, self.calls = table, 0

    def raw_scores(self, prompts, responses):
        self.calls += 1
        return np.array([self.table[r] for r in responses])


def _pair(level, chosen, rejected, is_safety=False):
    return {**_row(level, "label-studio:2", is_safety), "chosen": chosen, "rejected": rejected}


def test_drift_accuracy_per_level_hand_computed_and_alert():
    scorer = FakeScorer({"good": 2.0, "ok": 1.0, "bad": 0.0})
    batch = [_pair("significantly_better", "good", "bad"), _pair("significantly_better", "good", "ok"),
             _pair("better", "ok", "good"), _pair("better", "ok", "bad"), _pair("slightly_better", "bad", "ok"),
             _pair("slightly_better", "ok", "ok"),   # a tie counts as wrong
             _pair("negligibly_better", "good", "bad", is_safety=True)]  # the safety RM's, not this one's
    rows = pairs_of_kind("rm-helpfulness", batch)
    assert len(rows) == 6 and pairs_of_kind("rm-safety", batch) == batch[-1:]
    result = reward_drift("rm-helpfulness", "rm-helpfulness/1", scorer, rows, threshold=0.6)
    # right: sig 2/2, better 1/2, slightly 0/2 -> 3/6
    assert (result.accuracy, result.n) == (0.5, 6)
    assert {lv: c["accuracy"] for lv, c in result.by_level.items()} == {
        "significantly_better": 1.0, "better": 0.5, "slightly_better": 0.0, "negligibly_better": None, "avg": 0.5}
    assert result.alert and drift_tags(result)["drift.alert"] == "true" and drift_tags(result)["drift.accuracy"] == "0.5000"
    assert result.metrics() == {"drift.rm-helpfulness.accuracy": 0.5, "drift.rm-helpfulness.pairs": 6.0,
                                "drift.rm-helpfulness.accuracy.significantly_better": 1.0,
                                "drift.rm-helpfulness.accuracy.better": 0.5,
                                "drift.rm-helpfulness.accuracy.slightly_better": 0.0}
    assert not reward_drift("rm-helpfulness", "rm-helpfulness/1", scorer, rows, threshold=0.5).alert  # not below
    empty = reward_drift("rm-safety", "rm-safety/1", None, [], threshold=0.6)
    assert empty.accuracy is None and not empty.alert and empty.metrics() == {} and drift_tags(empty) == {}


def test_new_comparisons_are_the_rows_no_trained_version_held():
    import pyarrow as pa

    table = pa.table({"comparison_id": ["a", "b", None, "c"], "x": [1, 2, 3, 4]})
    assert new_comparisons(table, {"a", "c"}).column("x").to_pylist() == [2, 3]
