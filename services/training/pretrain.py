"""Pretraining recipe (Llama 2 §2.2): next-token loss on packed corpus rows, AdamW, cosine with warmup, clipping.

setup -> resume -> loop -> save, readable top to bottom; `launch` runs it in this
process or on Ray Train workers unchanged.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from alignline.config.model import ModelConfig
from alignline.config.training import PretrainConfig
from alignline.services.models.factory import build_model, load_tokenizer, save_model

from .launch import LaunchOptions, WorkerContext, launch
from .optimization import build_adamw, cosine_with_warmup
from .packing import step_rows
from .step import optimizer_step
from alignline.services.tracking import MetricsLogger


@dataclass(frozen=True)
class PretrainJob:
    model: ModelConfig
    train: PretrainConfig
    tokenizer_dir: str
    rows_path: str            # .npy of packed rows (N, seq_len), written by the caller
    output_dir: str           # final HF folder (rank 0 writes it)
    checkpoint_dir: str
    tracking_uri: str | None = None
    run_id: str | None = None
    on_step: Callable[[int], None] | None = None  # called after each optimizer step (tests stop runs here)
    INPUTS: ClassVar[tuple[str, ...]] = ("tokenizer_dir", "rows_path")  # shipped to workers on other nodes (launch.py)
    OUTPUTS: ClassVar[tuple[str, ...]] = ("output_dir",)                 # fetched back from rank 0's node


def pretrain_loop(job: PretrainJob, ctx: WorkerContext) -> dict[str, Any]:
    cfg = job.train
    tokenizer = load_tokenizer(job.tokenizer_dir)
    # Same seed on every rank: identical initial weights (DDP also broadcasts rank 0's).
    model = ctx.shard(build_model(job.model, tokenizer=tokenizer, device=ctx.device, seed=cfg.seed))  # FSDP: first
    optimizer = build_adamw(model, cfg.learning_rate, cfg.weight_decay, (cfg.adam_beta1, cfg.adam_beta2), cfg.adam_eps)
    scheduler = cosine_with_warmup(optimizer, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
    rows = np.load(job.rows_path, mmap_mode="r")  # (N, T) int64
    resume_from = ctx.restored_checkpoint() or ctx.latest_checkpoint(job.checkpoint_dir)
    start = ctx.load_checkpoint(resume_from, model, optimizer, scheduler) if resume_from else 0
    ddp_model = ctx.wrap(model)
    ddp_model.train()
    metrics = MetricsLogger(job.tracking_uri, job.run_id, "pretrain") if ctx.is_main else MetricsLogger(None, None)
    summary: dict[str, Any] = {**ctx.checkpoint_extra(resume_from).get("summary", {}),
                            "resumed_from_step": start}
    for step in range(start, cfg.max_steps):
        t0 = time.perf_counter()
        batch = step_rows(len(rows), cfg.batch_size, step, cfg.seed)[ctx.rank::ctx.world_size]
        ids = torch.from_numpy(np.ascontiguousarray(rows[np.sort(batch)]))  # (b, T); sorted reads from the mmap
        lr = scheduler.get_last_lr()[0]
        out = optimizer_step(ddp_model, optimizer, scheduler, ctx, ids, ids, cfg.micro_batch_size, cfg.grad_clip,
                             pad_id=tokenizer.pad_token_id)
        summary.update(step=step + 1, loss=out.loss, lr=lr, tokens_per_s=out.tokens / (time.perf_counter() - t0))
        summary["train_tokens"] = summary.get("train_tokens", 0) + out.tokens
        summary["train_seconds"] = summary.get("train_seconds", 0.0) + time.perf_counter() - t0
        if (step + 1) % cfg.log_every == 0 or step == start:
            metrics.log(step + 1, {"loss": out.loss, "lr": lr, "tokens_per_s": summary["tokens_per_s"],
                                   "grad_norm": out.grad_norm}, total_steps=cfg.max_steps)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.max_steps:
            saved = ctx.save_checkpoint(job.checkpoint_dir, step + 1, model, optimizer, scheduler,
                                        extra={"summary": summary})
            ctx.report({"step": step + 1, "loss": out.loss}, saved)
        if job.on_step is not None:
            job.on_step(step + 1)
    full = ctx.full_model(model)  # FSDP: gathered from every rank's shards
    if full is not None:
        save_model(full, tokenizer, job.output_dir)
    summary["output_dir"] = job.output_dir
    return summary


def train_pretrain(job: PretrainJob, opts: LaunchOptions) -> dict[str, Any]:
    """Run the recipe; returns rank 0's final metrics (loss, step, tokens/s, output_dir)."""
    Path(job.output_dir).mkdir(parents=True, exist_ok=True)
    return launch(pretrain_loop, job, opts)
