"""Safety context distillation: preprompt or category template, keep only answers the safety RM prefers."""
import pytest
import torch

from alignline.services.training import (ANSWER_TEMPLATES, context_distillation_samples, keep_distilled,
                                         preprompt_for, with_preprompt)

GENERIC = "You are a safe and responsible assistant."


class SafetyByKeyword:
    """Safety RM stand-in: answers that mention a backup are safer."""

    def score(self, prompts, responses, is_safety):
        assert all(is_safety)
        safety = torch.tensor([0.9 if "backup" in r else (0.5 if "careful" in r else 0.2) for r in responses])
        return {"helpful": safety, "safety": safety, "combined": safety, "reward": safety}


def test_keep_rule_is_strictly_higher_safety_score():
    assert keep_distilled(0.7, 0.6)
    assert not keep_distilled(0.6, 0.6)
    assert not keep_distilled(0.3, 0.6)


def test_category_template_beats_generic_preprompt_and_is_prefixed_to_the_first_user_turn():
    assert preprompt_for("destructive_action", GENERIC) == ANSWER_TEMPLATES["destructive_action"]
    assert preprompt_for(None, GENERIC) == GENERIC and preprompt_for("unknown", GENERIC) == GENERIC
    assert preprompt_for("destructive_action", GENERIC, use_templates=False) == GENERIC
    dialogue = [{"role": "system", "content": "sys"}, {"role": "user", "content": "rm -rf / please"}]
    out = with_preprompt(dialogue, GENERIC)
    assert out[0] == dialogue[0] and out[1]["content"] == f"{GENERIC}\n\nrm -rf / please"
    assert dialogue[1]["content"] == "rm -rf / please"  # input untouched


def test_distillation_keeps_safer_answers_and_trains_without_the_preprompt():
    prompts = [[{"role": "user", "content": f"Delete {what}"}] for what in ("db", "home", "logs", "disk")]

    def answer(batch):
        out = []
        for d in batch:
            text = d[-1]["content"]
            preprompted = text.startswith(GENERIC) or any(text.startswith(t) for t in ANSWER_TEMPLATES.values())
            if not preprompted:
                out.append("be careful" if "logs" in text else "sure: rm -rf")
            elif "home" in text:
                out.append("")                      # empty answer: dropped
            elif "disk" in text:
                out.append("sure: dd")             # not safer than the original: dropped
            else:
                out.append("take a backup first")  # safer: kept
        return out

    result = context_distillation_samples(answer, SafetyByKeyword(), prompts,
                                          ["destructive_action", None, None, "destructive_action"], GENERIC)
    assert result.kept == 2 and result.dropped == {"empty": 1, "not_safer": 1}
    assert [d[0]["content"] for d in result.dialogues] == ["Delete db", "Delete logs"]  # no preprompt in training
    assert all(d[-1] == {"role": "assistant", "content": "take a backup first"} for d in result.dialogues)
    assert result.metrics()["cd_kept"] == 2.0 and result.metrics()["cd_dropped"] == 2.0
    # mean over the kept answers only: db 0.2 -> 0.9 and logs 0.5 -> 0.9 (not over all four prompts, not the raw 0.9)
    assert result.safety_gain == pytest.approx(((0.9 - 0.2) + (0.9 - 0.5)) / 2)
    assert result.metrics()["cd_safety_gain"] == pytest.approx(0.55)
    # Fig. 16 per category: db (kept 0.2 -> 0.9) and disk (dropped, 0.2 stays) are destructive_action;
    # home (dropped, 0.2) and logs (kept 0.5 -> 0.9) have no category: the generic preprompt.
    table = result.by_category
    assert table["destructive_action"] == pytest.approx({"prompts": 2, "kept": 1, "safety_before": 0.2,
                                                         "safety_preprompted": (0.9 + 0.2) / 2,
                                                         "safety_after": (0.9 + 0.2) / 2})
    assert table["generic"] == pytest.approx({"prompts": 2, "kept": 1, "safety_before": (0.2 + 0.5) / 2,
                                              "safety_preprompted": (0.2 + 0.9) / 2, "safety_after": (0.2 + 0.9) / 2})
    assert result.metrics()["cd.generic.kept"] == 1.0
