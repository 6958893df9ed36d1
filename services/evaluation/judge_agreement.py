"""Do the reward models rank the policy's own answers the way the reference judge does? (issue 15.4)

Rejection sampling picks the argmax of the combined RM score among K answers per prompt; it helps only when the RM
orders those answers like the truth does. Where prompts carry a reference answer, the oracle score (closeness to
the reference; 0 for an unsafe answer to a safety prompt) stands for the truth, and the agreement is the Spearman
rank correlation between RM and oracle scores: within each prompt's K answers (what best-of-K depends on),
averaged over prompts whose oracle scores are not all tied, and pooled over every (prompt, answer).
"""
from __future__ import annotations

from typing import Sequence

from .judges import oracle_score


def _ranks(values: Sequence[float]) -> list[float]:
    """Average ranks (ties share the mean of their positions), 1-based."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho with average ranks for ties; None when either side is constant or has under two items."""
    if len(x) != len(y):
        raise ValueError(f"spearman: {len(x)} and {len(y)} values")
    if len(x) < 2:
        return None
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return None if vx == 0 or vy == 0 else cov / (vx * vy) ** 0.5


def rm_oracle_agreement(rm_scores: Sequence[Sequence[float]], answers: Sequence[Sequence[str]],
                        references: Sequence[str | None], is_safety: Sequence[bool]) -> dict[str, float | None]:
    """Per prompt K RM scores and K answers -> within-prompt and pooled Spearman against the oracle.

    Prompts without a reference are left out (no truth to compare with); `prompts_ranked` counts the prompts whose
    within-prompt rho is defined (neither side all tied)."""
    within, pooled_rm, pooled_oracle, judged = [], [], [], 0
    for scores, texts, ref, safety in zip(rm_scores, answers, references, is_safety):
        if not ref:
            continue
        judged += 1
        oracle = [oracle_score(t, ref, safety) for t in texts]
        pooled_rm += list(scores)
        pooled_oracle += oracle
        if (rho := spearman(scores, oracle)) is not None:
            within.append(rho)
    return {"spearman_within_prompt": sum(within) / len(within) if within else None,
            "spearman_pooled": spearman(pooled_rm, pooled_oracle), "prompts_with_reference": float(judged),
            "prompts_ranked": float(len(within))}
