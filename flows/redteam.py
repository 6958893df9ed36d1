"""Red-team flow (Llama 2 §4.3): people write adversarial prompts, the champion answers, raters judge the answers.

CLI: `alignline redteam create|answer|harvest|report|round [--round N] [--slots N] [--model champion|V] [--bot]`.

create  -> the writing and review projects (idempotent) and `--slots` writing tasks for round N
           (`--bot`: the scripted red-teamer writes them)
answer  -> harvest new prompts (`redteam-attacks`, bad ones to `redteam-attacks-quarantine` with the reason), the
           model (`--model`, default the champion) answers each new one turn by turn, review tasks imported
           (`--bot`: a scripted reviewer judges them with `services.evaluation.redteam.judge_violation`)
harvest -> both harvests; reviewed prompts to a new `prompts-redteam` version (lineage: attacks and reviews), which
           collect's safety share, the `redteam` evaluation suite and context distillation (by `risk_category`) read
report  -> violation rate by risk category x attack vector and violating prompts per person-hour, to an MLflow run
           (experiment `red-team`, `redteam_report.json`) and the terminal
round   -> all four in order: one round (the demo's, with `--bot`)
Scripted work is SIMULATED (bot accounts, flagged in every row and in the report).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run

from alignline.annotation import connect, import_tasks, task_key
from alignline.annotation.redteam import (ATTACKS, PROMPTS, REVIEWS, ScriptedRedTeamer, answered_attacks,
                                          ensure_redteam_projects, harvest_attacks, harvest_reviews, review_project,
                                          review_tasks, reviewed_prompts, write_project, writing_slots)
from alignline.annotation.projects import iter_tasks
from alignline.config import RunConfig
from alignline.config.annotation import AnnotationConfig
from alignline.flows.annotate import bot_token
from alignline.flows.context import RunContext, label_studio_token
from alignline.flows.human_eval import bot_emails
from alignline.services.evaluation.redteam import answer_attacks, judge_violation, redteam_results, summary_lines
from alignline.services.tracking import log_artifacts, log_metrics, tracked_run
from alignline.storage import Catalog, DataDir
from alignline.flows.harvest import page_progress
from alignline.services.progress import Progress

EXPERIMENT = "red-team"
ACTIONS = ("create", "answer", "harvest", "report", "round")
WRITER_BOT = 1   # the scripted red-teamer's account; reviewers are the next ones (a person never reviews their own)


def _projects(ls_url: str, home: str, ac: AnnotationConfig) -> tuple[int, int]:
    client = connect(ls_url, label_studio_token(home))
    return ensure_redteam_projects(client, ac.redteam_project, ac.redteam_review_project, ac.redteam_risk_categories,
                                   ac.redteam_max_turns, ac.redteam_reviewers)


@task(retries=2, retry_delay_seconds=[2, 10])
def create_round(lake: str, ls_url: str, home: str, round_: int, slots: int, ac: AnnotationConfig) -> dict[str, Any]:
    """The two projects, and this round's writing slots (published for lineage, imported idempotently)."""
    write, review = _projects(ls_url, home, ac)
    keyed = [{**t, "task_key": task_key(t)} for t in writing_slots(round_, slots, ac.redteam_risk_categories)]
    ref = Catalog(lake).publish("redteam-slots", pa.Table.from_pylist(keyed)).ref
    new = import_tasks(connect(ls_url, label_studio_token(home)), write, [{**t, "tasks_ref": ref} for t in keyed],
                       batch_size=ac.import_batch_size, retries=ac.import_retries, backoff_s=ac.import_backoff_s)
    return {"write_project": write, "review_project": review, "slots": ref, "imported": new,
            "url": f"{ls_url}/projects/{write}"}


@task
def write_as_bot(home: str, ls_url: str, project: int, ac: AnnotationConfig) -> dict[str, int]:
    client = connect(ls_url, bot_token(Path(home), ls_url, WRITER_BOT))
    bot = ScriptedRedTeamer(ac.redteam_risk_categories, ac.redteam_bot_seconds_per_prompt, ac.redteam_seed)
    return write_project(client, project, bot)


@task
def review_as_bot(home: str, ls_url: str, project: int, n: int) -> dict[str, int]:
    return review_project(connect(ls_url, bot_token(Path(home), ls_url, WRITER_BOT + n)), project, judge_violation)


