"""Human evaluation of one policy against another (Llama 2 §3.4.2): win / tie / loss and inter-rater reliability.

Pure: rows of the `human-eval-<policy>-vs-<baseline>` dataset (storage.schemas.HUMAN_EVAL_SCHEMA) in, numbers out.

* Win / tie / loss are counted **per item** (prompt): the item's verdict is the sign of the median of its raters'
  candidate-side scores (with three raters on an ordinal scale the median's sign is the majority's when there is
  one; +1 / 0 / -1 is a tie). Items are the independent units, so the 95% Wilson intervals are over items. The
  per-rating shares are reported beside them, without intervals (three ratings of one item are not independent).
* Reliability on the 7 candidate-side scores: Gwet's AC2 with Gwet's ordinal weights (Gwet 2014, Handbook of
  Inter-Rater Reliability, 4th ed., ch. 3), the statistic Llama 2 reports (AC2 0.37-0.55 across its model pairs),
  and Krippendorff's alpha with the ordinal metric (Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability").
  Ratings form an (items, raters) matrix with NaN where a rater did not rate an item.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from alignline.storage.schemas import HUMAN_EVAL_SCORES

from .policy_eval import wilson_interval

# Llama 2 §3.4.2: "Gwet's AC2 ... scores varying between 0.37 and 0.55 depending on the specific model comparison".
PAPER_AC2_RANGE = (0.37, 0.55)


# -- reliability -----------------------------------------------------------------------------------------
def ordinal_weights(q: int) -> np.ndarray:
    """Gwet's ordinal weights (q, q): w_kl = 1 - M_kl / max M, M_kl = C(|k-l|+1, 2) (Gwet 2014, §3.4)."""
    idx = np.arange(q)
    n = np.abs(idx[:, None] - idx[None, :]) + 1
    m = n * (n - 1) / 2.0
    return 1.0 - m / m.max() if q > 1 else np.ones((1, 1))


def _counts(ratings: np.ndarray, categories: Sequence[float]) -> np.ndarray:
    """(n_items, n_raters) ratings with NaN for missing -> (n_items, q) counts r_ik of raters per category."""
    ratings = np.asarray(ratings, dtype=float)
    unknown = set(ratings[~np.isnan(ratings)].tolist()) - set(map(float, categories))
    if unknown:
        raise ValueError(f"ratings {sorted(unknown)} are not among the categories {list(categories)}")
    return np.stack([(ratings == c).sum(axis=1) for c in categories], axis=1).astype(float)


def gwet_ac2(ratings: np.ndarray, categories: Sequence[float], weights: np.ndarray | None = None) -> dict[str, float]:
    """Gwet's AC2 for any number of raters with missing ratings (Gwet 2014, eq. 3.4.x; AC1 with identity weights).

    p_a = mean over items with >= 2 ratings of sum_k r_ik (r*_ik - 1) / (r_i (r_i - 1)), r*_ik = sum_l w_kl r_il;
    p_e = T_w / (q (q - 1)) * sum_k pi_k (1 - pi_k), pi_k = mean over rated items of r_ik / r_i, T_w = sum w_kl.
    """
    q = len(categories)
    w = ordinal_weights(q) if weights is None else np.asarray(weights, dtype=float)
    r = _counts(ratings, categories)                        # (n, q)
    r_i = r.sum(axis=1)                                     # (n,)
    paired = r_i >= 2
    if not paired.any() or q < 2:
        return {"coefficient": float("nan"), "pa": float("nan"), "pe": float("nan"), "items": int(paired.sum())}
    r_star = r @ w.T                                        # (n, q): weighted agreeing counts
    pa = float(np.mean((r[paired] * (r_star[paired] - 1)).sum(axis=1) / (r_i[paired] * (r_i[paired] - 1))))
    rated = r_i >= 1
    pi = (r[rated] / r_i[rated, None]).mean(axis=0)        # (q,)
    pe = float(w.sum() / (q * (q - 1)) * (pi * (1 - pi)).sum())
    coef = (pa - pe) / (1 - pe) if pe < 1 else float("nan")
    return {"coefficient": float(coef), "pa": pa, "pe": pe, "items": int(paired.sum())}


def krippendorff_alpha_ordinal(ratings: np.ndarray, categories: Sequence[float]) -> float:
    """Krippendorff's alpha with the ordinal metric, any number of raters, missing ratings allowed.

    Coincidences o_ck = sum_u (c-k pairs in unit u) / (m_u - 1) over units with m_u >= 2 values; n_c = sum_k o_ck;
    ordinal distance d_ck = (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2; alpha = 1 - (n - 1) sum o d / sum n_c n_k d.
    """
    r = _counts(ratings, categories)                        # (n, q)
    m = r.sum(axis=1)
    r = r[m >= 2]
    m = m[m >= 2]
    if not len(r):
        return float("nan")
    # pairs within a unit: r_c r_k off the diagonal, r_c (r_c - 1) on it
    o = np.einsum("uc,uk->ck", r / (m - 1)[:, None], r) - np.diag((r / (m - 1)[:, None]).sum(axis=0))
    n_c = o.sum(axis=1)
    n = n_c.sum()
    cum = np.concatenate([[0.0], np.cumsum(n_c)])
    lo, hi = np.minimum.outer(np.arange(len(n_c)), np.arange(len(n_c))), np.maximum.outer(np.arange(len(n_c)), np.arange(len(n_c)))
    d = (cum[hi + 1] - cum[lo] - (n_c[:, None] + n_c[None, :]) / 2.0) ** 2
    expected = (np.outer(n_c, n_c) * d).sum()
    if expected == 0:
        return float("nan")
    return float(1.0 - (n - 1) * (o * d).sum() / expected)


