"""Pretraining flow (Llama 2 §2): corpus version -> BPE tokenizer -> base model -> registry `base`.

CLI: `alignline pretrain [--corpus-version latest]` (plus --preset/--config/--set/--home).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from prefect import flow, task

from alignline.config import RunConfig
from alignline.flows.context import RunContext
from alignline.flows.retries import SERVER_RETRIES
from alignline.services.models import load_tokenizer, train_bpe_tokenizer
from alignline.services.registry import Lineage, Registry
from alignline.services.tracking import tracked_run
from alignline.services.training import LaunchOptions, PretrainJob, pack_documents, train_pretrain
from alignline.storage import Catalog, DatasetRef

TOKENIZER_DATASET = "tokenizer"


@task
def corpus_ref(lake: str, version: str) -> str:
    return Catalog(lake).resolve(DatasetRef("corpus", version)).ref


@task
def train_tokenizer(lake: str, corpus: str, vocab_size: int, max_docs: int, work: str) -> tuple[str, str]:
    """BPE on the corpus; the tokenizer file is published as a dataset version whose parent is the corpus."""
    catalog = Catalog(lake)
    texts = catalog.read_ref(corpus).column("text").to_pylist()
    tokenizer = train_bpe_tokenizer(texts[:max_docs or len(texts)], vocab_size=vocab_size)
    folder = Path(work) / "tokenizer"
    tokenizer.save_pretrained(str(folder))
    table = pa.table({"tokenizer_json": [(folder / "tokenizer.json").read_text()], "vocab_size": [len(tokenizer)]})
    version = catalog.publish(TOKENIZER_DATASET, table, parents=[corpus],
                              metadata={"vocab_size": len(tokenizer), "kind": "bpe-bytelevel"})
    return str(folder), version.ref


@task
def pack_corpus(lake: str, corpus: str, tokenizer_dir: str, seq_len: int, work: str) -> str:
    texts = Catalog(lake).read_ref(corpus).column("text").to_pylist()
    tokenizer = load_tokenizer(tokenizer_dir)
    docs = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    rows = pack_documents(docs, seq_len, tokenizer.bos_token_id, tokenizer.eos_token_id)
    np.save(Path(work) / "rows.npy", rows.input_ids)
    return str(Path(work) / "rows.npy")


@task
def train_base(job: PretrainJob, launch: LaunchOptions) -> dict:
    return train_pretrain(job, launch)


@task(**SERVER_RETRIES)
def register_base(mlflow_uri: str, output_dir: str, datasets: tuple[str, ...], config_hash: str, run_id: str) -> str:
    lineage = Lineage(datasets=datasets, config_hash=config_hash, method="pretrain")
    return Registry(mlflow_uri).register_dir("base", output_dir, lineage, run_id=run_id, step=output_dir).ref


@flow(name="pretrain")
def pretrain_flow(cfg: RunConfig, corpus_version: str = "latest") -> dict:
    ctx = RunContext(cfg)
    uri, lake = ctx.mlflow_uri, str(ctx.data.lake)
    corpus = corpus_ref(lake, corpus_version)
    work = ctx.work("pretrain", "model", "pretrain", key=DatasetRef.parse(corpus).version)  # same inputs: resume
    tokenizer_dir, tokenizer_ref = train_tokenizer(lake, corpus, cfg.model.vocab_size, cfg.pretrain.tokenizer_docs, work)
    rows_path = pack_corpus(lake, corpus, tokenizer_dir, cfg.pretrain.seq_len, work)
    params = {**cfg.to_dict()["model"], **cfg.to_dict()["pretrain"], "corpus": corpus, "tokenizer": tokenizer_ref}
    with tracked_run(uri, "pretrain", f"pretrain-{cfg.preset}", params) as run_id:
        job = PretrainJob(cfg.model, cfg.pretrain, tokenizer_dir, rows_path, f"{work}/model", f"{work}/checkpoints",
                          tracking_uri=uri, run_id=run_id)
        result = train_base(job, ctx.launch_options(cfg.pretrain, f"pretrain-{Path(work).name}"))
        ref = register_base(uri, result["output_dir"], (corpus, tokenizer_ref), cfg.digest("model", "pretrain"), run_id)
    return {"model": ref, "corpus": corpus, "tokenizer": tokenizer_ref, "run_id": run_id,
            "loss": result.get("loss"), "steps": result.get("step"), "tokens_per_s": result.get("tokens_per_s")}


def run_pretrain(cfg: RunConfig, corpus_version: str = "latest") -> dict:
    """What `alignline pretrain` calls: returns the registered base ref, data refs and final metrics."""
    return pretrain_flow(cfg, corpus_version=corpus_version)
