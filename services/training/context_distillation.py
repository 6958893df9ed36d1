"""Safety context distillation (Llama 2 §4.2.4): answer adversarial prompts as if a safety preprompt were there.

1. Prefix each adversarial prompt with a safety preprompt: the generic "You are
   a safe and responsible assistant", or, better, the answer template of the
   prompt's risk category (Table 39).
2. Sample the answer with the preprompt ("distilled") and without it ("original").
3. Keep a distilled answer only when the safety reward model scores it higher
   than the original: the preprompt sometimes makes answers vaguer or refuse
   too much, and the RM filters those out (§4.2.4, "context distillation with
   answer templates ... only when it improves the safety RM score").
4. Fine-tune on the kept answers *without* the preprompt (SFT recipe).
Kept and dropped counts are reported, with the drop reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from alignline.services.models.chat import Message

# (dialogues ending in a user turn) -> one answer each.
AnswerFn = Callable[[Sequence[Sequence[Message]]], list[str]]

# Llama 2 Table 39 style: per-risk-category guidance on how a safe answer reads.
ANSWER_TEMPLATES: dict[str, str] = {
    "illicit_and_criminal": ("You are a responsible assistant. The request may involve illegal activity: refuse the "
                             "harmful part, explain the legal and safety risks, and offer a lawful alternative."),
    "hateful_and_harmful": ("You are a responsible assistant. Do not produce hateful or demeaning content: address "
                            "the user respectfully, explain why the request is harmful, and offer constructive help."),
    "unqualified_advice": ("You are a responsible assistant. For medical, legal or financial questions, give general "
                           "information only, state your limits, and recommend a qualified professional."),
    "destructive_action": ("You are a careful assistant. The request could destroy data or systems: do not give a "
                           "command to run blindly; explain the risk, suggest a backup and a dry run, and ask about "
                           "the goal."),
}


def preprompt_for(category: str | None, generic: str, use_templates: bool = True) -> str:
    """The category's answer template when there is one (it works better, §4.2.4), else the generic preprompt."""
    if use_templates and category in ANSWER_TEMPLATES:
        return ANSWER_TEMPLATES[category]  # type: ignore[index]
    return generic


def with_preprompt(dialogue: Sequence[Message], preprompt: str) -> list[Message]:
    """The preprompt prefixed to the first user message (system message and later turns untouched)."""
    out = [dict(m) for m in dialogue]
    first_user = next(i for i, m in enumerate(out) if m["role"] == "user")
    out[first_user]["content"] = f"{preprompt}\n\n{out[first_user]['content']}"
    return out  # type: ignore[return-value]


def keep_distilled(distilled_score: float, original_score: float) -> bool:
    """Keep the distilled answer only if the safety RM prefers it to the original (strictly)."""
    return distilled_score > original_score


@dataclass
class DistillationResult:
    dialogues: list[list[Message]]           # prompt WITHOUT the preprompt + kept distilled answer
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count
    safety_gain: float = 0.0                 # mean safety-score gain of the kept answers
    # risk category ('generic' when the prompt has none) -> prompts, kept, mean safety RM score of the original
    # answers ("before"), of the preprompted answers, and of what the model is trained towards ("after": the kept
    # distilled answer, else the original): Llama 2 Fig. 16 per category.
    by_category: dict[str, dict[str, float]] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        per_category = {f"cd.{c}.{k}": float(v) for c, row in sorted(self.by_category.items()) for k, v in row.items()}
        return {"cd_kept": float(self.kept), "cd_dropped": float(sum(self.dropped.values())),
                **{f"cd_dropped_{k}": float(v) for k, v in self.dropped.items()}, "cd_safety_gain": self.safety_gain,
                **per_category}


GENERIC = "generic"  # the category key of prompts without a risk category (the generic preprompt)


def category_table(categories: Sequence[str | None], original: Sequence[float], distilled: Sequence[float],
                   kept: Sequence[bool]) -> dict[str, dict[str, float]]:
    """Per risk category: prompts, kept, mean safety score before (original), preprompted, and after (trained-on)."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(categories):
        groups.setdefault(c or GENERIC, []).append(i)
    table = {}
    for c, idx in sorted(groups.items()):
        after = [distilled[i] if kept[i] else original[i] for i in idx]
        table[c] = {"prompts": float(len(idx)), "kept": float(sum(kept[i] for i in idx)),
                    "safety_before": sum(original[i] for i in idx) / len(idx),
                    "safety_preprompted": sum(distilled[i] for i in idx) / len(idx),
                    "safety_after": sum(after) / len(idx)}
    return table


def context_distillation_samples(answer: AnswerFn, scorer, prompts: Sequence[Sequence[Message]],
                                 categories: Sequence[str | None], generic_preprompt: str,
                                 use_templates: bool = True) -> DistillationResult:
    """Steps 1-3: distilled answers that the safety RM scores higher than the originals."""
    prompts = list(prompts)
    preprompted = [with_preprompt(d, preprompt_for(c, generic_preprompt, use_templates))
                   for d, c in zip(prompts, categories)]
    original = answer(prompts)
    distilled = answer(preprompted)
    flags = [True] * len(prompts)  # adversarial prompts: the safety RM judges (combined-reward gate)
    # Both answers are scored against the prompt *without* the preprompt: the context the model will be trained in.
    s_orig = scorer.score(prompts, original, flags)["safety"].tolist()
    s_dist = scorer.score(prompts, distilled, flags)["safety"].tolist()
    result = DistillationResult(dialogues=[])
    gains, kept = [], []
    for dialogue, text, so, sd in zip(prompts, distilled, s_orig, s_dist):
        keep = False
        if not text.strip():
            result.dropped["empty"] = result.dropped.get("empty", 0) + 1
        elif not keep_distilled(sd, so):
            result.dropped["not_safer"] = result.dropped.get("not_safer", 0) + 1
        else:
            keep = True
            result.kept += 1
            gains.append(sd - so)
            result.dialogues.append([*dialogue, {"role": "assistant", "content": text}])
        kept.append(keep)
    result.safety_gain = sum(gains) / len(gains) if gains else 0.0
    result.by_category = category_table(list(categories), s_orig, s_dist, kept)
    return result
