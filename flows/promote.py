"""`alignline promote MODEL VERSION --reviewer NAME --reason TEXT [--override]` and `alignline gates show|set`.

The champion alias moves only when the gates pass against the current champion
(or with an explicit override, recorded as such). At promotion time, under the
promote lock, `promote` re-checks the evidence rather than trusting it:

- the evaluation report `evaluate` stored for the version (a JSON artifact whose
  SHA-256 is on the version's tags) is unchanged and is about this version;
- it compares the version with today's champion (with no champion yet: with the
  version's parent, as `evaluate` does); a version compared with itself never
  passes a win-rate gate;
- its evaluation set is still disjoint from every dataset in the version's
  lineage (`check_held_out`, run again on this data dir's catalog);
- the thresholds are the model's gate policy in the registry (set by a reviewer
  with `alignline gates set`), not the promoter's config; before any was set,
  the config's, recorded as version 0. The record names the policy used.

Failed evidence checks refuse outright; failed gates refuse unless `--override`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict
from typing import Any

from alignline.config import ConfigError, RunConfig
from alignline.config.evaluation import EvaluationConfig
from alignline.flows.context import RunContext
from alignline.flows.reviewers import as_reviewer
from alignline.infra.auth import AuthError
from alignline.services.evaluation.descriptions import history_description
from alignline.services.evaluation.gate_policy import GatePolicy
from alignline.services.evaluation.heldout import EvalOverlapError, check_held_out
from alignline.services.registry import CHAMPION, ModelVersionInfo, Registry, RegistryError
from alignline.storage import Catalog
from alignline.storage.catalog import CatalogError
from alignline.storage.faults import fault_point


class PromotionRefused(RuntimeError):
    pass


def champion_report(registry: Registry, name: str, version: str) -> dict[str, Any] | None:
    """The current champion's stored report, unless `version` is the champion itself (or there is none)."""
    try:
        champion = registry.get(name, CHAMPION)
    except RegistryError:
        return None
    return None if champion.version == str(version) else registry.load_report(name, champion.version)


def gate_policy_in_effect(registry: Registry, name: str, ev: EvaluationConfig) -> GatePolicy:
    """The model's gate policy from the registry; the config's thresholds (version 0) while none was ever set."""
    record = registry.gate_policy(name)
    return GatePolicy.from_dict(record) if record else GatePolicy.from_config(ev)


def expected_baseline(registry: Registry, info: ModelVersionInfo) -> tuple[str, str]:
    """(ref, why) of what the version's report must compare it with today: the champion; with none, the version's
    parent in the same model (the first promotion); with neither, the version itself (which never passes)."""
    try:
        champion = registry.get(info.name, CHAMPION)
    except RegistryError:
        parent = next((p for p in info.parents if p.name == info.name), None)
        if parent:
            return str(parent), "its parent (there is no champion yet)"
        return info.ref, "itself (there is no champion and no parent)"
    if champion.version == info.version:
        raise PromotionRefused(f"{info.ref} is already the champion")
    return champion.ref, "the current champion"


def stored_report(registry: Registry, info: ModelVersionInfo) -> dict[str, Any]:
    """The version's report, refused when missing, changed since it was stored, or about another version."""
    try:
        report = registry.load_report(info.name, info.version)
    except RegistryError as e:
        raise PromotionRefused(f"{info.ref}: {e}") from e
    if report is None:
        raise PromotionRefused(f"{info.ref} has no evaluation report: run `alignline evaluate --policy {info.version}` "
                               "first")
    if report.get("policy") != info.ref:
        raise PromotionRefused(f"the evaluation report stored on {info.ref} is about {report.get('policy')!r}: run "
                               f"`alignline evaluate --policy {info.version}`")
    return report


def check_baseline(registry: Registry, info: ModelVersionInfo, report: dict[str, Any]) -> None:
    """Refuse a report whose baseline is not today's champion (it moved since the evaluation, or `--baseline`)."""
    expected, why = expected_baseline(registry, info)
    if report.get("baseline") != expected:
        raise PromotionRefused(f"{info.ref} was evaluated against {report.get('baseline')}, but its gates must be "
                               f"judged against {why}, {expected}. Re-run `alignline evaluate --policy {info.version}` "
                               "(its default baseline is the champion) and promote again")


def check_still_held_out(registry: Registry, catalog: Catalog, info: ModelVersionInfo, report: dict[str, Any]) -> dict:
    """`check_held_out` again, now: the report's evaluation set against every dataset in the version's lineage."""
    eval_ref = (report.get("held_out") or {}).get("eval_set")
    if not eval_ref:
        raise PromotionRefused(f"the evaluation report of {info.ref} names no evaluation set, so it cannot be checked "
                               f"as held out: re-run `alignline evaluate --policy {info.version}`")
    try:
        _, datasets = registry.lineage(info.name, info.version)
        return check_held_out(catalog.read_ref(eval_ref), eval_ref, catalog, datasets).to_dict()
    except EvalOverlapError as e:
        raise PromotionRefused(f"{info.ref} is not held out from its evaluation set: {e}") from e
    except (CatalogError, RegistryError) as e:
        raise PromotionRefused(f"cannot check that {eval_ref} is held out from {info.ref}'s lineage: {e}") from e


