"""The promotion gates' thresholds as a versioned policy of the registered model, set by a reviewer.

Thresholds read from whoever runs `promote` would let the promoter pick the bar
(`--set evaluation.min_win_rate=0`). So the bar is stored in the registry:
`alignline gates set --reviewer NAME` records the `[evaluation]` gate fields
(`config.evaluation.GATE_FIELDS`) as the model's next gate policy version, with
who set it and why, and `promote` reads it from there. Before any was set, the
config's thresholds apply and the promotion record says so (version 0,
"from config").
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from alignline.config.evaluation import GATE_FIELDS, EvaluationConfig
from alignline.config.fields import build_section

from .policy_eval import GateResult, configured_gates

FROM_CONFIG = "from config"


@dataclass(frozen=True)
class GatePolicy:
    """One version of a model's gate thresholds; version 0 is the config's, used while none was ever set."""
    version: int
    thresholds: dict[str, Any]          # GATE_FIELDS -> value, checked against the fields' bounds
    set_by: str = FROM_CONFIG
    reason: str = ""
    at: str = ""

    @classmethod
    def from_config(cls, ev: EvaluationConfig, set_by: str = FROM_CONFIG, reason: str = "") -> GatePolicy:
        """The `[evaluation]` thresholds: version 0 while none was set, or what a reviewer is about to set."""
        return cls(0, {k: getattr(ev, k) for k in GATE_FIELDS}, set_by, reason)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> GatePolicy:
        """A stored policy, its thresholds validated as config fields (ConfigError naming field, value and rule)."""
        thresholds = {k: record["thresholds"][k] for k in GATE_FIELDS if k in record["thresholds"]}
        ev = build_section(EvaluationConfig, "evaluation", thresholds)
        return cls(int(record["version"]), {k: getattr(ev, k) for k in GATE_FIELDS}, str(record.get("set_by", "")),
                   str(record.get("reason", "")), str(record.get("at", "")))

    @property
    def evaluation(self) -> EvaluationConfig:
        """The thresholds as an `[evaluation]` section (other fields at their defaults: gates do not read them)."""
        return dataclasses.replace(EvaluationConfig(), **self.thresholds)

    def gates(self, report: dict, champion_report: dict | None) -> list[GateResult]:
        return configured_gates(report, champion_report, self.evaluation)

    def describe(self) -> str:
        if self.version == 0:
            return "v0 (from config: no gate policy was set; a reviewer sets one with `alignline gates set`)"
        return f"v{self.version} (set by {self.set_by} at {self.at})"

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "thresholds": {k: _plain(v) for k, v in self.thresholds.items()},
                "set_by": self.set_by, "reason": self.reason, "at": self.at}

    def changes_from(self, other: GatePolicy | None) -> dict[str, list[Any]]:
        """field -> [old, new] for every threshold that differs from `other` (all of them when there is none)."""
        before = other.thresholds if other else {}
        return {k: [_plain(before.get(k)), _plain(v)] for k, v in self.thresholds.items() if before.get(k) != v}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
