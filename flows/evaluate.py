"""Evaluation flow: one policy version against another (Llama 2 §3.4, §4.4), stored on the version.

Answers both policies on the same prompts, judges them with the latest reward
models (model-based evaluation, §3.4.1) and, on built-in data, with the oracle
the scripted annotator uses; measures safety violations on adversarial
prompts, false refusals on benign-but-risky prompts, a toxicity proxy and
answer length. The report and model card go to an MLflow run (experiment
`evaluation`); the report is the version's evaluation (JSON artifact, digest on
the version's tags), which `promote` reads.

CLI: `alignline evaluate [--policy VERSION] [--baseline VERSION]`.
"""
from __future__ import annotations

import json
from typing import Any

from prefect import flow, get_run_logger, task

from alignline.annotation import select_prompts
from alignline.config import RunConfig
from alignline.flows.context import RunContext
from alignline.flows.promote import champion_report
from alignline.services.evaluation.borderline import BORDERLINE_PROMPTS
from alignline.services.evaluation.judges import is_destructive, oracle_score
from alignline.services.evaluation.model_card import write_model_card
from alignline.services.evaluation.policy_eval import configured_gates, evaluate_against
from alignline.services.registry import CHAMPION, ModelVersionInfo, Registry, RegistryError
from alignline.services.tracking import log_artifacts, log_metrics, tracked_run
from alignline.storage import Catalog

POLICY = "policy"
REWARD_MODELS = ("rm-helpfulness", "rm-safety")
EVAL_SALT = -1  # select_prompts(iteration=-1): a fixed draw, the same for every version compared
SERVER_RETRIES = {"retries": 2, "retry_delay_seconds": [2, 10]}


@task
def eval_prompts(lake: str, count: int, stdlib_prompts: int) -> list[dict]:
    from alignline.services.data import DEFAULT_PROMPTS, default_prompts_table

    found = Catalog(lake).find(DEFAULT_PROMPTS)
    table = Catalog(lake).read_ref(found.ref) if found else default_prompts_table(stdlib_prompts)
    return select_prompts(table, count, 0.25, EVAL_SALT, 0)


@task
def answer(mlflow_uri: str, models_dir: str, version: str, dialogues: list[list[dict]], max_new_tokens: int) -> list[str]:
    """Low-temperature answers of one policy version, seeded, so reruns compare like with like."""
    from alignline.services.generation import SamplingParams, generate_chat
    from alignline.services.models import load_registered

    model, tokenizer, _ = load_registered(Registry(mlflow_uri), POLICY, version, models_dir)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.7, top_p=0.9, seed=1234)
    return list(generate_chat(model, tokenizer, dialogues, params))


@task
def rm_scores(mlflow_uri: str, models_dir: str, dialogues: list[list[dict]], answers: list[str], is_safety: list[bool],
              safety_threshold: float) -> dict[str, list] | None:
    """Scores of the latest reward models (champion, else candidate); None before any RM exists."""
    from alignline.services.models import registered_folder
    from alignline.services.rewards.scorer import CombinedScorer, RewardScorer

    try:
        folders = {rm: registered_folder(Registry(mlflow_uri), rm, "latest", models_dir) for rm in REWARD_MODELS}
    except RegistryError:
        return None
    scorer = CombinedScorer(RewardScorer.from_folder(folders["rm-helpfulness"][0]),
                            RewardScorer.from_folder(folders["rm-safety"][0]), safety_threshold)
    scores = scorer.score(dialogues, answers, is_safety)
    out: dict[str, list] = {k: [float(x) for x in scores[k]] for k in ("helpful", "safety", "combined")}
    out["judges"] = [info.ref for _, info in folders.values()]
    return out


@task(**SERVER_RETRIES)
def report_history(mlflow_uri: str, exclude: str) -> list[dict[str, Any]]:
    """Every other evaluated policy version's report, oldest first (the model card's trend)."""
    registry = Registry(mlflow_uri)
    reports = [registry.load_report(POLICY, v.version) for v in registry.versions(POLICY) if v.ref != exclude]
    return [r for r in reports if r is not None]


@task(**SERVER_RETRIES)
def rm_accuracy(mlflow_uri: str) -> dict[str, dict[str, float]] | None:
    """Accuracy by rating level of the latest RMs, from the tags their flow recorded (if any)."""
    registry, out = Registry(mlflow_uri), {}
    for rm in REWARD_MODELS:
        try:
            tags = registry.latest(rm).tags
        except RegistryError:
            continue
        if "eval.accuracy_by_level" in tags:
            out[rm] = json.loads(tags["eval.accuracy_by_level"])
    return out or None