def _simulated(home: str, ac: AnnotationConfig) -> set[str]:
    """The scripted accounts' e-mails, read when harvesting (a bot that signed up during this run counts)."""
    return bot_emails(Path(home), max(WRITER_BOT + ac.redteam_reviewers, ac.bot_annotators, ac.human_eval_raters))


@task
def harvest_written(home: str, ls_url: str, ac: AnnotationConfig) -> dict[str, Any]:
    write, _ = _projects(ls_url, home, ac)
    simulated = _simulated(home, ac)
    data = DataDir(Path(home))
    with Progress("harvest red-team prompts", unit="task") as bar:
        out = harvest_attacks(connect(ls_url, label_studio_token(home)), write, Catalog(data.lake),
                              data.harvest_ledger(ATTACKS, write), ac.redteam_risk_categories, ac.redteam_max_turns,
                              simulated, slack_s=ac.harvest_slack_s, flow_run=str(flow_run.get_id()),
                              page_size=ac.harvest_page_size, on_page=page_progress(bar))
    return out.__dict__


@task
def harvest_judged(home: str, ls_url: str, ac: AnnotationConfig) -> dict[str, Any]:
    """Reviews harvested; then `prompts-redteam` rebuilt from every attack and review so far (a new version only
    when it changed: versions are content-addressed)."""
    _, review = _projects(ls_url, home, ac)
    simulated = _simulated(home, ac)
    data = DataDir(Path(home))
    catalog = Catalog(data.lake)
    with Progress("harvest red-team reviews", unit="task") as bar:
        out = harvest_reviews(connect(ls_url, label_studio_token(home)), review, catalog,
                              data.harvest_ledger(REVIEWS, review), simulated, slack_s=ac.harvest_slack_s,
                              flow_run=str(flow_run.get_id()), page_size=ac.harvest_page_size,
                              on_page=page_progress(bar)).__dict__
    attacks, reviews = catalog.find(ATTACKS), catalog.find(REVIEWS)
    if attacks is None or reviews is None:
        return {**out, "prompts": None}
    table = reviewed_prompts(catalog.read_ref(attacks.ref).to_pylist(), catalog.read_ref(reviews.ref).to_pylist(),
                             ac.redteam_risk_categories)
    prompts = catalog.publish(PROMPTS, table, parents=[attacks.ref, reviews.ref], flow_run=str(flow_run.get_id()),
                              metadata={"maker": "annotation.redteam.reviewed_prompts"})
    return {**out, "prompts": prompts.ref, "reviewed_prompts": table.num_rows}


@task
def answer_new(lake: str, mlflow_uri: str, models_dir: str, ls_url: str, home: str, model: str,
               max_new_tokens: int, ac: AnnotationConfig) -> dict[str, Any]:
    """The model answers every harvested attack it has not answered yet (turn by turn); one review task each."""
    from alignline.services.generation import SamplingParams, generate_chat
    from alignline.services.models import load_registered
    from alignline.services.registry import Registry

    catalog = Catalog(lake)
    attacks = catalog.find(ATTACKS)
    _, review = _projects(ls_url, home, ac)
    client = connect(ls_url, label_studio_token(home))
    done = answered_attacks(iter_tasks(client, review), model)
    todo = [a for a in (catalog.read_ref(attacks.ref).to_pylist() if attacks else []) if a["attack_id"] not in done]
    if not todo:
        return {"answered": 0, "imported": 0, "review_project": review}
    name, version = model.split("/")
    policy, tokenizer, _ = load_registered(Registry(mlflow_uri), name, version, models_dir)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.7, top_p=0.9, seed=ac.redteam_seed)
    contexts, answers = answer_attacks(lambda ds: generate_chat(policy, tokenizer, ds, params),
                                       [a["user_turns"] for a in todo])
    tasks = review_tasks([{**a, "attacks_ref": attacks.ref} for a in todo], contexts, answers, model)
    keyed = [{**t, "task_key": task_key(t)} for t in tasks]
    ref = catalog.publish("redteam-review-tasks", pa.Table.from_pylist(keyed), parents=[attacks.ref]).ref
    new = import_tasks(client, review, [{**t, "tasks_ref": ref} for t in keyed], batch_size=ac.import_batch_size,
                       retries=ac.import_retries, backoff_s=ac.import_backoff_s)
    return {"answered": len(todo), "imported": new, "tasks": ref, "review_project": review,
            "url": f"{ls_url}/projects/{review}"}


