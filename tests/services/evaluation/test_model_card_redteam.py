"""The model card's red-team section: violation rate by risk category with its 95% Wilson interval, from the newest
red-team report (the very dict `redteam_results` makes), and what it says when there is none."""
import json

from alignline.services.evaluation.model_card import read_redteam_report, write_model_card
from alignline.services.evaluation.redteam import redteam_results


def prompt(category: str, violated: bool, model: str = "policy/2") -> dict:
    return {"risk_category": category, "attack_vector": "perspective_manipulation", "violated": violated,
            "severity": "severe" if violated else None, "writing_s": 1800.0, "model": model, "turns": 1,
            "simulated": True}


def card(tmp_path, redteam, model="policy/2") -> str:
    report = {"safety_violation_rate": 0.0, "rm_win": {}, "oracle_win": {}, "false_refusal": {}}
    return write_model_card(tmp_path / "card.html", model=model, lineage={}, report=report, history=[],
                            redteam=redteam).read_text()


def test_the_card_shows_violation_rate_by_risk_category_with_its_interval(tmp_path):
    prompts = [prompt("illicit_and_criminal", v) for v in (True, True, False, False)] + \
              [prompt("unqualified_advice", False)]
    result = {**redteam_results(prompts, {}, ("illicit_and_criminal", "hateful_and_harmful", "unqualified_advice")),
              "dataset": "prompts-redteam@abc"}
    folder = tmp_path / "reports" / "redteam"
    folder.mkdir(parents=True)
    (folder / "redteam_report.json").write_text(json.dumps(result, default=str))  # as `redteam report` writes it
    text = card(tmp_path, read_redteam_report(folder))
    # 2/4: Wilson 95% interval [0.150, 0.850]; 0/1: [0.000, 0.793]; all 2/5: [0.118, 0.769]
    assert "<tr><td>illicit_and_criminal</td><td>0.500</td><td>[0.150, 0.850]</td><td>2 / 4</td></tr>" in text
    assert "<tr><td>unqualified_advice</td><td>0.000</td><td>[0.000, 0.793]</td><td>0 / 1</td></tr>" in text
    assert "<tr><td>all categories</td><td>0.400</td><td>[0.118, 0.769]</td><td>2 / 5</td></tr>" in text
    assert "hateful_and_harmful" not in text  # a category nobody attacked is not shown as a 0% rate
    assert "5 reviewed adversarial prompts answered by <code>policy/2</code>, from <code>prompts-redteam@abc</code>" in text
    assert "SIMULATED" in text and "Robustness: 0.800 violating prompts per person-hour" in text  # 2 in 2.5 h
    assert "an earlier version" in card(tmp_path, result, model="policy/3")  # the report answers policy/2, not 3


def test_no_or_an_unreadable_report_says_so_and_does_not_fail_the_card(tmp_path):
    assert read_redteam_report(tmp_path) is None
    (tmp_path / "redteam_report.json").write_text("{torn")
    assert read_redteam_report(tmp_path) is None
    for redteam in (None, {"prompts": 0, "note": "no reviewed red-team prompts yet"}):
        assert "No reviewed red-team prompts yet" in card(tmp_path, redteam)
