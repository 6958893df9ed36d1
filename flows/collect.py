"""Collect flow (Llama 2 §3.2.1): prompts -> two responses each from the latest policy -> Label Studio tasks.

CLI the lead wires in flows/cli.py:
    alignline collect --iteration N --batch M [--prompts DATASET[@VERSION]] [--preset ...] [--set annotation.x=...]
    -> run_collect(cfg, iteration=N, batch=M, prompts=...)
Each batch is sampled from the *latest* policy (registry alias champion, else candidate)
at the two configured temperatures, so the reward models stay on-distribution.
Helpfulness prompts go to the helpfulness project, safety prompts to the safety
project. Import is idempotent by content key: a rerun imports nothing new.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Sequence

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from alignline.annotation import (KINDS, Side, connect, ensure_preference_project, import_tasks, pair_tasks,
                                  prompt_table, select_prompts, task_key, tasks_table)
from alignline.config import RunConfig
from alignline.flows.context import RunContext

DEFAULT_PROMPTS = "prompts-default"
# (dialogues ending with a user turn, temperature, seed) -> (answers, policy ref such as 'policy/3')
Sampler = Callable[[Sequence[list[dict]], float, int], tuple[list[str], str]]


def default_prompts_table(stdlib_limit: int = 0):
    """Built-in prompts: stdlib questions (reference = the docstring answer) and destructive-command requests
    (reference = the cautious answer), both from the built-in SFT data's helpers."""
    from alignline.services.data import safety_dialogues, stdlib_dialogues
    from alignline.services.data.default_sft import SYSTEM_PROMPT

    system = {"role": "system", "content": SYSTEM_PROMPT}
    rows = [(f"prompt-{pid}", "stdlib-docstring", False, [system, *d[:-1]], d[-1]["content"])
            for pid, d in stdlib_dialogues(stdlib_limit)]
    rows += [(f"prompt-{pid}", "safety", True, [system, *d[:-1]], d[-1]["content"]) for pid, d in safety_dialogues()]
    return prompt_table(rows)


def latest_policy_sampler(ctx: RunContext) -> Sampler:
    """Samples from the latest registered policy (champion, else candidate), loaded once."""
    from alignline.services.generation import SamplingParams, generate_chat
    from alignline.services.models import load_registered

    cfg = ctx.cfg.annotation
    model, tokenizer, info = load_registered(ctx.registry, cfg.policy_name, "latest", ctx.work_dir("models"))

    def sample(dialogues, temperature, seed):
        params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=temperature, top_p=cfg.top_p, seed=seed)
        return generate_chat(model, tokenizer, dialogues, params), info.ref
    return sample


def _seed(base: int, *parts: int) -> int:
    return int(hashlib.sha256(f"{base}/{'/'.join(map(str, parts))}".encode()).hexdigest()[:8], 16)


@task(cache_policy=NO_CACHE)
def prompt_dataset(ctx: RunContext, prompts: str | None) -> str:
    if prompts is None:
        return ctx.catalog.publish(DEFAULT_PROMPTS, default_prompts_table(ctx.cfg.annotation.stdlib_prompts),
                                   metadata={"maker": "default_prompts_table"}).ref
    name, _, version = prompts.partition("@")
    return ctx.catalog.get(name, version or "latest").ref


@task(cache_policy=NO_CACHE)
def sample_pairs(ctx: RunContext, prompts_ref: str, iteration: int, batch: int, sampler: Sampler) -> tuple[list[dict], int]:
    """Two responses per prompt, one per configured temperature (Llama 2 §3.2.1); identical pairs are dropped."""
    cfg = ctx.cfg.annotation
    name, _, version = prompts_ref.partition("@")
    chosen = select_prompts(ctx.catalog.read(name, version), cfg.prompts_per_batch, cfg.safety_share, iteration, batch)
    dialogues = [p["messages"] for p in chosen]
    sides, answers = [], []
    for i, temperature in enumerate(cfg.temperatures):
        seed = _seed(cfg.seed, iteration, batch, i)
        texts, policy = sampler(dialogues, temperature, seed)
        answers.append(texts)
        sides.append(Side(policy, {"temperature": temperature, "top_p": cfg.top_p,
                                   "max_new_tokens": cfg.max_new_tokens, "seed": seed}))
    tasks = pair_tasks(chosen, sides[0], sides[1], answers[0], answers[1], iteration, batch)
    kept = [t for t in tasks if t["response_a"].strip() and t["response_a"] != t["response_b"]]
    return kept, len(tasks) - len(kept)


@task(cache_policy=NO_CACHE)
def publish_and_import(ctx: RunContext, tasks: list[dict], kind: str, prompts_ref: str) -> dict:
    """Publish the batch's tasks (lineage: the prompts), then import them into the kind's project."""
    cfg = ctx.cfg.annotation
    keyed = [{**t, "task_key": task_key(t)} for t in tasks]
    ref = ctx.catalog.publish(f"preference-tasks-{kind}", tasks_table(keyed), parents=[prompts_ref]).ref
    client = connect(ctx.label_studio_url, ctx.label_studio_token())
    title = cfg.helpfulness_project if kind == "helpfulness" else cfg.safety_project
    project = ensure_preference_project(client, kind, title, cfg.overlap_share)
    new = import_tasks(client, project, [{**t, "tasks_ref": ref} for t in keyed], batch_size=cfg.import_batch_size,
                       retries=cfg.import_retries, backoff_s=cfg.import_backoff_s)
    return {"project": project, "tasks": ref, "imported": new, "url": f"{ctx.label_studio_url}/projects/{project}"}


@flow(name="collect")
def collect_flow(cfg: RunConfig, iteration: int, batch: int, sampler: Sampler | None = None,
                 prompts: str | None = None) -> dict:
    ctx = RunContext(cfg)
    prompts_ref = prompt_dataset(ctx, prompts)
    tasks, identical = sample_pairs(ctx, prompts_ref, iteration, batch, sampler or latest_policy_sampler(ctx))
    out = {"prompts": prompts_ref, "identical_pairs_dropped": identical}
    for kind in KINDS:
        of_kind = [t for t in tasks if t["kind"] == kind]
        if of_kind:
            out[kind] = publish_and_import(ctx, of_kind, kind, prompts_ref)
    return out


def run_collect(cfg: RunConfig, iteration: int, batch: int, sampler: Sampler | None = None,
                prompts: str | None = None) -> dict:
    """What `alignline collect` calls. `sampler` defaults to the latest registered policy."""
    return collect_flow(cfg, iteration=iteration, batch=batch, sampler=sampler, prompts=prompts)
