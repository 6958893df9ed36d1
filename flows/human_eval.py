"""Human evaluation flow (Llama 2 §3.4.2): candidate vs baseline on held-out prompts, rated by people on 7 points.

CLI: `alignline human-eval --policy V --baseline champion|V [--prompts DATASET@V] [--raters 3] [--bot] [--harvest]`.

collect -> [scripted raters] -> harvest -> results. Both versions answer the evaluation prompts `evaluate` uses
(`--prompts`, else `evaluation.eval_dataset`, else the built-in held-out set; the same draw of
`evaluation.eval_prompts`), checked against both versions' lineage first. Tasks go to the Label Studio project
`<annotation.human_eval_project> <policy> vs <baseline>`, each to `--raters` raters. `--bot` has the scripted
annotator accounts rate (SIMULATED: oracle judges plus seeded per-rater noise, flagged in every result);
`--harvest` skips collecting and only harvests and reports (run it once people have rated). Results go to an MLflow
run (experiment `human-evaluation`, `human_eval.json`), to `human_eval.*` tags on the candidate version (artifact URI
and SHA-256, headline numbers) and, when the version's stored evaluation report compares the same pair, into that
report as `human_eval`, where the `evaluation.min_human_win_rate` promotion gate reads it.
The model card does not show it yet (it is owned elsewhere).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run

from alignline.annotation import (ScriptedRater, connect, ensure_human_eval_project, find_project, harvest_human_eval,
                                  human_eval_tasks, import_tasks, rate_project, task_key)
from alignline.config import RunConfig
from alignline.config.annotation import AnnotationConfig
from alignline.flows.annotate import bot_token
from alignline.flows.context import RunContext, label_studio_token
from alignline.flows.evaluate import eval_prompts, eval_set
from alignline.infra import paths
from alignline.services.evaluation.heldout import check_held_out
from alignline.services.evaluation.human_eval import human_eval_results, summary_lines
from alignline.services.evaluation.judges import closeness, is_destructive
from alignline.services.registry import CHAMPION, Registry, RegistryError
from alignline.services.tracking import log_artifacts, log_metrics, tracked_run
from alignline.storage import Catalog, DataDir
from alignline.flows.harvest import page_progress
from alignline.services.progress import Progress
from alignline.storage.schemas import human_eval_dataset

EXPERIMENT = "human-evaluation"


@task
def prompt_set(lake: str, prompts: str | None, eval_dataset: str) -> str:
    """`--prompts`, else the evaluation set `evaluate` uses."""
    return Catalog(lake).resolve(prompts).ref if prompts else eval_set.fn(lake, eval_dataset)


@task(retries=2, retry_delay_seconds=[2, 10])
def held_out(lake: str, mlflow_uri: str, name: str, versions: list[str], prompts_ref: str) -> dict[str, Any]:
    """Refuse (EvalOverlapError naming the prompts) when a prompt is in either version's lineage."""
    catalog, registry = Catalog(lake), Registry(mlflow_uri)
    return {v: check_held_out(catalog.read_ref(prompts_ref), prompts_ref, catalog,
                              registry.lineage(name, v)[1]).to_dict()["overlap"] for v in versions}


@task
def answer(mlflow_uri: str, models_dir: str, name: str, version: str, dialogues: list[list[dict]],
           max_new_tokens: int) -> list[str]:
    """The same seeded, low-temperature sampling `evaluate` uses."""
    from alignline.services.generation import SamplingParams, generate_chat
    from alignline.services.models import load_registered

    model, tokenizer, _ = load_registered(Registry(mlflow_uri), name, version, models_dir)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.7, top_p=0.9, seed=1234)
    return list(generate_chat(model, tokenizer, dialogues, params))


