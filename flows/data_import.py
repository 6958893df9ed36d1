"""Import flow: a public SFT, preference or prompt file (JSONL, JSONL.gz or Parquet, in the layouts TRL and OpenRLHF
read; `services.data.importers`) -> a validated, versioned dataset; unusable records to `<name>-quarantine`.

CLI: `alignline data import FILE --kind sft|preference|prompts [--safety] [--name DATASET]`
-> run_data_import(cfg, FILE, kind, safety, name). Catalog only: no server and no Prefect run (like
`harvest --hh-rlhf`). The dataset then feeds a stage by ref: `sft --data sft-import@1`,
`reward --helpfulness comparisons-import`, `rlhf`/`collect --prompts prompts-import@latest`.
"""
from __future__ import annotations

from pathlib import Path

from alignline.annotation.hh_rlhf import parse_transcript
from alignline.config import RunConfig
from alignline.flows.context import RunContext
from alignline.services.data import ImportFileError, import_records, read_records
from alignline.storage import Catalog
from alignline.storage.catalog import validate_name
from alignline.storage.schemas import quarantine_table

DEFAULT_NAMES = {"sft": "sft-import", "preference": "comparisons-import", "prompts": "prompts-import"}


def dataset_name(kind: str, is_safety: bool, name: str | None) -> str:
    """--name, else `sft-import`, `comparisons-import[-safety]` or `prompts-import`."""
    if name:
        return name
    return DEFAULT_NAMES[kind] + ("-safety" if kind == "preference" and is_safety else "")


def import_dataset(catalog: Catalog, path: str | Path, kind: str, is_safety: bool, name: str,
                   margin_level: str) -> dict:
    """Publish the file's usable rows as `name` and its rejects as `name-quarantine` (file, line, reason)."""
    path = Path(path)
    validate_name(f"{name}-quarantine")  # a bad or too long --name fails before the file is read
    result = import_records(kind, read_records(path), path.name, is_safety=is_safety, margin_level=margin_level,
                            parse_transcript=parse_transcript)
    metadata = {"file": str(path.resolve()), "kind": kind, "is_safety": is_safety, **result.metadata()}
    if kind == "preference":
        metadata |= {"margin_level": margin_level, "scores": "margin/score_chosen/score_rejected kept as columns, "
                     "not mapped to a margin level (services/data/importers.py)"}
    quarantine = None
    if result.quarantine:
        quarantine = catalog.publish(f"{name}-quarantine", quarantine_table(result.quarantine),
                                     metadata={**metadata, "quarantine_of": name}).ref
    if not result.table.num_rows:
        raise ImportFileError(f"{path}: no usable {kind} records ({len(result.quarantine)} quarantined in "
                              f"{quarantine}: {dict(result.reasons)})")
    dataset = catalog.publish(name, result.table, metadata=metadata)
    return {"dataset": dataset.ref, "rows": result.table.num_rows, "layouts": dict(result.layouts),
            "quarantined": len(result.quarantine), "quarantine_reasons": dict(result.reasons),
            "quarantine_dataset": quarantine,
            "first_quarantined": [f"{q['source']} {q['record_id']}: {q['reason']}" for q in result.quarantine[:10]]}


def run_data_import(cfg: RunConfig, path: str, kind: str, safety: bool = False, name: str | None = None) -> dict:
    """What `alignline data import` calls. Preference pairs get annotation.public_margin_level (public sets carry no
    rating on the paper's four-level scale); `safety` marks pairs and prompts is_safety."""
    return import_dataset(RunContext(cfg).catalog, path, kind, safety, dataset_name(kind, safety, name),
                          cfg.annotation.public_margin_level)