def ratings_matrix(rows: Sequence[dict]) -> np.ndarray:
    """(items, max raters per item) candidate-side scores, NaN-padded: the rater's identity does not enter either
    coefficient, only which ratings share an item."""
    by_item: dict[tuple, list[int]] = defaultdict(list)
    for row in rows:
        by_item[(row["source"], row["task_id"])].append(row["score"])
    width = max((len(v) for v in by_item.values()), default=0)
    out = np.full((len(by_item), width), np.nan)
    for i, scores in enumerate(by_item.values()):
        out[i, :len(scores)] = scores
    return out


# -- win / tie / loss ------------------------------------------------------------------------------------
def item_verdicts(rows: Sequence[dict]) -> dict[tuple, tuple[int, str]]:
    """(source, task_id) -> (verdict +1 win / 0 tie / -1 loss of the candidate, category), by the median rating."""
    scores: dict[tuple, list[int]] = defaultdict(list)
    category: dict[tuple, str] = {}
    for row in rows:
        key = (row["source"], row["task_id"])
        scores[key].append(row["score"])
        category[key] = row["category"]
    return {k: (int(np.sign(np.median(v))), category[k]) for k, v in scores.items()}


def win_tie_loss_counts(verdicts: Sequence[int]) -> dict[str, float]:
    """Shares of wins, ties and losses with 95% Wilson intervals each, and the win rate (ties count half)."""
    v = np.asarray(verdicts)
    n = len(v)
    out: dict[str, float] = {"n": n}
    for name, value in (("win", 1), ("tie", 0), ("loss", -1)):
        share = float((v == value).mean()) if n else 0.0
        low, high = wilson_interval(share, n)
        out.update({name: share, f"{name}_low": low, f"{name}_high": high})
    out["win_rate"] = out["win"] + 0.5 * out["tie"]
    out["win_rate_low"], out["win_rate_high"] = wilson_interval(out["win_rate"], n)
    return out


def human_eval_results(rows: Sequence[dict], policy: str, baseline: str) -> dict:
    """The whole result: overall and per-category win / tie / loss (per item), per-rating shares, AC2 and alpha."""
    verdicts = item_verdicts(rows)
    groups: dict[str, list[int]] = defaultdict(list)
    for verdict, category in verdicts.values():
        kind, turns = category.split("/")
        for group in (category, kind, turns):
            groups[group].append(verdict)
    matrix = ratings_matrix(rows)
    ac2 = gwet_ac2(matrix, HUMAN_EVAL_SCORES)
    per_rating = np.sign([r["score"] for r in rows]) if rows else np.array([])
    return {
        "policy": policy, "baseline": baseline, "unit": "item (verdict: sign of the median rating)",
        "items": len(verdicts), "ratings": len(rows), "raters": len({r["rater"] for r in rows}),
        "simulated": bool(rows) and all(r.get("simulated") for r in rows),
        **win_tie_loss_counts([v for v, _ in verdicts.values()]),
        "per_rating": {name: float((per_rating == value).mean()) if len(per_rating) else 0.0
                       for name, value in (("win", 1), ("tie", 0), ("loss", -1))},
        "by_category": {g: win_tie_loss_counts(v) for g, v in sorted(groups.items())},
        "mean_score": float(np.mean([r["score"] for r in rows])) if rows else 0.0,
        "gwet_ac2": ac2["coefficient"], "gwet_ac2_pa": ac2["pa"], "gwet_ac2_pe": ac2["pe"],
        "krippendorff_alpha": krippendorff_alpha_ordinal(matrix, HUMAN_EVAL_SCORES),
        "paper_ac2_range": list(PAPER_AC2_RANGE),
    }


def summary_lines(result: dict) -> list[str]:
    """A short table for the terminal: overall and per category, then reliability beside the paper's range."""
    def row(name: str, g: dict) -> str:
        return (f"{name:<24} n={g['n']:<4} win {g['win']:.2f} [{g['win_low']:.2f}, {g['win_high']:.2f}]  "
                f"tie {g['tie']:.2f} [{g['tie_low']:.2f}, {g['tie_high']:.2f}]  "
                f"loss {g['loss']:.2f} [{g['loss_low']:.2f}, {g['loss_high']:.2f}]")
    sim = "  (SIMULATED raters: scripted bots, not people)" if result.get("simulated") else ""
    lines = [f"{result['policy']} vs {result['baseline']}: per item, 95% Wilson intervals{sim}",
             row("all", result)]
    lines += [row(name, g) for name, g in result["by_category"].items()]
    low, high = result["paper_ac2_range"]
    lines.append(f"Gwet's AC2 (ordinal) {result['gwet_ac2']:.3f}   Llama 2 reported {low}-{high}   "
                 f"Krippendorff's alpha (ordinal) {result['krippendorff_alpha']:.3f}")
    return lines
