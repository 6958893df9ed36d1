"""Refusal detector: full refusal, partial refusal or compliance (Llama 2 §4.2.3, false refusals).

The paper measures false refusals with a classifier over answers to benign but risky-looking prompts
("sex in a pan", "Christmas crack"). Here a small softmax regression (`refusal_training.py`) over where
refusal cues sit in the answer and a few hashed n-grams (`refusal_features.py`), with issue 8's regex
verdict as one of its features. It was trained on XSTest v2 human labels of one chat model's answers plus
templated refusals in other models' phrasings; `benchmarks/refusal.py` scores it against the regex and
XSTest's string match on prompts it never saw. Weights: `refusal_model.json` beside this file, read on
first use; retrain with `python benchmarks/train_refusal.py`.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from .refusal_rules import Verdict, classify_refusal_rules, xstest_string_match
from .refusal_training import RefusalClassifier

MODEL_PATH = Path(__file__).with_name("refusal_model.json")

__all__ = ["Verdict", "classify_refusal", "classify_refusals", "classify_refusal_rules", "load_refusal_classifier",
           "refusal_rates", "xstest_string_match"]


@lru_cache(maxsize=None)
def load_refusal_classifier(path: Path = MODEL_PATH) -> RefusalClassifier:
    """The shipped classifier (read once per path). A missing or stale file is an error, not a quiet
    fall-back to the rules: a figure computed by another detector would be reported under this one's name."""
    return RefusalClassifier.from_json(json.loads(Path(path).read_text()))


def classify_refusals(answers: Sequence[str]) -> list[Verdict]:
    """Verdicts for many answers at once (one featurisation, one matrix product)."""
    return load_refusal_classifier().classify(answers) if answers else []


def classify_refusal(answer: str, prompt: str | None = None) -> Verdict:
    """Verdict for one answer. `prompt` is accepted for callers that have it but not read: in XSTest the
    prompt type predicts the label for the model that was labelled (it refuses the unsafe contrasts), so a
    prompt feature would learn that model's policy rather than how a refusal reads."""
    return classify_refusals([answer])[0]


def refusal_rates(answers: Sequence[str]) -> dict[str, float]:
    """Share of each verdict, plus `any_refusal` (full + partial), as in the paper's false-refusal rate."""
    if not answers:
        return {"full_refusal": 0.0, "partial_refusal": 0.0, "compliance": 0.0, "any_refusal": 0.0}
    verdicts = classify_refusals(answers)
    rates = {v: verdicts.count(v) / len(verdicts) for v in ("full_refusal", "partial_refusal", "compliance")}
    rates["any_refusal"] = rates["full_refusal"] + rates["partial_refusal"]
    return rates