def check_gates(registry: Registry, info: ModelVersionInfo, report: dict[str, Any],
                policy: GatePolicy) -> list[dict[str, Any]]:
    try:
        champion = champion_report(registry, info.name, info.version)
    except RegistryError as e:  # the champion's own report changed: its safety rate cannot be trusted
        raise PromotionRefused(f"the champion's evaluation report cannot be read: {e}") from e
    return [asdict(g) for g in policy.gates(report, champion)]


def run_promote(cfg: RunConfig, name: str, version: str, reviewer: str, reason: str,
                override: bool = False, password: str | None = None) -> dict[str, Any]:
    """With `servers.auth`, every MLflow call of the promotion is made by the reviewer's own account (`password`,
    else $ALIGNLINE_REVIEWER_PASSWORD, else a scripted reviewer's generated one): a wrong password or a
    non-reviewer is refused before anything is read, and MLflow refuses a `champion` move by anyone else."""
    ctx = RunContext(cfg)
    with ctx.data.lock("promote", wait_s=60):  # two promotions (or a promotion and `gates set`) would race
        fault_point("promote.locked")
        try:
            with as_reviewer(cfg, reviewer, password) as account:
                return _promote(cfg.evaluation, ctx.registry, ctx.catalog, name, version, account, reason, override)
        except AuthError as e:
            raise PromotionRefused(str(e)) from e


def _promote(ev: EvaluationConfig, registry: Registry, catalog: Catalog, name: str, version: str, reviewer: str,
             reason: str, override: bool) -> dict[str, Any]:
    if (done := registry.finish_interrupted_promotion(name, version)) is not None:  # killed after moving the alias
        registry.describe(name, history_description(name, registry.promotion_history(name)))
        return {"promoted": f"{name}/{done['version']}", "previous_champion": done["previous"],
                "reviewer": done["reviewer"], "override": done["override"], "resumed": True,
                "gate_policy": (done.get("gate_policy") or {}).get("version"),
                "gates": ", ".join(f"{g['name']}={'pass' if g['passed'] else 'FAIL'}" for g in done["gates"])}
    try:
        info = registry.get(name, version)
        policy = gate_policy_in_effect(registry, name, ev)
    except (RegistryError, ConfigError) as e:
        raise PromotionRefused(str(e)) from e
    report = stored_report(registry, info)
    check_baseline(registry, info, report)
    check_still_held_out(registry, catalog, info, report)
    gates = check_gates(registry, info, report, policy)
    failed = [g for g in gates if not g["passed"]]
    if failed and not override:
        lines = "; ".join(f"{g['name']} = {g['value']:.3f} (rule: {g['rule']})" for g in failed)
        raise PromotionRefused(f"{info.ref} fails its promotion gates: {lines}. Gate policy {policy.describe()}. "
                               "Promote anyway with --override (recorded with your name and reason).")
    record = registry.promote(name, info.version, reviewer=reviewer, reason=reason, gates=gates,
                              override=bool(failed and override), gate_policy=policy.to_dict())
    registry.describe(name, history_description(name, registry.promotion_history(name)))  # the MLflow UI's view
    return {"promoted": info.ref, "previous_champion": record["previous"], "reviewer": reviewer,
            "override": record["override"], "gate_policy": policy.describe(),
            "gates": ", ".join(f"{g['name']}={'pass' if g['passed'] else 'FAIL'}" for g in gates)}


def run_gates_show(cfg: RunConfig, name: str) -> dict[str, Any]:
    """The gate policy `promote` applies to `name` now, and every version set before."""
    registry = RunContext(cfg).registry
    policy = gate_policy_in_effect(registry, name, cfg.evaluation)
    history = registry.gate_policy_history(name)
    return {"model": name, "gate_policy": policy.describe(), "reason": policy.reason or "-", **policy.thresholds,
            "history": "; ".join(f"v{h['version']} by {h['set_by']} at {h['at']}" for h in history) or "-"}


def current_gate_policy(registry: Registry, name: str) -> GatePolicy | None:
    """The stored policy, None when there is none (or none that can be trusted: setting a new one is the fix)."""
    try:
        record = registry.gate_policy(name)
        return GatePolicy.from_dict(record) if record else None
    except (RegistryError, ConfigError):
        return None


def run_gates_set(cfg: RunConfig, name: str, reviewer: str, reason: str = "",
                  password: str | None = None) -> dict[str, Any]:
    """Record the config's `[evaluation]` gate thresholds (with `--set`) as `name`'s next gate policy version, as the
    reviewer's own MLflow account with `servers.auth` (only reviewers may write `gates.*`)."""
    ctx = RunContext(cfg)
    with ctx.data.lock("promote", wait_s=60), as_reviewer(cfg, reviewer, password) as account:  # not under a promotion
        before = current_gate_policy(ctx.registry, name)
        new = dataclasses.replace(GatePolicy.from_config(cfg.evaluation), set_by=account, reason=reason)
        stored = GatePolicy.from_dict(ctx.registry.set_gate_policy(name, new.to_dict()))
    changed = stored.changes_from(before)
    return {"model": name, "gate_policy": stored.describe(), "previous": before.describe() if before else "none",
            **stored.thresholds,
            "changed": ", ".join(f"{k}: {old} -> {new}" for k, (old, new) in changed.items()) or "nothing"}
