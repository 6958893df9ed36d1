"""Pretraining flow (Llama 2 §2): corpus version -> BPE tokenizer -> base model -> registry `base`.

CLI the lead wires in flows/cli.py:
    alignline pretrain [--preset tiny] [--config run.toml] [--set pretrain.max_steps=50 ...]
                       [--corpus-version latest] [--tracking-uri URI]
    -> run_pretrain(cfg, corpus_version=..., tracking_uri=...)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from alignline.config import RunConfig
from alignline.flows.context import RunContext
from alignline.services.models import load_tokenizer, train_bpe_tokenizer
from alignline.services.registry import Lineage, Registry
from alignline.services.training import PretrainJob, end_run, pack_documents, start_run, train_pretrain

TOKENIZER_DATASET = "tokenizer"


@task(cache_policy=NO_CACHE)
def read_corpus(ctx: RunContext, version: str) -> tuple[list[str], str]:
    """Texts of the corpus version and its catalog ref."""
    entry = ctx.catalog.get("corpus", version)
    return ctx.catalog.read("corpus", entry.version).column("text").to_pylist(), entry.ref


@task(cache_policy=NO_CACHE)
def train_tokenizer(ctx: RunContext, texts: list[str], corpus_ref: str, work: Path) -> tuple[str, str]:
    """BPE on the corpus; the tokenizer file is published as a dataset version whose parent is the corpus."""
    limit = ctx.cfg.pretrain.tokenizer_docs or len(texts)
    tokenizer = train_bpe_tokenizer(texts[:limit], vocab_size=ctx.cfg.model.vocab_size)
    folder = work / "tokenizer"
    tokenizer.save_pretrained(str(folder))
    table = pa.table({"tokenizer_json": [(folder / "tokenizer.json").read_text()], "vocab_size": [len(tokenizer)]})
    version = ctx.catalog.publish(TOKENIZER_DATASET, table, parents=[corpus_ref],
                                  metadata={"vocab_size": len(tokenizer), "kind": "bpe-bytelevel"})
    return str(folder), version.ref


@task(cache_policy=NO_CACHE)
def pack_corpus(texts: list[str], tokenizer_dir: str, seq_len: int, work: Path) -> str:
    tokenizer = load_tokenizer(tokenizer_dir)
    docs = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    rows = pack_documents(docs, seq_len, tokenizer.bos_token_id, tokenizer.eos_token_id)
    np.save(work / "rows.npy", rows.input_ids)
    return str(work / "rows.npy")


@task(cache_policy=NO_CACHE)
def train_base(ctx: RunContext, job: PretrainJob, ray_name: str) -> dict:
    return train_pretrain(job, ctx.launch_options(ctx.cfg.pretrain, ray_name))


@task(cache_policy=NO_CACHE)
def register_base(registry: Registry, output_dir: str, datasets: tuple[str, ...], config_hash: str, run_id: str) -> str:
    lineage = Lineage(datasets=datasets, config_hash=config_hash, method="pretrain")
    return registry.register_dir("base", output_dir, lineage, run_id=run_id).ref


@flow(name="pretrain")
def pretrain_flow(cfg: RunConfig, corpus_version: str = "latest", tracking_uri: str | None = None) -> dict:
    ctx = RunContext(cfg)
    uri = tracking_uri or ctx.mlflow_uri
    texts, corpus_ref = read_corpus(ctx, corpus_version)
    work = ctx.work_dir("pretrain", f"{cfg.digest()}-{corpus_ref.split('@')[1]}")  # same inputs: resume
    tokenizer_dir, tokenizer_ref = train_tokenizer(ctx, texts, corpus_ref, work)
    rows_path = pack_corpus(texts, tokenizer_dir, cfg.pretrain.seq_len, work)
    run_id = start_run(uri, "pretrain", f"pretrain-{cfg.preset}", {**cfg.to_dict()["model"], **cfg.to_dict()["pretrain"],
                                                                    "corpus": corpus_ref, "tokenizer": tokenizer_ref})
    job = PretrainJob(cfg.model, cfg.pretrain, tokenizer_dir, rows_path, str(work / "model"), str(work / "checkpoints"),
                      tracking_uri=uri, run_id=run_id)
    try:
        result = train_base(ctx, job, ray_name=f"pretrain-{work.name}")
        ref = register_base(Registry(uri), result["output_dir"], (corpus_ref, tokenizer_ref), cfg.digest(), run_id)
    except BaseException:
        end_run(uri, run_id, "FAILED")
        raise
    end_run(uri, run_id)
    return {"model": ref, "corpus": corpus_ref, "tokenizer": tokenizer_ref, "run_id": run_id,
            "loss": result.get("loss"), "steps": result.get("step"), "tokens_per_s": result.get("tokens_per_s")}


def run_pretrain(cfg: RunConfig, corpus_version: str = "latest", tracking_uri: str | None = None) -> dict:
    """What `alignline pretrain` calls: returns the registered base ref, data refs and final metrics."""
    return pretrain_flow(cfg, corpus_version=corpus_version, tracking_uri=tracking_uri)
