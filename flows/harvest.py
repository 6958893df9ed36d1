"""Harvest flow (Llama 2 §3.2.1): new annotations -> validated `comparisons-helpfulness` / `comparisons-safety`.

CLI the lead wires in flows/cli.py:
    alignline harvest [--preset ...] [--set annotation.x=...]          -> run_harvest(cfg)
    alignline harvest --hh-rlhf FILE.jsonl                               -> run_import_hh_rlhf(cfg, FILE)
Only annotations no earlier harvest recorded are read; each run publishes a
cumulative version whose parents are the previous version and the task batches.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from alignline.annotation import KINDS, connect, find_project, harvest, read_hh_rlhf
from alignline.config import RunConfig
from alignline.flows.context import RunContext


def ledger_path(ctx: RunContext, kind: str, project_id: int) -> Path:
    return ctx.home / "annotation" / f"harvest-ledger-{kind}-{project_id}.json"


@task(cache_policy=NO_CACHE)
def harvest_kind(ctx: RunContext, kind: str) -> dict:
    cfg = ctx.cfg.annotation
    client = connect(ctx.label_studio_url, ctx.label_studio_token())
    project = find_project(client, cfg.helpfulness_project if kind == "helpfulness" else cfg.safety_project)
    if project is None:
        return {"dataset": None, "note": "no project yet: run `alignline collect` first"}
    result = harvest(client, project, kind, ctx.catalog, f"comparisons-{kind}", ledger_path(ctx, kind, project),
                     ctx.home / "reports" / "annotation", drop_categories=cfg.drop_safety_categories,
                     slack_s=cfg.harvest_slack_s, flow_run=str(flow_run.get_id()))
    return asdict(result)


@flow(name="harvest")
def harvest_flow(cfg: RunConfig) -> dict:
    ctx = RunContext(cfg)
    return {kind: harvest_kind(ctx, kind) for kind in KINDS}


def run_harvest(cfg: RunConfig) -> dict:
    """What `alignline harvest` calls: per kind, the dataset ref, new/total comparisons, counts, agreement."""
    return harvest_flow(cfg)


def run_import_hh_rlhf(cfg: RunConfig, path: str) -> dict:
    """Publish an Anthropic HH-RLHF JSONL file as `comparisons-public` (margin: annotation.public_margin_level)."""
    ctx = RunContext(cfg)
    result = read_hh_rlhf(path, cfg.annotation.public_margin_level)
    version = ctx.catalog.publish("comparisons-public", result.table, metadata={
        "file": str(Path(path).resolve()), "rejected": len(result.rejects),
        "reject_reasons": [f"line {n}: {why}" for n, why in result.rejects[:100]]})
    return {"dataset": version.ref, "pairs": result.table.num_rows, "rejected": result.rejects}
