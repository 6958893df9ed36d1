"""Rejection sampling fine-tuning (Llama 2 §3.2.3): best of K answers per prompt, pooled over iterations, then SFT.

One round:
1. sample K answers per prompt from the newest policy at the RS temperature
   (1.2-1.3 was best for 10-100 samples, Llama 2 Fig. 8);
2. score them with the combined reward and keep the argmax per prompt;
3. pool: the best answer of every earlier iteration competes again, re-scored by
   *today's* reward models, so each prompt keeps its best-ever answer (using
   only the last iteration's samples caused regressions, §3.2.3);
4. fine-tune the policy on the pool with the SFT recipe (answer-only loss).
The reward gain of the best of K over the median sample is reported per round
(Llama 2 Fig. 7).

The pool is a table, one row per prompt: id, source, messages (prompt + best
answer, so the SFT readers take it as is), reward, iteration, is_safety.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import pyarrow as pa
import torch

from alignline.services.data.default_prompts import BUILTIN_SAFETY_CATEGORY
from alignline.storage.schemas import MESSAGE_TYPE
from alignline.services.models.chat import Message

POOL_SCHEMA = pa.schema([("id", pa.string()), ("source", pa.string()), ("messages", pa.list_(MESSAGE_TYPE)),
                         ("reward", pa.float64()), ("iteration", pa.int64()), ("is_safety", pa.bool_())])

# (dialogues, k) -> k answer texts per dialogue; a RolloutPool's `sample_texts` with the RS sampling params bound.
SampleFn = Callable[[Sequence[Sequence[Message]], int], list[list[str]]]


@dataclass(frozen=True)
class PromptSet:
    """RLHF prompts: dialogues ending in a user turn, with their ids and safety flags (the combined-reward gate)."""
    ids: list[str]
    dialogues: list[list[Message]]
    is_safety: list[bool]

    def __len__(self) -> int:
        return len(self.ids)

    categories: list[str | None] | None = None  # risk category per prompt (context distillation templates)
    references: list[str | None] | None = None  # reference answer per prompt, where the dataset has one (judges)

    def take(self, index: Sequence[int]) -> "PromptSet":
        cats = [self.categories[i] for i in index] if self.categories is not None else None
        refs = [self.references[i] for i in index] if self.references is not None else None
        return PromptSet([self.ids[i] for i in index], [self.dialogues[i] for i in index],
                         [self.is_safety[i] for i in index], cats, refs)

    @classmethod
    def from_table(cls, table: pa.Table) -> "PromptSet":
        """A prompts dataset: `id` or `prompt_id`; `messages` (list of {role, content}) or `prompt` (JSON messages
        or plain text); `is_safety`; optional `category` / `risk_category` / `safety_category`."""
        from alignline.storage.schemas import parse_prompt

        rows = table.to_pylist()
        ids = [str(r.get("id", r.get("prompt_id"))) for r in rows]
        dialogues = [[{"role": m["role"], "content": m["content"]} for m in r["messages"]] if r.get("messages")
                     else parse_prompt(r["prompt"], f"prompt {pid}") for r, pid in zip(rows, ids)]
        cats = [r.get("category") or r.get("risk_category") or r.get("safety_category") for r in rows]
        return cls(ids, dialogues, [bool(r.get("is_safety")) for r in rows], cats, [r.get("reference") for r in rows])

    @classmethod
    def from_sft_table(cls, table: pa.Table) -> "PromptSet":
        """Prompts cut from SFT demonstrations (the answer dropped); rows with source 'safety' are safety prompts."""
        rows = table.to_pylist()
        safety = [r["source"] == "safety" for r in rows]
        return cls([f"prompt-{r['id']}" for r in rows], [list(r["messages"][:-1]) for r in rows], safety,
                   [BUILTIN_SAFETY_CATEGORY if s else None for s in safety])

    def to_table(self) -> pa.Table:
        import json

        return pa.table({"id": self.ids, "prompt": [json.dumps(d) for d in self.dialogues], "is_safety": self.is_safety,
                         "category": self.categories or [None] * len(self.ids)},
                        schema=pa.schema([("id", pa.string()), ("prompt", pa.string()), ("is_safety", pa.bool_()),
                                          ("category", pa.string())]))

    def hash_order(self) -> list[int]:
        """Indices ordered by a hash of the prompt id: a stable shuffle that mixes safety and helpfulness prompts."""
        import hashlib

        return sorted(range(len(self)), key=lambda i: hashlib.sha256(self.ids[i].encode()).hexdigest())

    def split(self, heldout: int) -> tuple["PromptSet", "PromptSet"]:
        """(train, held-out): the held-out prompts are the first `heldout` in hash order, so the split is stable."""
        held = set(self.hash_order()[:heldout])
        return self.take([i for i in range(len(self)) if i not in held]), self.take(sorted(held))

    def safety(self) -> "PromptSet":
        return self.take([i for i, s in enumerate(self.is_safety) if s])

    def __add__(self, other: "PromptSet") -> "PromptSet":
        """Both sets, the first's copy of a prompt id kept once."""
        seen = set(self.ids)
        extra = other.take([i for i, pid in enumerate(other.ids) if pid not in seen])
        def both(mine, theirs):
            if mine is None and theirs is None:
                return None
            return [*(mine or [None] * len(self)), *(theirs or [None] * len(extra))]
        return PromptSet([*self.ids, *extra.ids], [*self.dialogues, *extra.dialogues],
                         [*self.is_safety, *extra.is_safety], both(self.categories, extra.categories),
                         both(self.references, extra.references))

    def subset(self, n: int) -> "PromptSet":
        """The first n prompts in hash order (all when n is 0 or at least the size)."""
        return self if not n or n >= len(self) else self.take(sorted(self.hash_order()[:n]))


