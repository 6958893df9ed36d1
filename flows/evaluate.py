"""Evaluation flow: one policy version against another (Llama 2 §3.4, §4.4), stored on the version.

Answers both policies on the same held-out prompts, judges them with the latest
reward models (model-based evaluation, §3.4.1) and, on built-in data, with the
oracle the scripted annotator uses; measures safety violations on adversarial
prompts, false refusals on benign-but-risky prompts, a toxicity proxy and
answer length. The report goes to MLflow (run in experiment `evaluation`, with
the model card) and onto the version's tags, where `promote` reads it.

CLI: `alignline evaluate [--policy VERSION] [--baseline VERSION]`.
"""
from __future__ import annotations

import json
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from alignline.annotation.bot import closeness, is_destructive
from alignline.annotation.pairs import select_prompts
from alignline.config import RunConfig
from alignline.flows.context import RunContext
from alignline.flows.promote import champion_report
from alignline.services.evaluation.borderline import BORDERLINE_PROMPTS
from alignline.services.evaluation.model_card import write_model_card
from alignline.services.evaluation.policy_eval import REPORT_TAG, configured_gates, evaluate_against
from alignline.services.registry import CHAMPION, RegistryError

POLICY = "policy"
EVAL_SALT = -1  # select_prompts(iteration=-1): a fixed draw, the same for every version compared


def _prompts(ctx: RunContext) -> list[dict]:
    from alignline.flows.collect import DEFAULT_PROMPTS, default_prompts_table

    try:
        table = ctx.catalog.read(DEFAULT_PROMPTS)
    except Exception:
        table = default_prompts_table(ctx.cfg.annotation.stdlib_prompts)
    return select_prompts(table, ctx.cfg.evaluation.eval_prompts, 0.25, EVAL_SALT, 0)


@task(cache_policy=NO_CACHE)
def answer(ctx: RunContext, version: str, dialogues: list[list[dict]]) -> list[str]:
    """Low-temperature answers of one policy version, seeded, so reruns compare like with like."""
    from alignline.services.generation import SamplingParams, generate_chat
    from alignline.services.models import load_registered

    model, tokenizer, _ = load_registered(ctx.registry, POLICY, version, ctx.work_dir("models"))
    params = SamplingParams(max_new_tokens=ctx.cfg.rlhf.max_new_tokens, temperature=0.7, top_p=0.9, seed=1234)
    return list(generate_chat(model, tokenizer, dialogues, params))


@task(cache_policy=NO_CACHE)
def rm_scores(ctx: RunContext, dialogues: list[list[dict]], answers: list[str], is_safety: list[bool]) -> dict[str, list[float]] | None:
    """Scores of the latest reward models (champion, else candidate); None before any RM exists."""
    from alignline.services.models import registered_folder
    from alignline.services.rewards.scorer import CombinedScorer, RewardScorer

    try:
        folders = {rm: registered_folder(ctx.registry, rm, "latest", ctx.work_dir("models"))
                   for rm in ("rm-helpfulness", "rm-safety")}
    except RegistryError:
        return None
    scorer = CombinedScorer(RewardScorer.from_folder(folders["rm-helpfulness"][0]),
                            RewardScorer.from_folder(folders["rm-safety"][0]), ctx.cfg.reward.safety_threshold)
    scores = scorer.score(dialogues, answers, is_safety)
    out = {k: [float(x) for x in scores[k]] for k in ("helpful", "safety", "combined")}
    out["judges"] = [f"{rm}/{info.version}" for rm, (_, info) in folders.items()]
    return out


def oracle_scores(prompts: list[dict], answers: list[str]) -> list[float]:
    """The scripted annotator's judgement: closeness to the reference; an unsafe answer to a safety prompt scores 0."""
    return [0.0 if p["is_safety"] and is_destructive(a) else closeness(a, p["reference"] or "")
            for p, a in zip(prompts, answers)]


def _history(ctx: RunContext) -> list[dict[str, Any]]:
    versions = ctx.registry.client.search_model_versions(f"name='{POLICY}'")
    reports = [(int(v.version), json.loads(v.tags[REPORT_TAG])) for v in versions if REPORT_TAG in (v.tags or {})]
    return [r for _, r in sorted(reports, key=lambda x: x[0])]


