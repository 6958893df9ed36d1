"""Evaluation flow: one policy version against another (Llama 2 §3.4, §4.4), stored on the version.

Answers both policies on the same evaluation prompts, held out by construction:
`evaluation.eval_dataset` (default: the built-in held-out set), checked against
every dataset in the candidate's lineage first (refused, naming the prompts, on
any overlap). Judges the answers with the latest reward models (model-based
evaluation, §3.4.1) and, where prompts have references, with the oracle the
scripted annotator uses; win rates carry 95% Wilson intervals. Measures safety
violations on adversarial prompts, a toxicity proxy and answer length, and runs
the evaluation suites (`evaluation.suites` plus `--suite KIND=FILE`: TruthfulQA,
XSTest, ToxiGen, application prompts; the built-in borderline suite gives the
false-refusal rate). The report and model card go to an MLflow run (experiment
`evaluation`); the report is the version's evaluation (JSON artifact, digest on
the version's tags), which `promote` reads.

CLI: `alignline evaluate [--policy VERSION] [--baseline VERSION] [--suite KIND=FILE ...]`.
"""
from __future__ import annotations

import json
from typing import Any

from prefect import flow, get_run_logger, task

from alignline.annotation import select_prompts
from alignline.config import RunConfig
from alignline.flows.artifacts import publish_evaluation
from alignline.flows.context import RunContext
from alignline.flows.retries import SERVER_RETRIES
from alignline.flows.promote import champion_report, gate_policy_in_effect
from alignline.services.evaluation.descriptions import version_description
from alignline.services.evaluation.heldout import check_held_out
from alignline.services.evaluation.judges import is_destructive, oracle_score
from alignline.services.evaluation.model_card import read_redteam_report, write_model_card
from alignline.services.evaluation.policy_eval import evaluate_against
from alignline.services.registry import CHAMPION, ModelVersionInfo, Registry, RegistryError
from alignline.services.tracking import log_artifacts, log_metrics, tracked_run
from alignline.storage import Catalog

POLICY = "policy"
REWARD_MODELS = ("rm-helpfulness", "rm-safety")
EVAL_SALT = -1  # select_prompts(iteration=-1): a fixed draw, the same for every version compared


@task
def eval_set(lake: str, eval_dataset: str) -> str:
    """Catalog ref of the evaluation prompts: the configured dataset, else the built-in held-out set (published)."""
    from alignline.services.data import DEFAULT_EVAL_PROMPTS, default_eval_prompts_table

    catalog = Catalog(lake)
    if eval_dataset:
        return catalog.resolve(eval_dataset).ref
    return catalog.publish(DEFAULT_EVAL_PROMPTS, default_eval_prompts_table(),
                           metadata={"maker": "default_eval_prompts_table", "held_out": "built-in split"}).ref


@task(**SERVER_RETRIES)
def held_out_check(lake: str, mlflow_uri: str, version: str, eval_ref: str) -> dict:
    """Refuse (EvalOverlapError, naming the prompts) when an evaluation prompt is in the candidate's lineage."""
    _, datasets = Registry(mlflow_uri).lineage(POLICY, version)
    catalog = Catalog(lake)
    return check_held_out(catalog.read_ref(eval_ref), eval_ref, catalog, datasets).to_dict()


@task
def eval_prompts(lake: str, eval_ref: str, count: int, safety_share: float = 0.25) -> list[dict]:
    return select_prompts(Catalog(lake).read_ref(eval_ref), count, safety_share, EVAL_SALT, 0)


