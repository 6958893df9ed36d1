"""Harvest flow (Llama 2 §3.2.1): new annotations -> validated `comparisons-helpfulness` / `comparisons-safety`.

CLI: `alignline harvest` -> run_harvest(cfg); `alignline harvest --hh-rlhf FILE.jsonl` -> run_import_hh_rlhf(cfg, FILE).
Only annotations no earlier harvest recorded are read; each run publishes a
cumulative version whose parents are the previous version and the task batches.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from prefect import flow, task
from prefect.runtime import flow_run

from alignline.annotation import connect, find_project, harvest, read_hh_rlhf
from alignline.config import RunConfig
from alignline.config.annotation import AnnotationConfig
from alignline.flows.context import RunContext, label_studio_token
from alignline.storage import Catalog, DataDir
from alignline.storage.schemas import KINDS


@task
def harvest_kind(home: str, ls_url: str, kind: str, ac: AnnotationConfig) -> dict:
    data = DataDir(Path(home))
    client = connect(ls_url, label_studio_token(home))
    project = find_project(client, ac.helpfulness_project if kind == "helpfulness" else ac.safety_project)
    if project is None:
        return {"dataset": None, "note": "no project yet: run `alignline collect` first"}
    result = harvest(client, project, kind, Catalog(data.lake), f"comparisons-{kind}", data.harvest_ledger(kind, project),
                     data.reports("annotation"), drop_categories=ac.drop_safety_categories,
                     slack_s=ac.harvest_slack_s, flow_run=str(flow_run.get_id()))
    return asdict(result)


@flow(name="harvest")
def harvest_flow(cfg: RunConfig) -> dict:
    ctx = RunContext(cfg)
    return {kind: harvest_kind(str(cfg.home), ctx.label_studio_url, kind, cfg.annotation) for kind in KINDS}


def run_harvest(cfg: RunConfig) -> dict:
    """What `alignline harvest` calls: per kind, the dataset ref, new/total comparisons, counts, agreement."""
    return harvest_flow(cfg)


def run_import_hh_rlhf(cfg: RunConfig, path: str) -> dict:
    """Publish an Anthropic HH-RLHF JSONL file as `comparisons-public` (margin: annotation.public_margin_level)."""
    result = read_hh_rlhf(path, cfg.annotation.public_margin_level)
    version = RunContext(cfg).catalog.publish("comparisons-public", result.table, metadata={
        "file": str(Path(path).resolve()), "rejected": len(result.rejects),
        "reject_reasons": [f"line {n}: {why}" for n, why in result.rejects[:100]]})
    return {"dataset": version.ref, "pairs": result.table.num_rows, "rejected": result.rejects}
