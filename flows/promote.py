"""`alignline promote MODEL VERSION --reviewer NAME --reason TEXT [--override]`.

The champion alias moves only when the configured gates pass against the
current champion (or with an explicit override, recorded as such). The gates
read the evaluation report that `evaluate` stored on each version
(`eval.report` tag). Promoting in the MLflow UI works too; the next iteration
simply samples from whatever `champion` points at.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from alignline.config import RunConfig
from alignline.flows.context import RunContext
from alignline.services.evaluation.policy_eval import REPORT_TAG, configured_gates
from alignline.services.registry import CHAMPION, RegistryError

class PromotionRefused(RuntimeError):
    pass


def stored_report(ctx: RunContext, name: str, version: str) -> dict[str, Any] | None:
    tags = ctx.registry.get(name, version).tags
    return json.loads(tags[REPORT_TAG]) if REPORT_TAG in tags else None


def champion_report(ctx: RunContext, name: str, version: str) -> dict[str, Any] | None:
    """The current champion's stored report, unless `version` is the champion itself (or there is none)."""
    try:
        champion = ctx.registry.get(name, CHAMPION)
    except RegistryError:
        return None
    return None if champion.version == str(version) else stored_report(ctx, name, champion.version)


def check_gates(cfg: RunConfig, name: str, version: str) -> list[dict[str, Any]]:
    ctx = RunContext(cfg)
    report = stored_report(ctx, name, version)
    if report is None:
        raise PromotionRefused(f"{name}/{version} has no evaluation report (tag {REPORT_TAG}): run `alignline evaluate` first")
    gates = configured_gates(report, champion_report(ctx, name, version), cfg.evaluation)
    return [asdict(g) for g in gates]


def run_promote(cfg: RunConfig, name: str, version: str, reviewer: str, reason: str,
                override: bool = False) -> dict[str, Any]:
    ctx = RunContext(cfg)
    gates = check_gates(cfg, name, version)
    failed = [g for g in gates if not g["passed"]]
    if failed and not override:
        lines = "; ".join(f"{g['name']} = {g['value']:.3f} (rule: {g['rule']})" for g in failed)
        raise PromotionRefused(f"{name}/{version} fails its promotion gates: {lines}. "
                               "Promote anyway with --override (recorded with your name and reason).")
    record = ctx.registry.promote(name, version, reviewer=reviewer, reason=reason,
                                  gates={g["name"]: g["passed"] for g in gates}, override=bool(failed and override))
    return {"promoted": f"{name}/{version}", "previous_champion": record["previous"], "reviewer": reviewer,
            "override": record["override"], "gates": ", ".join(f"{g['name']}={'pass' if g['passed'] else 'FAIL'}" for g in gates)}