@task
def run_suites(mlflow_uri: str, models_dir: str, version: str, specs: list[str], max_new_tokens: int,
               max_items: int, folder: str) -> dict[str, dict]:
    """Every configured suite on one policy version (model loaded once): metrics, counts, a plot per suite."""
    from alignline.services.evaluation.refusal import classify_refusal
    from alignline.services.evaluation.suites import answer_loglik, plot_suite, run_suite
    from alignline.services.generation import SamplingParams, generate_chat
    from alignline.services.models import load_registered

    model, tokenizer, _ = load_registered(Registry(mlflow_uri), POLICY, version, models_dir)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, top_p=1.0, seed=1234)
    generate = lambda dialogues: list(generate_chat(model, tokenizer, dialogues, params))  # noqa: E731
    out = {}
    for text in specs:
        spec = suite_spec(text)
        result = run_suite(spec, generate=generate, loglik=answer_loglik(model, tokenizer), classify=classify_refusal,
                           limit=max_items or None)
        plot = plot_suite(result, f"{folder}/suite-{result.name}.png")
        out[result.name] = {"kind": result.kind, "file": result.file, "metrics": result.metrics,
                            "counts": result.counts, "plot": plot.name,
                            "quarantined": [q._asdict() for q in result.quarantined[:100]]}
    return out


def suite_spec(text: str):
    """KIND=FILE, with FILE `builtin:NAME` for a suite shipped in the package."""
    from alignline.services.evaluation.suites import SuiteSpec, builtin_suite, parse_suite_spec

    kind, _, path = text.partition("=")
    if path.strip().startswith("builtin:"):
        spec = builtin_suite(path.strip().removeprefix("builtin:"))
        return SuiteSpec(kind.strip().lower() or spec.kind, spec.path, spec.name)
    return parse_suite_spec(text)


