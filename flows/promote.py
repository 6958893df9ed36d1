"""`alignline promote MODEL VERSION --reviewer NAME --reason TEXT [--override]`.

The champion alias moves only when the configured gates pass against the
current champion (or with an explicit override, recorded as such). The gates
read the evaluation report `evaluate` stored for each version (a JSON artifact
whose SHA-256 is on the version's tags; a changed report is refused).
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from alignline.config import RunConfig
from alignline.flows.context import RunContext
from alignline.services.evaluation.policy_eval import configured_gates
from alignline.services.registry import CHAMPION, Registry, RegistryError


class PromotionRefused(RuntimeError):
    pass


def champion_report(registry: Registry, name: str, version: str) -> dict[str, Any] | None:
    """The current champion's stored report, unless `version` is the champion itself (or there is none)."""
    try:
        champion = registry.get(name, CHAMPION)
    except RegistryError:
        return None
    return None if champion.version == str(version) else registry.load_report(name, champion.version)


def check_gates(cfg: RunConfig, registry: Registry, name: str, version: str) -> list[dict[str, Any]]:
    report = registry.load_report(name, version)
    if report is None:
        raise PromotionRefused(f"{name}/{version} has no evaluation report: run `alignline evaluate` first")
    gates = configured_gates(report, champion_report(registry, name, version), cfg.evaluation)
    return [asdict(g) for g in gates]


def run_promote(cfg: RunConfig, name: str, version: str, reviewer: str, reason: str,
                override: bool = False) -> dict[str, Any]:
    ctx = RunContext(cfg)
    with ctx.data.lock("promote", wait_s=60):  # two promotions at once would race on `champion`
        return _promote(cfg, ctx.registry, name, version, reviewer, reason, override)


def _promote(cfg: RunConfig, registry: Registry, name: str, version: str, reviewer: str, reason: str,
             override: bool) -> dict[str, Any]:
    gates = check_gates(cfg, registry, name, version)
    failed = [g for g in gates if not g["passed"]]
    if failed and not override:
        lines = "; ".join(f"{g['name']} = {g['value']:.3f} (rule: {g['rule']})" for g in failed)
        raise PromotionRefused(f"{name}/{version} fails its promotion gates: {lines}. "
                               "Promote anyway with --override (recorded with your name and reason).")
    record = registry.promote(name, version, reviewer=reviewer, reason=reason, gates=gates,
                              override=bool(failed and override))
    return {"promoted": f"{name}/{version}", "previous_champion": record["previous"], "reviewer": reviewer,
            "override": record["override"], "gates": ", ".join(f"{g['name']}={'pass' if g['passed'] else 'FAIL'}" for g in gates)}
