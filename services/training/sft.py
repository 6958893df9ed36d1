"""Supervised fine-tuning recipe (Llama 2 §3.1): packed prompt+answer rows, loss on answer tokens only.

Defaults of the real presets are the paper's: cosine LR 2e-5, weight decay 0.1,
batch 64, sequence 4096, 2 epochs. Same structure as the pretraining recipe:
setup -> resume -> loop -> save, in one process or on Ray Train workers.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch

from alignline.config.model import ModelConfig
from alignline.config.training import SFTConfig
from alignline.services.models.chat import EncodedDialogue, Message, TrainOn, encode_dialogue
from alignline.services.models.factory import load_for_training, load_tokenizer, save_model

from . import sharding as sh
from .launch import LaunchOptions, WorkerContext, launch
from .optimization import build_adamw, capped_warmup, cosine_with_warmup
from .packing import PackedRows, pack_dialogues, step_rows
from .step import optimizer_step
from alignline.services.tracking import MetricsLogger


@dataclass(frozen=True)
class SFTJob:
    train: SFTConfig
    model_dir: str            # HF folder of the starting model and its tokenizer (base model or a checkpoint)
    rows_path: str            # .npz with input_ids and labels (N, seq_len), from `write_sft_rows`
    output_dir: str
    checkpoint_dir: str
    tracking_uri: str | None = None
    run_id: str | None = None
    on_step: Callable[[int], None] | None = None
    model: ModelConfig = ModelConfig()  # dtype, gradient checkpointing, LoRA (the flow passes cfg.model)
    INPUTS: ClassVar[tuple[str, ...]] = ("model_dir", "rows_path")  # shipped to workers on other nodes (launch.py)
    OUTPUTS: ClassVar[tuple[str, ...]] = ("output_dir",)             # fetched back from rank 0's node


def encode_sft_rows(tokenizer, dialogues: Sequence[Sequence[Message]], seq_len: int,
                    train_on: TrainOn = "all") -> PackedRows:
    """Chat-format every dialogue (answer-only labels) and pack them into rows of seq_len."""
    encoded: list[EncodedDialogue] = [encode_dialogue(tokenizer, d, train_on) for d in dialogues]
    return pack_dialogues(encoded, seq_len, tokenizer.pad_token_id)


def write_sft_rows(rows: PackedRows, path: str | Path) -> str:
    np.savez(path, input_ids=rows.input_ids, labels=rows.labels)
    return str(path)


def total_sft_steps(num_rows: int, cfg: SFTConfig) -> int:
    """Whole global batches in `epochs` passes (the last partial batch is dropped so every rank gets rows)."""
    return max(1, cfg.epochs * num_rows // cfg.batch_size)


def sft_loop(job: SFTJob, ctx: WorkerContext) -> dict[str, Any]:
    cfg = job.train
    sh.refuse_lora("sft", job.model.lora_rank, ctx.sharding if ctx.sharded else "none")
    tokenizer = load_tokenizer(job.model_dir)
    model = ctx.shard(load_for_training(job.model_dir, job.model, device=ctx.device))  # FSDP: before the optimizer
    data = np.load(job.rows_path)
    input_ids, labels = data["input_ids"], data["labels"]  # (N, T) each
    max_steps = total_sft_steps(len(input_ids), cfg)
    optimizer = build_adamw(model, cfg.learning_rate, cfg.weight_decay, (cfg.adam_beta1, cfg.adam_beta2), cfg.adam_eps)
    scheduler = cosine_with_warmup(optimizer, capped_warmup(cfg.warmup_steps, max_steps), max_steps, cfg.min_lr_ratio)
    resume_from = ctx.restored_checkpoint() or ctx.latest_checkpoint(job.checkpoint_dir)
    start = ctx.load_checkpoint(resume_from, model, optimizer, scheduler) if resume_from else 0
    ddp_model = ctx.wrap(model)
    ddp_model.train()
    metrics = MetricsLogger(job.tracking_uri, job.run_id, "sft") if ctx.is_main else MetricsLogger(None, None)
    summary: dict[str, Any] = {**ctx.checkpoint_extra(resume_from).get("summary", {}),
                            "resumed_from_step": start, "max_steps": max_steps}
    losses: list[float] = []
    for step in range(start, max_steps):
        t0 = time.perf_counter()
        batch = step_rows(len(input_ids), cfg.batch_size, step, cfg.seed)[ctx.rank::ctx.world_size]
        x, y = torch.from_numpy(input_ids[batch]), torch.from_numpy(labels[batch])  # (b, T)
        lr = scheduler.get_last_lr()[0]
        out = optimizer_step(ddp_model, optimizer, scheduler, ctx, x, y, cfg.micro_batch_size, cfg.grad_clip,
                             pad_id=tokenizer.pad_token_id)
        losses.append(out.loss)
        summary.update(step=step + 1, loss=out.loss, lr=lr, tokens_per_s=out.tokens / (time.perf_counter() - t0))
        summary["train_tokens"] = summary.get("train_tokens", 0) + out.tokens
        summary["train_seconds"] = summary.get("train_seconds", 0.0) + time.perf_counter() - t0
        if (step + 1) % cfg.log_every == 0 or step == start:
            metrics.log(step + 1, {"loss": out.loss, "lr": lr, "tokens_per_s": summary["tokens_per_s"],
                                   "grad_norm": out.grad_norm}, total_steps=max_steps)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == max_steps:
            saved = ctx.save_checkpoint(job.checkpoint_dir, step + 1, model, optimizer, scheduler,
                                        extra={"summary": summary})
            ctx.report({"step": step + 1, "loss": out.loss}, saved)
        if job.on_step is not None:
            job.on_step(step + 1)
    full = ctx.full_model(model)  # FSDP: gathered from every rank's shards
    if full is not None:
        save_model(full, tokenizer, job.output_dir)
    summary.update(output_dir=job.output_dir, losses=losses)
    return summary


def train_sft(job: SFTJob, opts: LaunchOptions) -> dict[str, Any]:
    """Run the recipe; returns rank 0's final metrics (loss, per-step losses, tokens/s, output_dir)."""
    sh.refuse_lora("sft", job.model.lora_rank, opts.sharding if opts.num_workers > 1 else "none")
    Path(job.output_dir).mkdir(parents=True, exist_ok=True)
    return launch(sft_loop, job, opts)
