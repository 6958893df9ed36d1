"""Harvest flow (Llama 2 §3.2.1): new annotations -> validated `comparisons-helpfulness` / `comparisons-safety`.

CLI: `alignline harvest` -> run_harvest(cfg);
`alignline harvest --hh-rlhf FILE.jsonl[.gz] --kind helpfulness|safety` -> run_import_hh_rlhf(cfg, FILE, kind).
Only annotations no earlier harvest recorded are read; each run publishes a
cumulative version whose parents are the previous version and the task batches.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from prefect import flow, task
from prefect.runtime import flow_run

from alignline.annotation import connect, find_project, harvest
from alignline.annotation.hh_rlhf import quarantine_rows, read_hh_rlhf
from alignline.config import RunConfig
from alignline.config.annotation import AnnotationConfig
from alignline.flows.artifacts import publish_harvest
from alignline.flows.context import RunContext, label_studio_token
from alignline.flows.retries import SERVER_RETRIES
from alignline.services.progress import Progress
from alignline.storage import Catalog, DataDir
from alignline.storage.faults import fault_point
from alignline.storage.schemas import KINDS, quarantine_table

PUBLIC_DATASET = "comparisons-public-{kind}"   # training pairs; "-heldout" beside it: evaluation only


@task(**SERVER_RETRIES)  # exactly once: the annotation ledger skips what a failed try published
def harvest_kind(home: str, ls_url: str, kind: str, ac: AnnotationConfig) -> dict:
    data = DataDir(Path(home))
    client = connect(ls_url, label_studio_token(home))
    project = find_project(client, ac.helpfulness_project if kind == "helpfulness" else ac.safety_project)
    if project is None:
        return {"dataset": None, "note": "no project yet: run `alignline collect` first"}
    with Progress(f"harvest {kind}", unit="task") as bar:
        result = harvest(client, project, kind, Catalog(data.lake), f"comparisons-{kind}",
                         data.harvest_ledger(kind, project), data.reports("annotation"),
                         drop_categories=ac.drop_safety_categories, slack_s=ac.harvest_slack_s,
                         flow_run=str(flow_run.get_id()), page_size=ac.harvest_page_size, on_page=page_progress(bar))
    return asdict(result)


def page_progress(bar: Progress):
    """A harvest's page callback that moves `bar` (the total is known once the first page answers)."""
    def on_page(read: int, total: int | None) -> None:
        bar.total = total
        bar.update(read)
    return on_page


@flow(name="harvest")
def harvest_flow(cfg: RunConfig) -> dict:
    ctx = RunContext(cfg)
    result = {kind: harvest_kind(str(cfg.home), ctx.label_studio_url, kind, cfg.annotation) for kind in KINDS}
    publish_harvest(result)
    return result


def run_harvest(cfg: RunConfig) -> dict:
    """What `alignline harvest` calls: per kind, the dataset ref, new/total comparisons, counts, agreement.
    One harvest at a time per data dir (a second one waits, then finds nothing new twice)."""
    with RunContext(cfg).data.lock("harvest", wait_s=600):
        fault_point("harvest.locked")
        return harvest_flow(cfg)


def run_import_hh_rlhf(cfg: RunConfig, path: str, kind: str) -> dict:
    """Publish an Anthropic HH-RLHF file as `comparisons-public-<kind>` (training) and
    `comparisons-public-<kind>-heldout` (held-out prompts, annotation.public_heldout_share; only the reward report
    reads it). Margin level: annotation.public_margin_level. Malformed records go to a quarantine file."""
    ac, ctx = cfg.annotation, RunContext(cfg)
    result = read_hh_rlhf(path, kind, ac.public_margin_level, heldout_share=ac.public_heldout_share)
    name = PUBLIC_DATASET.format(kind=kind)
    metadata = {"file": str(Path(path).resolve()), "kind": kind, "quarantined": len(result.rejects),
                "quarantine_reasons": result.reject_counts(), "heldout_share": ac.public_heldout_share}
    quarantine = None
    if result.rejects:  # kept with file, line and reason, like every other quarantine
        quarantine = ctx.catalog.publish(f"{name}-quarantine", quarantine_table(
            quarantine_rows(result.rejects, Path(path).name)), metadata=metadata).ref
    train = ctx.catalog.publish(name, result.table, metadata=metadata)
    heldout = ctx.catalog.publish(f"{name}-heldout", result.heldout, metadata={**metadata, "heldout_of": train.ref})
    return {"dataset": train.ref, "heldout_dataset": heldout.ref, "pairs": result.table.num_rows,
            "heldout_pairs": result.heldout.num_rows, "quarantined": len(result.rejects),
            "quarantine_reasons": result.reject_counts(), "quarantine_dataset": quarantine,
            "first_quarantined": [f"line {r.line}: {r.reason}" for r in result.rejects[:10]]}