@task(retries=2, retry_delay_seconds=[2, 10])
def import_pairs(lake: str, ls_url: str, home: str, title: str, raters: int, tasks: list[dict], dataset: str,
                 prompts_ref: str, ac: AnnotationConfig) -> dict[str, Any]:
    """Publish the tasks (lineage: the prompts), then import them into the project (idempotent by content key)."""
    keyed = [{**t, "task_key": task_key(t)} for t in tasks]
    ref = Catalog(lake).publish(f"{dataset}-tasks", pa.Table.from_pylist(keyed), parents=[prompts_ref]).ref
    client = connect(ls_url, label_studio_token(home))
    project = ensure_human_eval_project(client, title, raters)
    new = import_tasks(client, project, [{**t, "tasks_ref": ref} for t in keyed], batch_size=ac.import_batch_size,
                       retries=ac.import_retries, backoff_s=ac.import_backoff_s)
    return {"project": project, "tasks": ref, "imported": new, "url": f"{ls_url}/projects/{project}"}


@task
def rate_as_bot(home: str, ls_url: str, n: int, project_id: int, ac: AnnotationConfig) -> dict[str, int]:
    client = connect(ls_url, bot_token(Path(home), ls_url, n))
    rater = ScriptedRater(closeness, is_destructive, rater=n, noise=ac.human_eval_rater_noise, seed=ac.human_eval_seed,
                          thresholds=ac.bot_margin_thresholds)
    return rate_project(client, project_id, rater)


def bot_emails(home: Path, count: int) -> set[str]:
    """E-mails of the scripted annotator accounts: their ratings are flagged simulated."""
    out = set()
    for n in range(1, count + 1):
        try:
            out.add(paths.read_secret(home, f"label-studio-bot-{n}")["email"])
        except FileNotFoundError:
            continue
    return out


@task
def harvest_ratings(home: str, ls_url: str, title: str, dataset: str, ac: AnnotationConfig,
                    simulated: set[str]) -> dict[str, Any]:
    client = connect(ls_url, label_studio_token(home))
    project = find_project(client, title)
    if project is None:
        return {"dataset": None, "note": f"no project {title!r} yet: run `alignline human-eval` without --harvest"}
    data = DataDir(Path(home))
    with Progress("harvest human-eval ratings", unit="task") as bar:
        result = harvest_human_eval(client, project, Catalog(data.lake), dataset, data.harvest_ledger(dataset, project),
                                    simulated=simulated, slack_s=ac.harvest_slack_s, flow_run=str(flow_run.get_id()),
                                    page_size=ac.harvest_page_size, on_page=page_progress(bar))
    return result.__dict__


@task
def results(lake: str, dataset_ref: str, policy: str, baseline: str) -> dict[str, Any]:
    return human_eval_results(Catalog(lake).read_ref(dataset_ref).to_pylist(), policy, baseline)


@task(retries=2, retry_delay_seconds=[2, 10])
def store_on_version(mlflow_uri: str, name: str, version: str, result: dict[str, Any], dataset_ref: str,
                     folder: str) -> dict[str, Any]:
    """The full result as an artifact of a tracked run; headline numbers and its digest as `human_eval.*` tags;
    `human_eval` in the version's evaluation report when that report compares the same pair (the promotion gate)."""
    registry = Registry(mlflow_uri)
    blob = json.dumps({**result, "dataset": dataset_ref}, indent=2, sort_keys=True).encode()
    (Path(folder) / "human_eval.json").write_bytes(blob)
    summary = {k: result[k] for k in ("baseline", "n", "win", "tie", "loss", "win_rate", "win_rate_low",
                                      "win_rate_high", "gwet_ac2", "krippendorff_alpha", "simulated")}
    with tracked_run(mlflow_uri, EXPERIMENT, f"human-eval {result['policy']} vs {result['baseline']}",
                     {"policy": result["policy"], "baseline": result["baseline"], "dataset": dataset_ref,
                      "simulated": result["simulated"]}) as run_id:
        log_metrics(mlflow_uri, run_id, {k: v for k, v in summary.items() if isinstance(v, float)})
        log_artifacts(mlflow_uri, run_id, Path(folder))
        uri = f"runs:/{run_id}/human_eval.json"
        registry.set_tags(name, version, {"human_eval.uri": uri, "human_eval.sha256": hashlib.sha256(blob).hexdigest(),
                                          "human_eval.dataset": dataset_ref,
                                          **{f"human_eval.{k}": v for k, v in summary.items()}})
        try:
            report = registry.load_report(name, version)
        except RegistryError:
            report = None
        in_report = bool(report) and report.get("baseline") == result["baseline"]
        if in_report:
            registry.store_report(name, version, {**report, "human_eval": {**summary, "dataset": dataset_ref,
                                                                            "uri": uri}}, run_id)
    return {"uri": uri, "in_evaluation_report": in_report}


