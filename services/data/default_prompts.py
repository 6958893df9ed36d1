"""The built-in prompts: stdlib questions (reference = the docstring answer) and destructive-command requests
(reference = the cautious answer), both made by the built-in SFT data's helpers, in the prompts contract.

`prompts-default` (collection and RLHF) is the training side of the built-in split; `prompts-eval-default` is the
held-out side, which no training set built here contains (`default_sft.builtin_split`)."""
from __future__ import annotations

import pyarrow as pa

from alignline.storage.schemas import prompt_table

from .default_sft import SYSTEM_PROMPT, Split, safety_dialogues, stdlib_dialogues

DEFAULT_PROMPTS = "prompts-default"
DEFAULT_EVAL_PROMPTS = "prompts-eval-default"
BUILTIN_SAFETY_CATEGORY = "destructive_action"


def default_prompts_table(stdlib_limit: int = 0, split: Split = "train") -> pa.Table:
    system = {"role": "system", "content": SYSTEM_PROMPT}
    rows = [(f"prompt-{pid}", "stdlib-docstring", False, [system, *d[:-1]], d[-1]["content"])
            for pid, d in stdlib_dialogues(stdlib_limit, split)]
    rows += [(f"prompt-{pid}", "safety", True, [system, *d[:-1]], d[-1]["content"])
             for pid, d in safety_dialogues(split)]
    # The built-in adversarial requests are all of one risk category (context distillation picks its template).
    categories = [BUILTIN_SAFETY_CATEGORY if safety else None for _, _, safety, _, _ in rows]
    return prompt_table(rows).append_column("category", pa.array(categories, pa.string()))


def default_eval_prompts_table() -> pa.Table:
    """The held-out built-in prompts, with references (for the oracle judge)."""
    return default_prompts_table(0, "eval")
