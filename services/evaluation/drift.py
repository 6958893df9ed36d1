"""Reward drift (Llama 2 §3.2.2, §3.4): how well the current RMs rank a newly harvested batch before they retrain.

Each new batch is sampled from the newest policy, so its answers drift away from
what the RMs were trained on; the paper retrains every iteration for that
reason. Accuracy of each RM on the new pairs of its own kind, overall and per
rating level, is the signal: logged per iteration, with an alert below a
threshold (`reward.drift_alert_accuracy`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import pyarrow as pa

from alignline.storage.schemas import Comparison

from .reward_eval import accuracy_by_level, binomial_interval, score_pairs

RM_KINDS = {"rm-helpfulness": False, "rm-safety": True}   # RM -> the is_safety of the pairs it judges


@dataclass(frozen=True)
class DriftResult:
    rm: str
    model: str                                  # registry ref of the RM that scored the batch
    n: int
    accuracy: float | None
    low: float | None                           # 95% interval
    high: float | None
    by_level: dict[str, dict[str, Any]]         # level -> {accuracy, n} (Llama 2 Table 8 layout, plus 'avg')
    threshold: float

    @property
    def alert(self) -> bool:
        return self.accuracy is not None and self.accuracy < self.threshold

    def metrics(self) -> dict[str, float]:
        """MLflow metrics: drift.<rm>.accuracy, drift.<rm>.accuracy.<level>, drift.<rm>.pairs."""
        if self.accuracy is None:
            return {}
        out = {f"drift.{self.rm}.accuracy": self.accuracy, f"drift.{self.rm}.pairs": float(self.n)}
        out |= {f"drift.{self.rm}.accuracy.{lv}": c["accuracy"] for lv, c in self.by_level.items()
                if lv != "avg" and c["accuracy"] is not None}
        return out

    def summary(self) -> dict[str, Any]:
        return {"model": self.model, "pairs": self.n, "accuracy": self.accuracy, "interval": [self.low, self.high],
                "by_level": {lv: c["accuracy"] for lv, c in self.by_level.items() if c["n"]},
                "threshold": self.threshold, "alert": self.alert}


def pairs_of_kind(rm: str, rows: Sequence[Comparison]) -> list[Comparison]:
    """The pairs an RM judges: helpfulness pairs for rm-helpfulness, safety pairs for rm-safety."""
    return [r for r in rows if r["is_safety"] == RM_KINDS[rm]]


def new_comparisons(table: pa.Table, seen_ids: set[str]) -> pa.Table:
    """Rows of a (cumulative) harvested version that none of the versions an RM was trained on held, by
    comparison_id (a row without one counts as new)."""
    ids = table.column("comparison_id").to_pylist()
    return table.filter(pa.array([i is None or i not in seen_ids for i in ids], type=pa.bool_()))


def reward_drift(rm: str, model: str, scorer: Any, rows: Sequence[Comparison], threshold: float) -> DriftResult:
    """Accuracy of `scorer` (anything with `raw_scores(prompts, responses)`) on `rows`, overall and per level."""
    rows = list(rows)
    if not rows:
        return DriftResult(rm, model, 0, None, None, None, {}, threshold)
    scores = score_pairs(scorer, rows)
    correct = int((scores.chosen > scores.rejected).sum())
    interval = binomial_interval(correct, len(rows))
    return DriftResult(rm, model, len(rows), correct / len(rows), *interval, accuracy_by_level(rows, scores), threshold)


def drift_tags(result: DriftResult) -> dict[str, str]:
    """Registry tags for the RM version trained after this check."""
    if result.accuracy is None:
        return {}
    return {"drift.accuracy": f"{result.accuracy:.4f}", "drift.pairs": str(result.n), "drift.scored_by": result.model,
            "drift.alert": str(result.alert).lower()}

