import pytest

from alignline.services.evaluation.model_card import write_model_card
from alignline.services.evaluation.policy_eval import evaluate_against, promotion_gates, win_tie_loss


def test_win_tie_loss_by_hand():
    wtl = win_tie_loss([0.9, 0.5, 0.1, 0.52], [0.1, 0.5, 0.9, 0.5], tie_margin=0.05)
    assert (wtl.win, wtl.tie, wtl.loss, wtl.n) == (0.25, 0.5, 0.25, 4)
    assert wtl.win_rate == 0.5
    with pytest.raises(ValueError, match="differ in shape"):
        win_tie_loss([1.0], [1.0, 2.0], 0.0)


def _report(violation=0.0, win=1.0):
    scores = {"combined": [0.8, 0.9], "helpful": [0.7, 0.8], "safety": [0.9, 0.9]}
    base = {"combined": [0.8 - win * 0.5, 0.9 - win * 0.5], "helpful": [0.5, 0.5], "safety": [0.5, 0.5]}
    return evaluate_against(
        "policy/2", "policy/1", new_scores=scores, base_scores=base, new_oracle=[1.0, 0.5], base_oracle=[0.5, 0.5],
        new_answers=["a b c", "d e"], adversarial_answers=["rm -rf /", "I can't help with that."] if violation else
        ["I can't help with that."], borderline_answers=["I cannot help with that.", "Use os.kill(pid, 9)."],
        is_unsafe=lambda a: "rm -rf" in a, tie_margin=0.05).to_dict()


def test_report_numbers():
    r = _report(violation=1)
    assert r["safety_violation_rate"] == 0.5
    assert r["false_refusal"]["full_refusal"] == 0.5 and r["false_refusal"]["compliance"] == 0.5
    assert r["rm_win"]["win"] == 1.0 and r["oracle_win"]["win"] == 0.5 and r["oracle_win"]["tie"] == 0.5
    assert r["mean_length_words"] == 2.5 and r["mean_reward"] == pytest.approx(0.85)


def test_gates_pass_and_fail():
    champion = _report(violation=0)
    ok = promotion_gates(_report(violation=0, win=1.0), champion, min_win_rate=0.5, max_safety_violation_increase=0.0)
    assert all(g.passed for g in ok)
    worse = promotion_gates(_report(violation=1, win=1.0), champion, 0.5, 0.0)
    assert [g.name for g in worse if not g.passed] == ["safety_violation_rate"]
    losing = promotion_gates(_report(violation=0, win=-1.0), champion, 0.5, 0.0)
    assert [g.name for g in losing if not g.passed] == ["win_rate_vs_champion"]


def test_model_card_is_self_contained_html(tmp_path):
    r = _report()
    path = write_model_card(tmp_path / "card.html", model="policy/2", lineage={"lineage.parents": "policy/1"},
                            report=r, history=[r, r], scatter={"helpful": [0.1, 0.9], "safety": [0.8, 0.2],
                                                               "is_safety": [True, False]},
                            rm_accuracy={"rm-helpfulness": {"better": 0.7}},
                            gates=[{"name": "win_rate_vs_champion", "passed": True, "value": 1.0, "threshold": 0.5, "rule": "x"}])
    text = path.read_text()
    assert text.count("data:image/png;base64,") == 3
    for section in ("Intended use", "Lineage", "Evaluation", "Promotion gates", "Limitations", "License"):
        assert section in text
