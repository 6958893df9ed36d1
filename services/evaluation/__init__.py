"""evaluation: how good the models are.

`reward_eval`: the reward models (accuracy by rating level and data source, safety precision/recall);
the policy evaluation, refusal and model-card modules are imported by their own paths.
"""
from .reward_eval import (PairScores, RewardEvaluation, accuracy, accuracy_by_level, accuracy_by_source,
                          evaluate_reward_models, report_tables, safety_detection, score_gap_by_level,
                          write_reward_report)

__all__ = ["PairScores", "RewardEvaluation", "accuracy", "accuracy_by_level", "accuracy_by_source",
           "evaluate_reward_models", "report_tables", "safety_detection", "score_gap_by_level", "write_reward_report"]
