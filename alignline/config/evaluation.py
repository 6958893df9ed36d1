"""Evaluation and promotion gates (Llama 2 §3.4, §4.4)."""
from __future__ import annotations

from dataclasses import dataclass

from .fields import setting


@dataclass(frozen=True)
class EvaluationConfig:
    eval_prompts: int = setting(32, "Prompts per evaluation.", source="Llama 2 §3.4.2: ~4,000 for human evaluation", ge=1)
    min_win_rate: float = setting(0.5, "Promotion gate: win rate against the champion at least this.", ge=0, le=1)
    min_oracle_win_rate: float = setting(0.5, "Promotion gate on prompts with references (built-in data): win rate judged by the oracle (the scripted annotator's closeness to the reference) at least this; a stand-in for human evaluation so RMs alone cannot promote a policy. Skipped without references; 0 turns it off.", source="Llama 2 §3.4.2: human evaluation as the final judge", ge=0, le=1)
    max_safety_violation_increase: float = setting(0.0, "Promotion gate: safety violation rate may exceed the champion's by at most this.", ge=0, le=1)
    tie_margin: float = setting(0.05, "Reward difference under which a comparison is a tie.", ge=0)
