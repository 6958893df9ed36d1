"""Collect flow (Llama 2 §3.2.1): prompts -> two responses each from the latest policy -> Label Studio tasks.

CLI: `alignline collect --iteration N [--batch M] [--prompts DATASET[@VERSION]]` (plus the common options).
Each batch is sampled from the *latest* policy (registry alias champion, else candidate)
at the two configured temperatures, so the reward models stay on-distribution.
Helpfulness prompts go to the helpfulness project, safety prompts to the safety
project. Import is idempotent by content key: a rerun imports nothing new.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Sequence

from prefect import flow, task

from alignline.annotation import (Side, connect, ensure_preference_project, import_tasks, pair_tasks, select_prompts,
                                  task_key, tasks_table)
from alignline.config import RunConfig
from alignline.config.annotation import AnnotationConfig
from alignline.flows.context import RunContext, label_studio_token
from alignline.flows.retries import SERVER_RETRIES
from alignline.services.data import DEFAULT_PROMPTS, default_prompts_table
from alignline.storage import Catalog
from alignline.storage.schemas import KINDS, PROMPT_SCHEMA

REDTEAM_PROMPTS = "prompts-redteam"   # reviewed red-team prompts (flows/redteam.py): part of the safety share

# (dialogues ending with a user turn, temperature, seed) -> (answers, policy ref such as 'policy/3')
Sampler = Callable[[Sequence[list[dict]], float, int], tuple[list[str], str]]


def latest_policy_sampler(mlflow_uri: str, models_dir: str, ac: AnnotationConfig) -> Sampler:
    """Samples from the latest registered policy (champion, else candidate), loaded once."""
    from alignline.services.generation import SamplingParams, generate_chat
    from alignline.services.models import load_registered
    from alignline.services.registry import Registry

    model, tokenizer, info = load_registered(Registry(mlflow_uri), ac.policy_name, "latest", models_dir)

    def sample(dialogues, temperature, seed):
        params = SamplingParams(max_new_tokens=ac.max_new_tokens, temperature=temperature, top_p=ac.top_p, seed=seed)
        return generate_chat(model, tokenizer, dialogues, params), info.ref
    return sample


def _seed(base: int, *parts: int) -> int:
    return int(hashlib.sha256(f"{base}/{'/'.join(map(str, parts))}".encode()).hexdigest()[:8], 16)


@task
def prompt_dataset(lake: str, prompts: str | None, stdlib_prompts: int) -> str:
    catalog = Catalog(lake)
    if prompts is None:
        return catalog.publish(DEFAULT_PROMPTS, default_prompts_table(stdlib_prompts),
                               metadata={"maker": "default_prompts_table"}).ref
    return catalog.resolve(prompts).ref


@task
def redteam_prompts(lake: str) -> str | None:
    """The latest `prompts-redteam` version, when red-teamers have produced one."""
    found = Catalog(lake).find(REDTEAM_PROMPTS)
    return found.ref if found is not None else None


def prompt_pool(catalog: Catalog, prompts_ref: str, safety_refs: Sequence[str]) -> "pa.Table":
    """The prompts, plus the reviewed red-team prompts as safety prompts (their PROMPT_SCHEMA columns; an id seen
    before is kept once)."""
    import pyarrow as pa

    tables = [catalog.read_ref(r).select(PROMPT_SCHEMA.names).cast(PROMPT_SCHEMA) for r in (prompts_ref, *safety_refs)]
    pool = pa.concat_tables(tables)
    ids = pool.column("prompt_id").to_pylist()
    first = sorted({pid: i for i, pid in reversed(list(enumerate(ids)))}.values())
    return pool.take(first)


@task
def sample_pairs(lake: str, prompts_ref: str, iteration: int, batch: int, ac: AnnotationConfig,
                 sampler: Sampler, safety_refs: Sequence[str] = ()) -> tuple[list[dict], int]:
    """Two responses per prompt, one per configured temperature (Llama 2 §3.2.1); identical pairs are dropped.
    `safety_refs` (reviewed red-team prompts) join the safety prompts the batch's safety share is drawn from."""
    pool = prompt_pool(Catalog(lake), prompts_ref, safety_refs)
    chosen = select_prompts(pool, ac.prompts_per_batch, ac.safety_share, iteration, batch)
    dialogues = [p["messages"] for p in chosen]
    sides, answers = [], []
    for i, temperature in enumerate(ac.temperatures):
        seed = _seed(ac.seed, iteration, batch, i)
        texts, policy = sampler(dialogues, temperature, seed)
        answers.append(texts)
        sides.append(Side(policy, {"temperature": temperature, "top_p": ac.top_p,
                                   "max_new_tokens": ac.max_new_tokens, "seed": seed}))
    tasks = pair_tasks(chosen, sides[0], sides[1], answers[0], answers[1], iteration, batch)
    kept = [t for t in tasks if t["response_a"].strip() and t["response_a"] != t["response_b"]]
    return kept, len(tasks) - len(kept)


@task(**SERVER_RETRIES)  # idempotent: import by content key
def publish_and_import(lake: str, ls_url: str, home: str, tasks: list[dict], kind: str, prompts_ref: str,
                       ac: AnnotationConfig, extra_parents: Sequence[str] = ()) -> dict:
    """Publish the batch's tasks (lineage: the prompts), then import them into the kind's project (idempotent)."""
    keyed = [{**t, "task_key": task_key(t)} for t in tasks]
    ref = Catalog(lake).publish(f"preference-tasks-{kind}", tasks_table(keyed),
                                parents=[prompts_ref, *extra_parents]).ref
    client = connect(ls_url, label_studio_token(home))  # read here: a token never travels as a task parameter
    title = ac.helpfulness_project if kind == "helpfulness" else ac.safety_project
    project = ensure_preference_project(client, kind, title, ac.overlap_share)
    new = import_tasks(client, project, [{**t, "tasks_ref": ref} for t in keyed], batch_size=ac.import_batch_size,
                       retries=ac.import_retries, backoff_s=ac.import_backoff_s)
    return {"project": project, "tasks": ref, "imported": new, "url": f"{ls_url}/projects/{project}"}


@flow(name="collect")
def collect_flow(cfg: RunConfig, iteration: int, batch: int, sampler: Sampler | None = None,
                 prompts: str | None = None) -> dict:
    ctx = RunContext(cfg)
    lake, ac = str(ctx.data.lake), cfg.annotation
    prompts_ref = prompt_dataset(lake, prompts, ac.stdlib_prompts)
    sampler = sampler or latest_policy_sampler(ctx.mlflow_uri, str(ctx.data.models), ac)
    redteam = redteam_prompts(lake)
    safety_refs = [redteam] if redteam else []
    tasks, identical = sample_pairs(lake, prompts_ref, iteration, batch, ac, sampler, safety_refs)
    out = {"prompts": prompts_ref, "redteam_prompts": redteam, "identical_pairs_dropped": identical}
    for kind in KINDS:
        of_kind = [t for t in tasks if t["kind"] == kind]
        if of_kind:
            out[kind] = publish_and_import(lake, ctx.label_studio_url, str(cfg.home), of_kind, kind,
                                           prompts_ref, ac, safety_refs if kind == "safety" else [])
    return out


def run_collect(cfg: RunConfig, iteration: int, batch: int, sampler: Sampler | None = None,
                prompts: str | None = None) -> dict:
    """What `alignline collect` calls. `sampler` defaults to the latest registered policy."""
    return collect_flow(cfg, iteration=iteration, batch=batch, sampler=sampler, prompts=prompts)
