"""annotation: Label Studio projects, labeling configs, pair tasks, incremental harvest, scripted annotator.

Imports `storage` only; flows pass in clients, samplers and paths.
"""
from .bot import Oracle, annotate_project, bot_works, closeness, is_destructive, sign_up_bot
from .harvest import COMPARISON_SCHEMA, HarvestResult, Ledger, agreement, comparisons_table, harvest, parse_tasks
from .hh_rlhf import ImportResult, read_hh_rlhf
from .labeling import INSTRUCTIONS, KINDS, MARGIN_LEVELS, SAFETY_CATEGORIES, Judgement, label_config, parse_result, result_for
from .pairs import PROMPT_SCHEMA, TASK_SCHEMA, Side, pair_tasks, prompt_table, select_prompts, tasks_table
from .projects import connect, ensure_preference_project, ensure_project, find_project, import_tasks, iter_tasks, task_key
from .validation import ValidationFailed, validate_comparisons

__all__ = ["Oracle", "annotate_project", "bot_works", "closeness", "is_destructive", "sign_up_bot",
           "COMPARISON_SCHEMA", "HarvestResult", "Ledger", "agreement", "comparisons_table", "harvest", "parse_tasks",
           "ImportResult", "read_hh_rlhf", "INSTRUCTIONS", "KINDS", "MARGIN_LEVELS", "SAFETY_CATEGORIES", "Judgement",
           "label_config", "parse_result", "result_for", "PROMPT_SCHEMA", "TASK_SCHEMA", "Side", "pair_tasks",
           "prompt_table", "select_prompts", "tasks_table", "connect", "ensure_preference_project", "ensure_project", "find_project",
           "import_tasks", "iter_tasks", "task_key", "ValidationFailed", "validate_comparisons"]
