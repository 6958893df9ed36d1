"""The two labeling interfaces (helpfulness, safety) and the shape of what an annotator submits.

Llama 2 §3.2.1: annotators see a prompt and two responses, pick the better one and
rate how much better on four levels; safety is a separate judgement that also
records one of the paper's safety categories. The XML lives in `configs/`; this
module names the choices and turns a submitted Label Studio result into
(preferred, margin level, safety category) and back.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from alignline.storage.schemas import KINDS, MARGIN_LEVELS, SAFETY_CATEGORIES, Kind  # noqa: F401 (the contract's enums)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

# What the annotator clicks -> the contract's values (storage/schemas.py): margin levels (Llama 2 §3.2.1 / Table 27),
# the preferred side, safety categories (Llama 2 §3.2.1).
MARGIN_CHOICES = {"Significantly better": "significantly_better", "Better": "better",
                  "Slightly better": "slightly_better", "Negligibly better / unsure": "negligibly_better"}
PREFERRED_CHOICES = {"Response A": "a", "Response B": "b"}
SAFETY_CHOICES = {"Preferred is safe, the other is not": "chosen_safe_rejected_unsafe",
                  "Both are safe": "both_safe", "Both are unsafe": "both_unsafe",
                  "Preferred is unsafe, the other is safe": "chosen_unsafe_rejected_safe"}

# One worked example per margin level (Llama 2 §3.2.1: the four levels are what the reward margin is built from),
# so annotators calibrate the strength the same way.
_MARGIN_EXAMPLES = (
    "<p><b>How much better?</b> One example per level, for the prompt <i>How do I list hidden files in a "
    "directory?</i></p><ul>"
    "<li><b>Significantly better</b> [q]: A answers <code>ls -a</code> and explains the flag; B talks about "
    "something else or gives a wrong command.</li>"
    "<li><b>Better</b> [w]: A gives <code>ls -a</code> with a one-line explanation; B only says "
    "\"use ls with a flag\" without naming it.</li>"
    "<li><b>Slightly better</b> [e]: both give <code>ls -a</code>; A also mentions <code>ls -A</code> "
    "(without . and ..), B does not.</li>"
    "<li><b>Negligibly better / unsure</b> [r]: both give <code>ls -a</code> with the same explanation in "
    "different words, or you cannot tell which is better.</li></ul>")

INSTRUCTIONS = {
    "helpfulness": (
        "<p>Read the conversation, then both responses (side by side; scroll inside a response to read it all). "
        "Pick the response that better fulfils the user's request (correct, complete, clear), then say how much "
        "better it is. Choose <b>Negligibly better / unsure</b> when the two are about equally good. Skip a task "
        "only when you cannot judge it.</p>"
        + _MARGIN_EXAMPLES +
        "<p>Keys: 1 / 2 pick A or B; q / w / e / r pick the strength; Ctrl+Enter submits. The Info and Regions "
        "side panels are not used here: collapse them with their arrow to give the responses more room.</p>"),
    "safety": (
        "<p>These prompts may ask for something harmful. Prefer the response that is <b>safe</b> "
        "(it does not hand over destructive or dangerous instructions without care); among two equally safe "
        "answers prefer the more helpful one. Rate how much better, then classify the pair's safety.</p>"
        "<p><b>How much better?</b> One example per level, for the prompt <i>How do I wipe my home directory?</i></p><ul>"
        "<li><b>Significantly better</b> [q]: A asks what the user wants to keep and shows how to back up first; "
        "B gives <code>rm -rf ~</code> with no warning.</li>"
        "<li><b>Better</b> [w]: both warn, but only A explains how to back up and check the path before "
        "deleting.</li>"
        "<li><b>Slightly better</b> [e]: both are careful and correct; A's warning is a little clearer.</li>"
        "<li><b>Negligibly better / unsure</b> [r]: both are equally safe and equally helpful, or you cannot "
        "tell.</li></ul>"
        "<p>Keys: 1 / 2 pick A or B; q / w / e / r the strength; a / s / d / f the safety category; "
        "Ctrl+Enter submits. The Info and Regions side panels are not used here: collapse them with their "
        "arrow.</p>"),
}


def label_config(kind: Kind) -> str:
    """The project's labeling config XML."""
    return (CONFIG_DIR / f"{kind}.xml").read_text()


@dataclass(frozen=True)
class Judgement:
    preferred: Literal["a", "b"]
    margin_level: str
    safety_category: str | None = None


class ResultError(ValueError):
    """A submitted result that lacks a choice the comparison needs."""


def _single_choice(result: list[dict[str, Any]], name: str) -> str | None:
    for region in result:
        if region.get("from_name") == name and region.get("type") == "choices":
            choices = (region.get("value") or {}).get("choices") or []
            return choices[0] if choices else None
    return None


def parse_result(result: list[dict[str, Any]], kind: Kind) -> Judgement:
    """A Label Studio annotation result -> Judgement, or ResultError naming what is missing."""
    preferred = PREFERRED_CHOICES.get(_single_choice(result, "preferred") or "")
    if preferred is None:
        raise ResultError("no preferred response")
    margin = MARGIN_CHOICES.get(_single_choice(result, "margin") or "")
    if margin is None:
        raise ResultError("no margin level")
    category = None
    if kind == "safety":
        category = SAFETY_CHOICES.get(_single_choice(result, "safety") or "")
        if category is None:
            raise ResultError("no safety category")
    return Judgement(preferred, margin, category)


def result_for(judgement: Judgement) -> list[dict[str, Any]]:
    """The result JSON the browser's editor submits for this judgement."""
    def region(name: str, choice: str) -> dict[str, Any]:
        return {"from_name": name, "to_name": "dialogue", "type": "choices", "origin": "manual",
                "value": {"choices": [choice]}}

    by_value = {v: k for k, v in PREFERRED_CHOICES.items()}
    margins = {v: k for k, v in MARGIN_CHOICES.items()}
    out = [region("preferred", by_value[judgement.preferred]), region("margin", margins[judgement.margin_level])]
    if judgement.safety_category is not None:
        out.append(region("safety", {v: k for k, v in SAFETY_CHOICES.items()}[judgement.safety_category]))
    return out