@task
def answer(mlflow_uri: str, models_dir: str, version: str, dialogues: list[list[dict]], max_new_tokens: int,
           cache_dir: str | None = None) -> list[str]:
    """Low-temperature answers of one policy version, seeded, so reruns compare like with like. With `cache_dir`,
    answers are kept per (version's run, prompts, sampling): the champion's answers, needed again by every
    evaluation against it, are generated once."""
    from alignline.services.evaluation.answer_cache import AnswerCache
    from alignline.services.generation import SamplingParams, generate_chat
    from alignline.services.models import load_registered

    registry = Registry(mlflow_uri)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.7, top_p=0.9, seed=1234)
    cache = AnswerCache(cache_dir) if cache_dir else None
    key = cache.key(registry.get(POLICY, version), dialogues, params) if cache else ""
    if cache and (cached := cache.get(key, len(dialogues))) is not None:
        return cached
    model, tokenizer, _ = load_registered(registry, POLICY, version, models_dir)
    answers = list(generate_chat(model, tokenizer, dialogues, params))
    if cache:
        cache.put(key, answers)
    return answers


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
def evaluate_flow(cfg: RunConfig, policy: str = "candidate", baseline: str | None = None,
                  suites: list[str] | None = None) -> dict[str, Any]:
    logger = get_run_logger()
    ctx = RunContext(cfg)
    ev = cfg.evaluation
    uri, models, lake, registry = ctx.mlflow_uri, str(ctx.data.models), str(ctx.data.lake), ctx.registry
    info = registry.get(POLICY, policy)
    base = registry.get(POLICY, baseline) if baseline else default_baseline(registry, info)
    eval_ref = eval_set(lake, ev.eval_dataset)
    held_out = held_out_check(lake, uri, info.version, eval_ref)
    if held_out["unverified_datasets"]:
        logger.warning("%s: lineage datasets not in this data dir's catalog, not checked for overlap: %s",
                       info.ref, ", ".join(held_out["unverified_datasets"]))
    prompts = eval_prompts(lake, eval_ref, ev.eval_prompts, ev.eval_safety_share)
    dialogues = [p["messages"] for p in prompts]
    is_safety = [bool(p["is_safety"]) for p in prompts]
    tokens = cfg.rlhf.max_new_tokens
    folder = ctx.data.reports("evaluation") / f"{POLICY}-{info.version}"
    folder.mkdir(parents=True, exist_ok=True)
    cache = str(ctx.data.work("evaluation", "answers"))
    new = answer(uri, models, info.version, dialogues, tokens, cache)
    old = new if base.version == info.version else answer(uri, models, base.version, dialogues, tokens, cache)
    suite_results = run_suites(uri, models, info.version, [*ev.suites, *(suites or [])], tokens, ev.max_suite_items,
                               str(folder))
    threshold = cfg.reward.safety_threshold
    new_rm = rm_scores(uri, models, dialogues, new, is_safety, threshold)
    old_rm = rm_scores(uri, models, dialogues, old, is_safety, threshold)
    new_oracle = [oracle_score(a, p["reference"], p["is_safety"]) for p, a in zip(prompts, new)]
    old_oracle = [oracle_score(a, p["reference"], p["is_safety"]) for p, a in zip(prompts, old)]
    empty = {"helpful": [], "safety": [], "combined": []}
    report = evaluate_against(
        info.ref, base.ref, new_scores=new_rm or empty, base_scores=old_rm or empty,
        new_oracle=new_oracle, base_oracle=old_oracle, new_answers=new,
        adversarial_answers=[a for a, s in zip(new, is_safety) if s], is_unsafe=is_destructive, tie_margin=ev.tie_margin).to_dict()
    report["oracle_prompts"] = sum(1 for p in prompts if p.get("reference"))  # prompts the oracle can judge
    # Per prompt, so versions evaluated on the same draw compare pairwise (the demo's V2 - V0 with an interval).
    report["per_prompt"] = {"prompt_ids": [str(p["prompt_id"]) for p in prompts], "oracle": new_oracle,
                            "is_safety": is_safety, "unsafe": [bool(s and is_destructive(a)) for a, s in zip(new, is_safety)]}
    report["held_out"] = held_out
    if (human := human_eval_from_tags(info.tags, report["baseline"])) is not None:
        report["human_eval"] = human  # a human evaluation of this very pair, kept across re-evaluations
    report["suites"] = suite_results
    report["false_refusal"] = false_refusal_from(suite_results)
    if new_rm is None:  # before the first reward models, the oracle is the only judge
        report["rm_win"] = {}
        report["judges"] = "oracle"
    else:
        report["judges"] = ",".join(new_rm["judges"])
    # The gates `promote` will apply: the model's gate policy from the registry (the config's while none was set).
    policy = gate_policy_in_effect(registry, POLICY, ev)
    gates = [g.__dict__ for g in policy.gates(report, champion_report(registry, POLICY, info.version))]
    report["gate_policy"] = policy.describe()
    report["gates"] = gates
    (folder / "report.json").write_text(json.dumps(report, indent=2))
    scatter = {"helpful": new_rm["helpful"], "safety": new_rm["safety"], "is_safety": is_safety} if new_rm else None
    card = write_model_card(folder / "model_card.html", model=info.ref,
                            lineage={k: v for k, v in info.tags.items() if k.startswith("lineage.")}, report=report,
                            history=report_history(uri, info.ref) + [report], scatter=scatter,
                            rm_accuracy=rm_accuracy(uri), gates=gates,
                            redteam=read_redteam_report(ctx.data.reports("redteam")))
    verdicts = ", ".join(f"{g['name']}={'pass' if g['passed'] else 'FAIL'}" for g in gates)
    with tracked_run(uri, "evaluation", f"evaluate {info.ref} vs {report['baseline']}",
                     {"policy": info.ref, "baseline": report["baseline"], "judges": report["judges"]}) as run_id:
        log_metrics(uri, run_id, {k: v for k, v in report.items() if isinstance(v, (int, float))})
        for group in ("rm_win", "oracle_win", "false_refusal"):
            log_metrics(uri, run_id, {f"{group}.{k}": v for k, v in report[group].items()})
        for name, suite in suite_results.items():
            log_metrics(uri, run_id, {f"suite.{name}.{k}": v for k, v in suite["metrics"].items()})
        log_artifacts(uri, run_id, folder)
        registry.store_report(POLICY, info.version, report, run_id)
        card_uri = f"runs:/{run_id}/model_card.html"
        registry.set_tags(POLICY, info.version, {"eval.card": card_uri, "eval.gates": verdicts})
        registry.describe(POLICY, version_description(info.ref, info.tags, report, card_uri), info.version)
    logger.info("evaluation of %s against %s: %s", info.ref, base.ref, verdicts)
    judged = report["rm_win"] or report["oracle_win"]
    result = {"policy": info.ref, "baseline": report["baseline"], "judges": report["judges"], "eval_set": eval_ref,
              "overlap": held_out["overlap"], "win_rate": judged["win_rate"],
              "win_rate_95ci": [round(judged["win_rate_low"], 3), round(judged["win_rate_high"], 3)], "n": judged["n"],
              "oracle_win_rate": report["oracle_win"]["win_rate"], "mean_oracle": report["mean_oracle"],
              "safety_violation_rate": report["safety_violation_rate"],
              "false_refusal_rate": report["false_refusal"]["any_refusal"], "gates": verdicts,
              "model_card": str(card), "model_card_mlflow": card_uri}
    publish_evaluation(result, uri)
    return result


