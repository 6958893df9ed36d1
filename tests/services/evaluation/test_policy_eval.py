import pytest

from alignline.services.evaluation.model_card import write_model_card
from alignline.services.evaluation.policy_eval import evaluate_against, promotion_gates, win_tie_loss


def test_win_tie_loss_by_hand():
    wtl = win_tie_loss([0.9, 0.5, 0.1, 0.52], [0.1, 0.5, 0.9, 0.5], tie_margin=0.05)
    assert (wtl.win, wtl.tie, wtl.loss, wtl.n) == (0.25, 0.5, 0.25, 4)
    assert wtl.win_rate == 0.5
    with pytest.raises(ValueError, match="differ in shape"):
        win_tie_loss([1.0], [1.0, 2.0], 0.0)


def _report(violation=0.0, win=1.0, oracle=([1.0, 0.5], [0.5, 0.5])):
    scores = {"combined": [0.8, 0.9], "helpful": [0.7, 0.8], "safety": [0.9, 0.9]}
    base = {"combined": [0.8 - win * 0.5, 0.9 - win * 0.5], "helpful": [0.5, 0.5], "safety": [0.5, 0.5]}
    return evaluate_against(
        "policy/2", "policy/1", new_scores=scores, base_scores=base, new_oracle=oracle[0], base_oracle=oracle[1],
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
    # both gates present and passing (an empty gate list would make a bare all() pass)
    assert [(g.name, g.passed) for g in ok] == [("win_rate_vs_champion", True), ("safety_violation_rate", True)]
    worse = promotion_gates(_report(violation=1, win=1.0), champion, 0.5, 0.0)
    assert [g.name for g in worse if not g.passed] == ["safety_violation_rate"]
    losing = promotion_gates(_report(violation=0, win=-1.0), champion, 0.5, 0.0)
    assert [g.name for g in losing if not g.passed] == ["win_rate_vs_champion"]


def test_oracle_gate_applies_only_to_prompts_with_references():
    champion = _report()
    gamed = {**_report(win=1.0, oracle=([0.1, 0.2], [0.5, 0.5])), "oracle_prompts": 2}  # RMs love it, oracle does not
    gates = {g.name: g for g in promotion_gates(gamed, champion, 0.5, 0.0, min_oracle_win_rate=0.5)}
    assert gates["win_rate_vs_champion"].passed and not gates["oracle_win_rate_vs_champion"].passed
    assert gates["oracle_win_rate_vs_champion"].value == 0.0 and "2 prompts with references" in gates[
        "oracle_win_rate_vs_champion"].rule
    ties = {**_report(oracle=([0.5, 0.5], [0.5, 0.5])), "oracle_prompts": 2}  # all ties count half: 0.5 passes
    tie_gates = {g.name: g for g in promotion_gates(ties, champion, 0.5, 0.0, min_oracle_win_rate=0.5)}
    assert tie_gates["oracle_win_rate_vs_champion"].value == 0.5 and all(g.passed for g in tie_gates.values())
    no_references = {**gamed, "oracle_prompts": 0}
    assert "oracle_win_rate_vs_champion" not in {g.name for g in promotion_gates(no_references, champion, 0.5, 0.0, 0.5)}
    assert "oracle_win_rate_vs_champion" not in {g.name for g in promotion_gates(gamed, champion, 0.5, 0.0, 0.0)}
    before_rms = {**gamed, "rm_win": {}}  # the oracle is the main judge already: no second oracle gate
    assert [g.name for g in promotion_gates(before_rms, champion, 0.5, 0.0, 0.5)] == ["win_rate_vs_champion",
                                                                                       "safety_violation_rate"]


def test_model_card_is_self_contained_html(tmp_path):
    r = _report()
    path = write_model_card(tmp_path / "card.html", model="policy/2", lineage={"lineage.parents": "policy/1"},
                            report=r, history=[r, r], scatter={"helpful": [0.1, 0.9], "safety": [0.8, 0.2],
                                                               "is_safety": [True, False]},
                            rm_accuracy={"rm-helpfulness": {"better": 0.7}},
                            gates=[{"name": "win_rate_vs_champion", "passed": True, "value": 1.0, "threshold": 0.5, "rule": "x"}])
    text = path.read_text()
    assert text.count("data:image/png;base64,") == 3  # trend, scatter, accuracy by level
    for section in ("Intended use", "Lineage", "Evaluation", "Promotion gates", "Limitations", "License"):
        assert section in text
    # the tables carry the inputs' rows, not just their headings
    assert "<title>Model card: policy/2</title>" in text
    assert "<tr><td>lineage.parents</td><td>policy/1</td></tr>" in text
    assert "<tr><td>win_rate_vs_champion</td><td>pass</td><td>1.000</td><td>0.500</td><td>x</td></tr>" in text
    assert f"<tr><td>rm_win.win</td><td>{r['rm_win']['win']:.3f}</td></tr>" in text
    assert "<tr><td>safety_violation_rate</td><td>0.000</td></tr>" in text


def test_a_version_compared_with_itself_never_passes_a_win_rate_gate():
    champion = _report()
    itself = {**_report(win=1.0, oracle=([1.0, 1.0], [0.5, 0.5])), "baseline": "policy/2", "oracle_prompts": 2}
    gates = {g.name: g for g in promotion_gates(itself, champion, 0.0, 0.0, min_oracle_win_rate=0.1)}
    assert not gates["win_rate_vs_champion"].passed and not gates["oracle_win_rate_vs_champion"].passed
    assert "policy/2 was compared with itself, which never passes" in gates["win_rate_vs_champion"].rule
    assert gates["safety_violation_rate"].passed  # only the win-rate gates: safety is still measured
    assert all(g.passed for g in promotion_gates({**itself, "baseline": "policy/1"}, champion, 0.0, 0.0, 0.1))


def test_the_report_records_its_tie_margin():
    assert _report()["tie_margin"] == 0.05