@task
def report(lake: str, mlflow_uri: str, folder: str, model: str | None, ac: AnnotationConfig) -> dict[str, Any]:
    """The matrix and robustness over `prompts-redteam` (of `model`), with every quarantine reason counted; stored as
    an MLflow run (metrics and `redteam_report.json`)."""
    catalog = Catalog(lake)
    prompts = catalog.find(PROMPTS)
    if prompts is None:
        return {"prompts": 0, "note": "no reviewed red-team prompts yet: `alignline redteam answer`, then reviews"}
    quarantined: dict[str, int] = {}
    for name in (ATTACKS, REVIEWS):
        q = catalog.find(f"{name}-quarantine")
        for row in catalog.read_ref(q.ref).to_pylist() if q else []:
            key = f"{name.removeprefix('redteam-')}: {row['reason']}"
            quarantined[key] = quarantined.get(key, 0) + 1
    rows = catalog.read_ref(prompts.ref).to_pylist()
    result = {**redteam_results(rows, quarantined, ac.redteam_risk_categories, model), "dataset": prompts.ref,
              "suite": f"redteam={prompts.path}"}   # `alignline evaluate --suite ...` re-runs these on any version
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / "redteam_report.json").write_text(json.dumps(result, indent=2, sort_keys=True, default=str))
    with tracked_run(mlflow_uri, EXPERIMENT, f"red team vs {result['model']}",
                     {"dataset": prompts.ref, "model": result["model"], "simulated": result["simulated"]}) as run_id:
        log_metrics(mlflow_uri, run_id, {k: float(result[k]) for k in ("overall_rate", "overall_n", "person_hours",
                                                                        "violations_per_person_hour")
                                         if result[k] == result[k]})   # NaN (no person time) is left out
        log_artifacts(mlflow_uri, run_id, Path(folder))
    return {**result, "mlflow_run": run_id}


@flow(name="redteam", log_prints=True)
def redteam_flow(cfg: RunConfig, action: str, round_: int = 1, slots: int | None = None, model: str | None = None,
                 bot: bool = False) -> dict[str, Any]:
    if action not in ACTIONS:
        raise ValueError(f"redteam action {action!r}; allowed: {', '.join(ACTIONS)}")
    ctx, ac = RunContext(cfg), cfg.annotation
    lake, home, url, uri = str(ctx.data.lake), str(cfg.home), ctx.label_studio_url, ctx.mlflow_uri
    # The model that answers (default: the champion); `report` covers every model unless one is named.
    answers = action in ("answer", "round") or model is not None
    ref = ctx.registry.get(ac.policy_name, model or "champion").ref if answers and action != "create" else None
    out: dict[str, Any] = {"action": action}
    if action in ("create", "round"):
        out["create"] = create_round(lake, url, home, round_, slots or ac.redteam_slots, ac)
        if bot:
            out["written"] = write_as_bot(home, url, out["create"]["write_project"], ac)
    if action in ("answer", "round"):
        out["attacks"] = harvest_written(home, url, ac)
        out["answer"] = answer_new(lake, uri, str(ctx.data.models), url, home, ref, cfg.rlhf.max_new_tokens, ac)
        if bot:
            out["reviewed"] = {f"bot-{WRITER_BOT + n}": review_as_bot(home, url, out["answer"]["review_project"], n)
                               for n in range(1, ac.redteam_reviewers + 1)}
    if action in ("harvest", "round"):
        if "attacks" not in out:
            out["attacks"] = harvest_written(home, url, ac)
        out["reviews"] = harvest_judged(home, url, ac)
    if action in ("report", "round"):
        out["report"] = report(lake, uri, str(ctx.data.reports("redteam")), ref, ac)
        if out["report"].get("prompts"):
            for line in summary_lines(out["report"]):
                get_run_logger().info(line)
    return out


def run_redteam(cfg: RunConfig, action: str, round_: int = 1, slots: int | None = None, model: str | None = None,
                bot: bool = False) -> dict[str, Any]:
    """What `alignline redteam` calls. One at a time per data dir (a second waits, then finds nothing new)."""
    with RunContext(cfg).data.lock("redteam", wait_s=600):
        return redteam_flow(cfg, action, round_, slots, model, bot)