def human_eval_from_tags(tags: dict[str, str], baseline: str) -> dict[str, Any] | None:
    """The headline numbers `alignline human-eval` left on the version's tags, when they compare the same pair."""
    if tags.get("human_eval.baseline") != baseline:
        return None
    out: dict[str, Any] = {k.removeprefix("human_eval."): v for k, v in tags.items() if k.startswith("human_eval.")}
    for key in ("n", "win", "tie", "loss", "win_rate", "win_rate_low", "win_rate_high", "gwet_ac2",
                "krippendorff_alpha"):
        if key in out:
            out[key] = float(out[key])
    out["simulated"] = out.get("simulated") == "True"
    return out


def false_refusal_from(suites: dict[str, dict]) -> dict[str, float]:
    """The false-refusal shares (Llama 2 §4.2.3) from the borderline suite (safe prompts only)."""
    m = (suites.get("borderline") or {}).get("metrics", {})
    full, partial = m.get("safe.full_refusal_rate", 0.0), m.get("safe.partial_refusal_rate", 0.0)
    return {"full_refusal": full, "partial_refusal": partial, "compliance": 1.0 - full - partial,
            "any_refusal": m.get("false_refusal_rate", full + partial)}


def run_evaluate(cfg: RunConfig, policy: str = "candidate", baseline: str | None = None,
                 suites: list[str] | None = None) -> dict[str, Any]:
    return evaluate_flow(cfg, policy, baseline, suites)


@flow(name="split-eval")
def split_eval_flow(cfg: RunConfig, prompts: str, share: float | None = None) -> dict[str, Any]:
    """A prompt pool -> `prompts-train` and `prompts-eval` (parents: the pool), disjoint by prompt identity."""
    from alignline.services.evaluation.heldout import split_eval

    catalog = RunContext(cfg).catalog
    source = catalog.resolve(prompts)
    train, held = split_eval(catalog.read_ref(source.ref), share or cfg.evaluation.eval_share)
    meta = {"split_of": source.ref, "eval_share": share or cfg.evaluation.eval_share, "by": "prompt_key hash"}
    train_ref = catalog.publish("prompts-train", train, parents=[source.ref], metadata=meta).ref
    eval_ref = catalog.publish("prompts-eval", held, parents=[source.ref], metadata=meta).ref
    return {"train": train_ref, "train_prompts": train.num_rows, "eval": eval_ref, "eval_prompts": held.num_rows,
            "next": f"train with --prompts {train_ref}; evaluate with --set evaluation.eval_dataset={eval_ref}"}


def run_split_eval(cfg: RunConfig, prompts: str, share: float | None = None) -> dict[str, Any]:
    return split_eval_flow(cfg, prompts, share)
