"""The built-in demo's comparisons (`comparisons-demo`), for when no harvested comparisons exist yet.

Made from the default SFT set (services/data/default_sft.py), deterministically:

* Helpfulness: chosen = the reference answer about a stdlib function; rejected =
  a corrupted answer whose corruption sets the margin level (Llama 2 §3.2.1's
  four levels): another function's answer (significantly better), half the
  words swapped for another answer's (better), a fifth swapped (slightly
  better), one word dropped (negligibly better: near chance, as in Table 8).
* Safety: requests for destructive commands; chosen = the cautious reply,
  rejected = the bare command (chosen safe, rejected unsafe), a curt refusal
  (both safe), or the command without its warning (both unsafe).
"""
from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from alignline.storage.schemas import comparisons_table

from .default_sft import SAFETY_PHRASINGS, SYSTEM_PROMPT, safety_dialogues, safety_requests, stdlib_dialogues

DEMO_SOURCE = "demo"
# margin level -> share of the answer's words replaced by another answer's (None: the whole other answer)
CORRUPTION = {"significantly_better": None, "better": 0.5, "slightly_better": 0.2, "negligibly_better": 0.0}
LEVELS = tuple(CORRUPTION)


def _seed(key: str) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest()[:12], 16)


def _corrupt(answer: str, other: str, level: str, key: str) -> str:
    share = CORRUPTION[level]
    if share is None:
        return other
    rng = np.random.default_rng(_seed(key))
    words, donor = answer.split(" "), other.split(" ")
    if share == 0.0:  # negligibly better: one word (not the first, the signature) dropped
        drop = int(rng.integers(1, len(words))) if len(words) > 1 else 0
        return " ".join(w for i, w in enumerate(words) if i != drop) or answer + "."
    for i in rng.choice(np.arange(1, len(words)), size=max(1, int(share * (len(words) - 1))), replace=False) if len(words) > 1 else []:
        words[i] = donor[int(rng.integers(len(donor)))]
    return " ".join(words)


def helpfulness_pairs(limit: int) -> list[dict]:
    dialogues = stdlib_dialogues(limit)
    n = len(dialogues)
    rows = []
    for i, (rid, d) in enumerate(dialogues):
        level = LEVELS[_seed(rid) % len(LEVELS)]
        other = dialogues[(i + n // 2) % n][1][1]["content"]
        rejected = _corrupt(d[1]["content"], other, level, rid)
        if rejected == d[1]["content"]:
            rejected += " ..."
        rows.append({"prompt": [{"role": "system", "content": SYSTEM_PROMPT}, d[0]], "chosen": d[1]["content"],
                     "rejected": rejected, "margin_level": level, "safety_category": None, "is_safety": False,
                     "source": DEMO_SOURCE})
    return rows


def safety_pairs() -> list[dict]:
    rows = []
    cautious = dict(safety_dialogues())
    for i, what, command, _ in safety_requests("train"):
        for j, phrasing in enumerate(SAFETY_PHRASINGS):
            prompt = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": phrasing.format(what=what)}]
            safe = cautious[f"safety-{i:02d}-{j}"][1]["content"]
            bare = f"Sure, just run {command}. It removes {what} immediately, no confirmation needed."
            warned = f"You can run {command}, but it removes {what} for good, so be sure you have a backup first."
            for chosen, rejected, level, category in (
                    (safe, bare, "significantly_better", "chosen_safe_rejected_unsafe"),
                    (safe, "I can't help with that.", "better", "both_safe"),
                    (warned, bare, "slightly_better", "both_unsafe")):
                rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "margin_level": level,
                             "safety_category": category, "is_safety": True, "source": DEMO_SOURCE})
    return rows


def demo_comparisons_table(stdlib_pairs: int = 400) -> pa.Table:
    """Helpfulness then safety pairs, in the comparisons schema (storage/schemas.py)."""
    return comparisons_table(helpfulness_pairs(stdlib_pairs) + safety_pairs())


def demo_comparisons_metadata(stdlib_pairs: int) -> dict[str, str]:
    return {"maker": "demo_comparisons_table", "stdlib_pairs": str(stdlib_pairs), "levels": ",".join(LEVELS)}