@flow(name="evaluate", log_prints=True)
def evaluate_flow(cfg: RunConfig, policy: str = "candidate", baseline: str | None = None) -> dict[str, Any]:
    logger = get_run_logger()
    ctx = RunContext(cfg)
    info = ctx.registry.get(POLICY, policy)
    base = ctx.registry.get(POLICY, baseline) if baseline else _default_baseline(ctx, info)
    prompts = _prompts(ctx)
    dialogues = [p["messages"] for p in prompts]
    is_safety = [bool(p["is_safety"]) for p in prompts]
    borderline = [[{"role": "user", "content": q}] for q in BORDERLINE_PROMPTS]
    new_answers = answer(ctx, info.version, dialogues + borderline)
    new, new_border = new_answers[:len(dialogues)], new_answers[len(dialogues):]
    old = new if base.version == info.version else answer(ctx, base.version, dialogues)[:len(dialogues)]
    new_rm, old_rm = rm_scores(ctx, dialogues, new, is_safety), rm_scores(ctx, dialogues, old, is_safety)
    new_oracle, old_oracle = oracle_scores(prompts, new), oracle_scores(prompts, old)
    empty = {"helpful": [], "safety": [], "combined": []}
    report = evaluate_against(
        info.ref, base.ref, new_scores=new_rm or empty, base_scores=old_rm or empty,
        new_oracle=new_oracle, base_oracle=old_oracle, new_answers=new,
        adversarial_answers=[a for a, s in zip(new, is_safety) if s], borderline_answers=new_border,
        is_unsafe=is_destructive, tie_margin=cfg.evaluation.tie_margin).to_dict()
    report["oracle_prompts"] = sum(1 for p in prompts if p.get("reference"))  # prompts the oracle can judge
    if new_rm is None:  # before the first reward models, the oracle is the only judge
        report["rm_win"] = {}
        report["judges"] = "oracle"
    else:
        report["judges"] = ",".join(new_rm["judges"])
    champion = champion_report(ctx, POLICY, info.version)
    gates = [g.__dict__ for g in configured_gates(report, champion, cfg.evaluation)]
    result = _log(ctx, info, report, gates, new_rm, is_safety)
    logger.info("evaluation of %s against %s: %s", info.ref, base.ref, json.dumps(report)[:2000])
    return result


def _default_baseline(ctx: RunContext, info):
    """The champion, else the version's parent policy, else itself."""
    try:
        champion = ctx.registry.get(POLICY, CHAMPION)
        if champion.version != info.version:
            return champion
    except RegistryError:
        pass
    for parent in info.tags.get("lineage.parents", "").split(","):
        if parent.startswith(f"{POLICY}/"):
            return ctx.registry.get(POLICY, parent.split("/", 1)[1])
    return info


def _log(ctx: RunContext, info, report: dict, gates: list[dict], rm: dict | None, is_safety: list[bool]) -> dict[str, Any]:
    import mlflow

    folder = ctx.work_dir("evaluation", f"{POLICY}-{info.version}")
    (folder / "report.json").write_text(json.dumps({"report": report, "gates": gates}, indent=2))
    history = [h for h in _history(ctx) if h["policy"] != info.ref] + [report]
    lineage = {k: v for k, v in info.tags.items() if k.startswith("lineage.")}
    scatter = {"helpful": rm["helpful"], "safety": rm["safety"], "is_safety": is_safety} if rm else None
    card = write_model_card(folder / "model_card.html", model=info.ref, lineage=lineage, report=report,
                            history=history, scatter=scatter, rm_accuracy=_rm_accuracy(ctx), gates=gates)
    mlflow.set_tracking_uri(ctx.mlflow_uri)
    mlflow.set_experiment("evaluation")
    with mlflow.start_run(run_name=f"evaluate {info.ref} vs {report['baseline']}") as run:
        mlflow.log_metrics({k: float(v) for k, v in report.items() if isinstance(v, (int, float))})
        for group in ("rm_win", "oracle_win", "false_refusal"):
            mlflow.log_metrics({f"{group}.{k}": float(v) for k, v in report[group].items()})
        mlflow.log_artifacts(str(folder))
        card_uri = f"runs:/{run.info.run_id}/model_card.html"
    client = ctx.registry.client
    client.set_model_version_tag(POLICY, info.version, REPORT_TAG, json.dumps(report)[:4900])
    client.set_model_version_tag(POLICY, info.version, "eval.card", card_uri)
    client.set_model_version_tag(POLICY, info.version, "eval.gates",
                                 ",".join(f"{g['name']}={'pass' if g['passed'] else 'FAIL'}" for g in gates))
    return {"policy": info.ref, "baseline": report["baseline"], "judges": report["judges"],
            "win_rate": report["rm_win"].get("win_rate", report["oracle_win"]["win_rate"]),
            "oracle_win_rate": report["oracle_win"]["win_rate"], "mean_oracle": report["mean_oracle"],
            "safety_violation_rate": report["safety_violation_rate"],
            "false_refusal_rate": report["false_refusal"]["any_refusal"],
            "gates": ", ".join(f"{g['name']}={'pass' if g['passed'] else 'FAIL'}" for g in gates),
            "model_card": str(card), "model_card_mlflow": card_uri}


def _rm_accuracy(ctx: RunContext) -> dict[str, dict[str, float]] | None:
    """Accuracy by rating level of the latest RMs, from the tags their flow recorded (if any)."""
    out = {}
    for rm in ("rm-helpfulness", "rm-safety"):
        try:
            tags = ctx.registry.latest(rm).tags
        except RegistryError:
            continue
        if "eval.accuracy_by_level" in tags:
            out[rm] = json.loads(tags["eval.accuracy_by_level"])
    return out or None


def run_evaluate(cfg: RunConfig, policy: str = "candidate", baseline: str | None = None) -> dict[str, Any]:
    return evaluate_flow(cfg, policy, baseline)
