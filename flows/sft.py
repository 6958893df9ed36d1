"""SFT flow (Llama 2 §3.1): demonstrations -> fine-tuned base model -> registry `policy@candidate`.

CLI: `alignline sft [--data PATH.jsonl | DATASET[@VERSION]]` (plus --preset/--config/--set/--home).
Without --data the built-in set (stdlib docstring Q&A + safety replies) is published and used.
Starts from `sft.base_model`@`sft.base_version` in the registry, or from `model.checkpoint` when set.
"""
from __future__ import annotations

from pathlib import Path

from prefect import flow, task

from alignline.config import RunConfig
from alignline.config.training import SFTConfig
from alignline.flows.context import RunContext
from alignline.flows.retries import SERVER_RETRIES
from alignline.services.data import default_sft_metadata, default_sft_table, dialogues_table, read_jsonl, table_dialogues
from alignline.services.models import load_tokenizer, registered_folder
from alignline.services.registry import Lineage, Registry
from alignline.services.tracking import tracked_run
from alignline.services.training import LaunchOptions, SFTJob, encode_sft_rows, train_sft, write_sft_rows
from alignline.storage import Catalog, DatasetRef
from alignline.storage.schemas import quarantine_table

DEFAULT_DATASET = "sft-default"
JSONL_DATASET = "sft"


@task
def sft_dataset(lake: str, data: str | None, stdlib_examples: int) -> str:
    """Catalog ref of the demonstrations: the built-in set, a JSONL file (validated, published), or a dataset ref."""
    catalog = Catalog(lake)
    if data is None:
        table = default_sft_table(stdlib_examples)
        return catalog.publish(DEFAULT_DATASET, table, metadata=default_sft_metadata()).ref
    if Path(data).is_file():
        rejected: list[dict] = []  # bad lines are quarantined with file, line and reason; the rest trains
        table = dialogues_table(read_jsonl(data, quarantine=rejected), source=Path(data).name)
        meta = {"file": str(Path(data).resolve()), "quarantined": len(rejected)}
        if rejected:
            catalog.publish(f"{JSONL_DATASET}-quarantine", quarantine_table(rejected), metadata=meta)
        return catalog.publish(JSONL_DATASET, table, metadata=meta).ref
    return catalog.resolve(data).ref


@task(**SERVER_RETRIES)
def start_model(mlflow_uri: str, models_dir: str, checkpoint: str | None, base_model: str, base_version: str) -> tuple[str, str]:
    """(HF folder, lineage parent) of the model SFT starts from."""
    if checkpoint is not None:
        return str(checkpoint), f"checkpoint:{checkpoint}"
    folder, info = registered_folder(Registry(mlflow_uri), base_model, base_version, models_dir)
    return str(folder), info.ref


@task
def encode_rows(lake: str, dataset_ref: str, model_dir: str, sft: SFTConfig, work: str) -> str:
    dialogues = table_dialogues(Catalog(lake).read_ref(dataset_ref), dataset_ref)
    rows = encode_sft_rows(load_tokenizer(model_dir), dialogues, sft.seq_len, sft.train_on)
    return write_sft_rows(rows, Path(work) / "rows.npz")


@task
def train_policy(job: SFTJob, launch: LaunchOptions) -> dict:
    return train_sft(job, launch)


@task(**SERVER_RETRIES)
def register_policy(mlflow_uri: str, output_dir: str, dataset_ref: str, parent: str, config_hash: str, run_id: str) -> str:
    lineage = Lineage(datasets=(dataset_ref,), parents=(parent,), config_hash=config_hash, method="sft")
    return Registry(mlflow_uri).register_dir("policy", output_dir, lineage, run_id=run_id, alias="candidate",
                                             step=output_dir).ref


@flow(name="sft")
def sft_flow(cfg: RunConfig, data: str | None = None) -> dict:
    ctx = RunContext(cfg)
    uri, lake = ctx.mlflow_uri, str(ctx.data.lake)
    dataset_ref = sft_dataset(lake, data, cfg.sft.stdlib_examples)
    model_dir, parent = start_model(uri, str(ctx.data.models), cfg.model.checkpoint and str(cfg.model.checkpoint),
                                    cfg.sft.base_model, cfg.sft.base_version)
    key = f"{DatasetRef.parse(dataset_ref).version}-{parent.replace('/', '-').replace(':', '-')[-40:]}"
    work = ctx.work("sft", "model", "sft", key=key)
    rows_path = encode_rows(lake, dataset_ref, model_dir, cfg.sft, work)
    params = {**cfg.to_dict()["sft"], "data": dataset_ref, "parent": parent}
    with tracked_run(uri, "sft", f"sft-{cfg.preset}", params) as run_id:
        job = SFTJob(cfg.sft, model_dir, rows_path, f"{work}/model", f"{work}/checkpoints", tracking_uri=uri, run_id=run_id,
                     model=cfg.model)
        result = train_policy(job, ctx.launch_options(cfg.sft, f"sft-{Path(work).name}"))
        ref = register_policy(uri, result["output_dir"], dataset_ref, parent, cfg.digest("model", "sft"), run_id)
    return {"model": ref, "data": dataset_ref, "parent": parent, "run_id": run_id, "loss": result.get("loss"),
            "steps": result.get("step"), "tokens_per_s": result.get("tokens_per_s")}


def run_sft(cfg: RunConfig, data: str | None = None) -> dict:
    """What `alignline sft` calls: returns the registered policy ref (alias candidate), data ref, parent, metrics."""
    return sft_flow(cfg, data=data)
