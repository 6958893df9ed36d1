"""Evaluation prompts held out by construction: a split by prompt identity, and a check over a model's lineage.

"Held out" means no training step could read the prompt. `split_eval` sends a
stable share of a prompt pool to the evaluation side by the hash of each
prompt's normalized user turns (`storage.schemas.prompt_key`); the built-in data
is split the same way at its source. `check_held_out` reads every dataset a
candidate was made from (its registry lineage, and each dataset's catalog
ancestors) and refuses, naming the prompts, when any evaluation prompt is among
them, so a report can state `overlap = 0` as a checked fact. Lineage datasets this catalog does not hold (a
model made in another data dir, on a shared registry) cannot be read: they are
listed as unverified in the result, and the report and model card say so.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from alignline.storage import Catalog
from alignline.storage.schemas import PROMPT_COLUMNS, prompt_key, prompt_keys


class EvalOverlapError(ValueError):
    """Evaluation prompts that a training step could read; the message names them and where they are."""


@dataclass(frozen=True)
class HeldOutCheck:
    eval_set: str
    eval_prompts: int
    datasets_checked: int
    overlap: int = 0
    unverified: tuple[str, ...] = ()  # lineage datasets this catalog does not hold (another data dir's): not checked

    def to_dict(self) -> dict:
        return {"eval_set": self.eval_set, "eval_prompts": self.eval_prompts,
                "lineage_datasets_checked": self.datasets_checked, "overlap": self.overlap,
                "unverified_datasets": list(self.unverified)}


def split_eval(prompts: pa.Table, share: float, salt: str = "eval") -> tuple[pa.Table, pa.Table]:
    """(train, eval) rows of a prompts table, by a hash of each prompt's identity: a prompt asked twice (or with
    another system prompt) lands on one side, and a row keeps its side when the pool grows."""
    column = next(c for c in PROMPT_COLUMNS if c in prompts.column_names)
    sides = []
    for value in prompts.column(column).to_pylist():
        digest = int(hashlib.sha256(f"{salt}/{prompt_key(value)}".encode()).hexdigest()[:12], 16)
        sides.append(digest / 16**12 < share)
    mask = pa.array(sides, pa.bool_())
    return prompts.filter(pc.invert(mask)), prompts.filter(mask)


def lineage_prompts(catalog: Catalog, dataset_refs: Sequence[str]) -> tuple[dict[str, tuple[str, str]], int, list[str]]:
    """key -> (prompt text, dataset ref) of every prompt in the datasets and all their catalog ancestors, how many
    dataset versions that was, and the refs this catalog does not hold (made in another data dir)."""
    found: dict[str, tuple[str, str]] = {}
    seen: set[str] = set()
    missing: list[str] = []
    for ref in dataset_refs:
        if catalog.find(ref) is None:
            missing.append(ref)
            continue
        for version in catalog.lineage(ref):
            if version.ref in seen:
                continue
            seen.add(version.ref)
            columns = [c for c in PROMPT_COLUMNS if c in pq.read_schema(version.path).names][:1]
            if not columns:  # corpus, tokenizer...: no prompts (pretraining contamination is the corpus audit's job)
                continue
            for key, text in prompt_keys(pq.read_table(version.path, columns=columns)).items():
                found.setdefault(key, (text, version.ref))
    return found, len(seen), missing


def check_held_out(eval_table: pa.Table, eval_ref: str, catalog: Catalog, dataset_refs: Sequence[str]) -> HeldOutCheck:
    """Raise EvalOverlapError when an evaluation prompt is in any dataset of the lineage; else what was checked."""
    training, checked, missing = lineage_prompts(catalog, dataset_refs)
    evals = prompt_keys(eval_table)
    overlap = sorted(set(evals) & set(training))
    if overlap:
        shown = "; ".join(f"{evals[k]!r} (in {training[k][1]})" for k in overlap[:5])
        raise EvalOverlapError(f"{len(overlap)} of {len(evals)} evaluation prompts of {eval_ref} are in the data the "
                               f"candidate was trained on: {shown}{' ...' if len(overlap) > 5 else ''}. Evaluate on a "
                               "set held out from every training stage (`alignline split-eval`), or retrain without them")
    return HeldOutCheck(eval_ref, len(evals), checked, unverified=tuple(missing))
