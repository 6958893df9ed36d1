"""The built-in prompts: stdlib questions (reference = the docstring answer) and destructive-command requests
(reference = the cautious answer), both made by the built-in SFT data's helpers, in the prompts contract."""
from __future__ import annotations

import pyarrow as pa

from alignline.storage.schemas import prompt_table

from .default_sft import SYSTEM_PROMPT, safety_dialogues, stdlib_dialogues

DEFAULT_PROMPTS = "prompts-default"


def default_prompts_table(stdlib_limit: int = 0) -> pa.Table:
    system = {"role": "system", "content": SYSTEM_PROMPT}
    rows = [(f"prompt-{pid}", "stdlib-docstring", False, [system, *d[:-1]], d[-1]["content"])
            for pid, d in stdlib_dialogues(stdlib_limit)]
    rows += [(f"prompt-{pid}", "safety", True, [system, *d[:-1]], d[-1]["content"]) for pid, d in safety_dialogues()]
    return prompt_table(rows)