@dataclass(frozen=True)
class RejectionSamplingRound:
    pool: pa.Table                  # best-ever answer per prompt after this round (POOL_SCHEMA)
    best_of_k: list[float]          # (P,) best combined score among this round's K samples
    median_of_k: list[float]        # (P,) median combined score of the K samples
    replaced: int                   # prompts whose pooled answer this round's best beat
    kept_from_pool: int             # prompts whose earlier answer stayed the best
    curve: tuple[tuple[int, float, float], ...] = ()  # (k, mean max, mean median) for k = 1..K (Fig. 7)
    answers: tuple[tuple[str, ...], ...] = ()        # (P, K) this round's samples
    scores: tuple[tuple[float, ...], ...] = ()       # (P, K) their combined scores

    @property
    def gain(self) -> float:
        """Mean over prompts of best-of-K minus the median sample (Llama 2 Fig. 7)."""
        return sum(b - m for b, m in zip(self.best_of_k, self.median_of_k)) / max(1, len(self.best_of_k))

    def metrics(self) -> dict[str, float]:
        n = max(1, len(self.best_of_k))
        return {"rs_best_minus_median": self.gain, "rs_best_reward": sum(self.best_of_k) / n,
                "rs_median_reward": sum(self.median_of_k) / n, "rs_replaced": float(self.replaced),
                "rs_kept_from_pool": float(self.kept_from_pool), "rs_pool_size": float(self.pool.num_rows)}


def score_answers(scorer, prompts: PromptSet, answers: list[list[str]]) -> torch.Tensor:
    """Combined scores (P, K) of K answers per prompt, scored in one flat batch."""
    k = len(answers[0]) if answers else 0
    flat_prompts = [d for d in prompts.dialogues for _ in range(k)]
    flat_flags = [f for f in prompts.is_safety for _ in range(k)]
    scores = scorer.score(flat_prompts, [a for row in answers for a in row], flat_flags)
    # argmax by `combined` (probability scale): comparable across batches, unlike the whitened `reward`.
    return scores.get("combined", scores["reward"]).float().reshape(len(prompts), k)


