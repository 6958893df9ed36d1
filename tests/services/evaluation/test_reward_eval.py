import numpy as np
import pytest

from alignline.services.evaluation import (PairScores, RewardEvaluation, accuracy_by_level, accuracy_by_source,
                                           safety_detection, score_gap_by_level, write_reward_report)


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
    assert "hh-rlhf safety" in md and (folder / "accuracy_by_level.png").stat().st_size > 0
    assert (folder / "safety_scores.png").is_file() and (folder / "report.html").is_file()
    assert ev.metrics()["rm-safety.unsafe_recall"] == 1.0