def default_baseline(registry: Registry, info: ModelVersionInfo) -> ModelVersionInfo:
    """The champion, else the version's parent policy, else itself."""
    try:
        champion = registry.get(POLICY, CHAMPION)
        if champion.version != info.version:
            return champion
    except RegistryError:
        pass
    parent = next((p for p in info.parents if p.name == POLICY), None)
    return registry.get(POLICY, parent.version) if parent else info


@flow(name="evaluate", log_prints=True)
def evaluate_flow(cfg: RunConfig, policy: str = "candidate", baseline: str | None = None) -> dict[str, Any]:
    logger = get_run_logger()
    ctx = RunContext(cfg)
    uri, models, registry = ctx.mlflow_uri, str(ctx.data.models), ctx.registry
    info = registry.get(POLICY, policy)
    base = registry.get(POLICY, baseline) if baseline else default_baseline(registry, info)
    prompts = eval_prompts(str(ctx.data.lake), cfg.evaluation.eval_prompts, cfg.annotation.stdlib_prompts)
    dialogues = [p["messages"] for p in prompts]
    is_safety = [bool(p["is_safety"]) for p in prompts]
    borderline = [[{"role": "user", "content": q}] for q in BORDERLINE_PROMPTS]
    tokens = cfg.rlhf.max_new_tokens
    new_answers = answer(uri, models, info.version, dialogues + borderline, tokens)
    new, new_border = new_answers[:len(dialogues)], new_answers[len(dialogues):]
    old = new if base.version == info.version else answer(uri, models, base.version, dialogues, tokens)
    threshold = cfg.reward.safety_threshold
    new_rm = rm_scores(uri, models, dialogues, new, is_safety, threshold)
    old_rm = rm_scores(uri, models, dialogues, old, is_safety, threshold)
    new_oracle = [oracle_score(a, p["reference"], p["is_safety"]) for p, a in zip(prompts, new)]
    old_oracle = [oracle_score(a, p["reference"], p["is_safety"]) for p, a in zip(prompts, old)]
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
    gates = [g.__dict__ for g in configured_gates(report, champion_report(registry, POLICY, info.version), cfg.evaluation)]
    report["gates"] = gates
    folder = ctx.data.reports("evaluation") / f"{POLICY}-{info.version}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report, indent=2))
    scatter = {"helpful": new_rm["helpful"], "safety": new_rm["safety"], "is_safety": is_safety} if new_rm else None
    card = write_model_card(folder / "model_card.html", model=info.ref,
                            lineage={k: v for k, v in info.tags.items() if k.startswith("lineage.")}, report=report,
                            history=report_history(uri, info.ref) + [report], scatter=scatter,
                            rm_accuracy=rm_accuracy(uri), gates=gates)
    verdicts = ", ".join(f"{g['name']}={'pass' if g['passed'] else 'FAIL'}" for g in gates)
    with tracked_run(uri, "evaluation", f"evaluate {info.ref} vs {report['baseline']}",
                     {"policy": info.ref, "baseline": report["baseline"], "judges": report["judges"]}) as run_id:
        log_metrics(uri, run_id, {k: v for k, v in report.items() if isinstance(v, (int, float))})
        for group in ("rm_win", "oracle_win", "false_refusal"):
            log_metrics(uri, run_id, {f"{group}.{k}": v for k, v in report[group].items()})
        log_artifacts(uri, run_id, folder)
        registry.store_report(POLICY, info.version, report, run_id)
        card_uri = f"runs:/{run_id}/model_card.html"
        registry.set_tags(POLICY, info.version, {"eval.card": card_uri, "eval.gates": verdicts})
    logger.info("evaluation of %s against %s: %s", info.ref, base.ref, verdicts)
    return {"policy": info.ref, "baseline": report["baseline"], "judges": report["judges"],
            "win_rate": report["rm_win"].get("win_rate", report["oracle_win"]["win_rate"]),
            "oracle_win_rate": report["oracle_win"]["win_rate"], "mean_oracle": report["mean_oracle"],
            "safety_violation_rate": report["safety_violation_rate"],
            "false_refusal_rate": report["false_refusal"]["any_refusal"], "gates": verdicts,
            "model_card": str(card), "model_card_mlflow": card_uri}


def run_evaluate(cfg: RunConfig, policy: str = "candidate", baseline: str | None = None) -> dict[str, Any]:
    return evaluate_flow(cfg, policy, baseline)