def best_of_k(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """scores (P, K) -> (argmax (P,), best (P,), median (P,)); the median of an even K is the mean of the middle two."""
    best, index = scores.max(dim=1)
    median = scores.sort(dim=1).values
    k = scores.shape[1]
    median = (median[:, (k - 1) // 2] + median[:, k // 2]) / 2
    return index, best, median


def best_of_k_curve(scores: torch.Tensor) -> list[tuple[int, float, float]]:
    """Llama 2 Fig. 7 from one round's samples: for k = 1..K, the expected maximum and median reward of k answers
    drawn without replacement from each prompt's K, averaged over prompts (exact order statistics, no resampling).

    With the K scores of a prompt sorted ascending, s_(1) <= ... <= s_(K), the j-th smallest is the m-th smallest of
    a random k-subset with probability C(j-1, m-1) C(K-j, k-m) / C(K, k); the maximum is m = k, and the median of an
    even k is the mean of the m = k/2 and k/2 + 1 order statistics.
    """
    from math import comb

    p, big_k = scores.shape
    ordered = scores.sort(dim=1).values.double()
    out = []
    for k in range(1, big_k + 1):
        def order_stat(m: int) -> float:
            w = torch.tensor([comb(j - 1, m - 1) * comb(big_k - j, k - m) for j in range(1, big_k + 1)],
                             dtype=torch.float64) / comb(big_k, k)
            return float((ordered @ w).mean()) if p else 0.0
        median = order_stat((k + 1) // 2) if k % 2 else (order_stat(k // 2) + order_stat(k // 2 + 1)) / 2
        out.append((k, order_stat(k), median))
    return out


def pool_rows(pool: pa.Table | None) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in pool.to_pylist()} if pool is not None and pool.num_rows else {}


def pool_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    rows = sorted(rows, key=lambda r: r["id"])  # deterministic content: same pool -> same catalog version
    return pa.Table.from_pylist([{k: r[k] for k in POOL_SCHEMA.names} for r in rows], schema=POOL_SCHEMA)


def rejection_sampling_round(sample: SampleFn, scorer, prompts: PromptSet, k: int, iteration: int,
                             pool: pa.Table | None = None) -> RejectionSamplingRound:
    """Steps 1-3 of the round: sample K, keep the argmax, merge into the pool of all earlier iterations' best."""
    answers = sample(prompts.dialogues, k)                               # P lists of K texts
    scores = score_answers(scorer, prompts, answers)                     # (P, K)
    index, best, median = best_of_k(scores)
    previous = pool_rows(pool)
    # The pooled answers of these prompts are judged again by today's reward models.
    pooled_ids = [i for i, pid in enumerate(prompts.ids) if pid in previous]
    rescored = {}
    if pooled_ids:
        sub = prompts.take(pooled_ids)
        old_answers = [[previous[pid]["messages"][-1]["content"]] for pid in sub.ids]
        rescored = dict(zip(sub.ids, score_answers(scorer, sub, old_answers)[:, 0].tolist()))
    merged = dict(previous)
    replaced = kept = 0
    for i, pid in enumerate(prompts.ids):
        new_best = float(best[i])
        if pid in rescored and rescored[pid] >= new_best:
            merged[pid] = {**previous[pid], "reward": rescored[pid]}
            kept += 1
            continue
        replaced += pid in rescored
        answer = answers[i][int(index[i])]
        merged[pid] = {"id": pid, "source": f"rs-iteration-{iteration}", "reward": new_best, "iteration": iteration,
                       "is_safety": prompts.is_safety[i],
                       "messages": [*prompts.dialogues[i], {"role": "assistant", "content": answer}]}
    return RejectionSamplingRound(pool_table(list(merged.values())), best.tolist(), median.tolist(), replaced, kept,
                                  tuple(best_of_k_curve(scores)), tuple(tuple(a) for a in answers),
                                  tuple(tuple(row) for row in scores.tolist()))


def training_dialogues(pool: pa.Table) -> list[list[Message]]:
    """The pool's dialogues with a non-empty answer, ready for `encode_sft_rows` (step 4: the SFT recipe)."""
    return [row for row in pool.column("messages").to_pylist() if row[-1]["content"].strip()]
