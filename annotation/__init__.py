"""annotation: Label Studio projects, labeling configs, pair tasks, incremental harvest, scripted annotator.

Imports `storage` only (its contracts: `storage.schemas`); flows pass in clients, samplers and paths.
"""
from .accounts import AccountError, add_annotator, members, remove_annotator, sign_up
from .bot import Oracle, annotate_project, bot_works
from .harvest import HarvestResult, Ledger, agreement, harvest, parse_tasks
from .hh_rlhf import ImportResult, read_hh_rlhf
from .human_eval import (HumanEvalHarvest, ScriptedRater, ensure_human_eval_project, harvest_human_eval,
                         human_eval_tasks, parse_human_eval_tasks, parse_rating, rate_project, rating_result)
from .labeling import INSTRUCTIONS, Judgement, label_config, parse_result, result_for
from .pairs import Side, pair_tasks, select_prompts, tasks_table
from .projects import (connect, ensure_preference_project, ensure_project, find_project, import_tasks, iter_tasks,
                       iteration_progress, task_key)
from .validation import ValidationFailed, check_comparisons

__all__ = ["AccountError", "add_annotator", "members", "remove_annotator", "Oracle", "annotate_project", "bot_works", "sign_up",
           "HarvestResult", "Ledger", "agreement", "harvest", "parse_tasks",
           "ImportResult", "read_hh_rlhf", "HumanEvalHarvest", "ScriptedRater", "ensure_human_eval_project",
           "harvest_human_eval", "human_eval_tasks", "parse_human_eval_tasks", "parse_rating", "rate_project",
           "rating_result", "INSTRUCTIONS", "Judgement",
           "label_config", "parse_result", "result_for", "Side", "pair_tasks",
           "select_prompts", "tasks_table", "connect", "ensure_preference_project", "ensure_project", "find_project",
           "import_tasks", "iter_tasks", "iteration_progress", "task_key", "ValidationFailed", "check_comparisons"]
