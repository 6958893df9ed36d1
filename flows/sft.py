"""SFT flow (Llama 2 §3.1): demonstrations -> fine-tuned base model -> registry `policy@candidate`.

CLI the lead wires in flows/cli.py:
    alignline sft [--preset tiny] [--config run.toml] [--set sft.epochs=1 ...]
                  [--data PATH.jsonl | DATASET[@VERSION]] [--tracking-uri URI]
    -> run_sft(cfg, data=..., tracking_uri=...)
Without --data the built-in set (stdlib docstring Q&A + safety replies) is published and used.
Starts from `sft.base_model`@`sft.base_version` in the registry, or from `model.checkpoint` when set.
"""
from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from alignline.config import RunConfig
from alignline.flows.context import RunContext
from alignline.services.data import (default_sft_metadata, default_sft_table, dialogues_table, read_jsonl,
                                     table_dialogues)
from alignline.services.models import load_tokenizer, registered_folder
from alignline.services.registry import Lineage, Registry
from alignline.services.training import SFTJob, encode_sft_rows, end_run, start_run, train_sft, write_sft_rows

DEFAULT_DATASET = "sft-default"
JSONL_DATASET = "sft"


@task(cache_policy=NO_CACHE)
def sft_dataset(ctx: RunContext, data: str | None) -> str:
    """Catalog ref of the demonstrations: the built-in set, a JSONL file (validated, published), or a dataset ref."""
    if data is None:
        table = default_sft_table(ctx.cfg.sft.stdlib_examples)
        return ctx.catalog.publish(DEFAULT_DATASET, table, metadata=default_sft_metadata()).ref
    if Path(data).is_file():
        table = dialogues_table(read_jsonl(data), source=Path(data).name)
        return ctx.catalog.publish(JSONL_DATASET, table, metadata={"file": str(Path(data).resolve())}).ref
    name, _, version = data.partition("@")
    return ctx.catalog.get(name, version or "latest").ref


@task(cache_policy=NO_CACHE)
def start_model(ctx: RunContext, registry: Registry) -> tuple[str, str]:
    """(HF folder, lineage parent) of the model SFT starts from."""
    if ctx.cfg.model.checkpoint is not None:
        return str(ctx.cfg.model.checkpoint), f"checkpoint:{ctx.cfg.model.checkpoint}"
    folder, info = registered_folder(registry, ctx.cfg.sft.base_model, ctx.cfg.sft.base_version, ctx.work_dir("models"))
    return str(folder), info.ref


@task(cache_policy=NO_CACHE)
def encode_rows(ctx: RunContext, dataset_ref: str, model_dir: str, work: Path) -> str:
    name, _, version = dataset_ref.partition("@")
    dialogues = table_dialogues(ctx.catalog.read(name, version))
    rows = encode_sft_rows(load_tokenizer(model_dir), dialogues, ctx.cfg.sft.seq_len, ctx.cfg.sft.train_on)
    return write_sft_rows(rows, work / "rows.npz")


@task(cache_policy=NO_CACHE)
def train_policy(ctx: RunContext, job: SFTJob, ray_name: str) -> dict:
    return train_sft(job, ctx.launch_options(ctx.cfg.sft, ray_name))


@task(cache_policy=NO_CACHE)
def register_policy(registry: Registry, output_dir: str, dataset_ref: str, parent: str, config_hash: str,
                    run_id: str) -> str:
    lineage = Lineage(datasets=(dataset_ref,), parents=(parent,), config_hash=config_hash, method="sft")
    return registry.register_dir("policy", output_dir, lineage, run_id=run_id, alias="candidate").ref


@flow(name="sft")
def sft_flow(cfg: RunConfig, data: str | None = None, tracking_uri: str | None = None) -> dict:
    ctx = RunContext(cfg)
    uri = tracking_uri or ctx.mlflow_uri
    registry = Registry(uri)
    dataset_ref = sft_dataset(ctx, data)
    model_dir, parent = start_model(ctx, registry)
    work = ctx.work_dir("sft", f"{cfg.digest()}-{dataset_ref.split('@')[1]}-{parent.replace('/', '-').replace(':', '-')[-40:]}")
    rows_path = encode_rows(ctx, dataset_ref, model_dir, work)
    run_id = start_run(uri, "sft", f"sft-{cfg.preset}", {**cfg.to_dict()["sft"], "data": dataset_ref, "parent": parent})
    job = SFTJob(cfg.sft, model_dir, rows_path, str(work / "model"), str(work / "checkpoints"),
                 tracking_uri=uri, run_id=run_id)
    try:
        result = train_policy(ctx, job, ray_name=f"sft-{work.name}")
        ref = register_policy(registry, result["output_dir"], dataset_ref, parent, cfg.digest(), run_id)
    except BaseException:
        end_run(uri, run_id, "FAILED")
        raise
    end_run(uri, run_id)
    return {"model": ref, "data": dataset_ref, "parent": parent, "run_id": run_id, "loss": result.get("loss"),
            "steps": result.get("step"), "tokens_per_s": result.get("tokens_per_s")}


def run_sft(cfg: RunConfig, data: str | None = None, tracking_uri: str | None = None) -> dict:
    """What `alignline sft` calls: returns the registered policy ref (alias candidate), data ref, parent, metrics."""
    return sft_flow(cfg, data=data, tracking_uri=tracking_uri)