@flow(name="human-eval", log_prints=True)
def human_eval_flow(cfg: RunConfig, policy: str, baseline: str = CHAMPION, prompts: str | None = None,
                    raters: int | None = None, bot: bool = False, harvest_only: bool = False) -> dict[str, Any]:
    ctx, ac = RunContext(cfg), cfg.annotation
    uri, lake, home, url, name = ctx.mlflow_uri, str(ctx.data.lake), str(cfg.home), ctx.label_studio_url, ac.policy_name
    info, base = ctx.registry.get(name, policy), ctx.registry.get(name, baseline)
    if info.version == base.version:
        raise ValueError(f"{info.ref} cannot be human-evaluated against itself (--baseline {baseline})")
    raters = raters or ac.human_eval_raters
    dataset, title = human_eval_dataset(info.version, base.version), f"{ac.human_eval_project} {info.ref} vs {base.ref}"
    out: dict[str, Any] = {"policy": info.ref, "baseline": base.ref, "project": title}
    if not harvest_only:
        prompts_ref = prompt_set(lake, prompts, cfg.evaluation.eval_dataset)
        out["overlap"] = held_out(lake, uri, name, [info.version, base.version], prompts_ref)
        chosen = eval_prompts(lake, prompts_ref, cfg.evaluation.eval_prompts, cfg.evaluation.eval_safety_share)
        dialogues, models = [p["messages"] for p in chosen], str(ctx.data.models)
        mine = answer(uri, models, name, info.version, dialogues, cfg.rlhf.max_new_tokens)
        theirs = answer(uri, models, name, base.version, dialogues, cfg.rlhf.max_new_tokens)
        tasks = human_eval_tasks(chosen, mine, theirs, info.ref, base.ref, ac.human_eval_seed)
        out["collect"] = import_pairs(lake, url, home, title, raters, tasks, dataset, prompts_ref, ac)
    if bot:
        project = out["collect"]["project"] if "collect" in out else find_project(connect(url, ctx.label_studio_token()), title)
        out["bots"] = {f"bot-{n}": rate_as_bot(home, url, n, project, ac) for n in range(1, raters + 1)}
    simulated = bot_emails(cfg.home, max(raters, ac.bot_annotators, ac.human_eval_raters))
    out["harvest"] = harvest_ratings(home, url, title, dataset, ac, simulated)
    if not out["harvest"].get("total_ratings"):
        out["results"] = f"no ratings yet: raters work at {out.get('collect', {}).get('url', url + '/projects')}"
        return out
    result = results(lake, out["harvest"]["dataset"], info.ref, base.ref)
    folder = ctx.data.reports("human-eval") / dataset
    folder.mkdir(parents=True, exist_ok=True)
    out["stored"] = store_on_version(uri, name, info.version, result, out["harvest"]["dataset"], str(folder))
    out["results"] = result
    for line in summary_lines(result):
        get_run_logger().info(line)
    return out


def run_human_eval(cfg: RunConfig, policy: str, baseline: str = CHAMPION, prompts: str | None = None,
                   raters: int | None = None, bot: bool = False, harvest_only: bool = False) -> dict[str, Any]:
    """What `alignline human-eval` calls. One at a time per data dir (a second waits, then harvests nothing new)."""
    with RunContext(cfg).data.lock("human-eval", wait_s=600):
        return human_eval_flow(cfg, policy, baseline, prompts, raters, bot, harvest_only)
