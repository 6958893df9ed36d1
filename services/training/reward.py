"""Reward-model recipe (Llama 2 §3.2.2): two judges, helpfulness and safety, trained with a margin ranking loss.

Each RM starts from the latest policy with a scalar head in place of the LM
head and trains 1 epoch on its own data mix: cosine LR down to 10% after a 3%
warmup (at least `min_warmup_steps`), AdamW, gradient clipping. Same structure
as the SFT recipe: setup -> resume -> loop -> save, in one process or on Ray
Train workers; the data order is a function of (seed, step), so a resumed run
reads exactly the batches the killed run would have read next. With `reward.sharding = "fsdp"` the RM trains
sharded (each decoder layer a unit, embeddings, final norm and scalar head in the root), checkpoints are sharded
(sharding.py) and the saved RM is gathered whole on rank 0.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from alignline.config.fields import ConfigError
from alignline.config.model import ModelConfig
from alignline.config.reward import MARGIN_TABLES, RewardConfig
from alignline.services.models.factory import load_tokenizer
from alignline.services.models.reward_model import (RewardModel, empty_reward_model, reward_model_for_training,
                                                     save_reward_model)
from alignline.services.rewards.encoding import encode_response
from alignline.storage.schemas import UNUSABLE_SAFETY_CATEGORIES, Comparison

from . import sharding as sh
from .launch import LaunchOptions, WorkerContext, launch
from .optimization import build_adamw, cosine_with_warmup
from .packing import step_rows
from alignline.services.tracking import MetricsLogger


# -- loss ------------------------------------------------------------------------------------------------------
def margin_ranking_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Llama 2 eq. 2: mean of -log(sigmoid(r_c - r_r - m(rating))). All (B,); m = 0 gives the plain
    binary ranking loss of InstructGPT. A larger margin asks for a larger gap on clearly better pairs."""
    return -F.logsigmoid(r_chosen - r_rejected - margin).mean()


def margins_for(levels: Sequence[str], table: str) -> np.ndarray:
    """m(rating) per pair from a named Table 27 margin table ('none', 'small', 'large')."""
    values = MARGIN_TABLES[table]
    return np.array([values[level] for level in levels], dtype=np.float32)


# -- data mixing (Llama 2 §3.2.2) ---------------------------------------------------------------------------------
def _rows(data: pa.Table | Sequence[dict]) -> list[dict]:
    return data.to_pylist() if isinstance(data, pa.Table) else list(data)


def _sample(pool: list[dict], n: int, seed: int) -> list[dict]:
    picks = np.random.default_rng(seed).permutation(len(pool))[: min(n, len(pool))]
    return [pool[i] for i in sorted(picks)]


def is_public(source: str, public_sources: Sequence[str]) -> bool:
    """'hh-rlhf' matches the source 'hh-rlhf' and 'hh-rlhf:<file>' (the importer's form)."""
    return any(source == p or source.startswith(p + ":") for p in public_sources)


def mix_helpfulness(data: pa.Table | Sequence[dict], extra_share: float, public_sources: Sequence[str] = ("hh-rlhf",),
                    seed: int = 0) -> tuple[list[dict], dict[str, int]]:
    """Helpfulness RM data: all own helpfulness pairs plus `extra_share` x as many pairs sampled uniformly from the
    own safety and the public (open-source) pairs (paper: an equal amount). Without own helpfulness pairs the
    public helpfulness pairs are the base. -> (rows, counts by part)."""
    rows = _rows(data)
    base = [r for r in rows if not r["is_safety"] and not is_public(r["source"], public_sources)]
    if not base:
        base = [r for r in rows if not r["is_safety"]]
    taken = {id(r) for r in base}
    pool = [r for r in rows if id(r) not in taken]
    extra = _sample(pool, round(extra_share * len(base)), seed)
    public = sum(1 for r in extra if is_public(r["source"], public_sources))
    counts = {"helpful": len(base), "extra_safety": len(extra) - public, "extra_public": public,
              "total": len(base) + len(extra)}
    return base + extra, counts


def mix_safety(data: pa.Table | Sequence[dict], helpful_share: float, seed: int = 0,
               public_sources: Sequence[str] = ("hh-rlhf",)) -> tuple[list[dict], dict[str, int]]:
    """Safety RM data: all safety pairs (own and public harmlessness, e.g. Anthropic Harmless) mixed with helpfulness
    pairs (own and public) so that these make `helpful_share` of the whole (paper: 90/10).
    -> (rows, counts by part; 'safety' counts all safety pairs, 'safety_public' the public ones among them)."""
    rows = _rows(data)
    base = [r for r in rows if r["is_safety"]]
    pool = [r for r in rows if not r["is_safety"]]
    extra = _sample(pool, round(len(base) * helpful_share / (1 - helpful_share)), seed)
    public = sum(1 for r in base if is_public(r["source"], public_sources))
    return base + extra, {"safety": len(base), "safety_public": public, "helpful": len(extra),
                          "total": len(base) + len(extra)}


def drop_unusable(rows: Sequence[Comparison]) -> tuple[list[Comparison], int]:
    """Llama 2 §3.2.1: no pairs whose chosen answer is unsafe and the other safe (annotators may record them; a
    harvest configured to keep them publishes them). -> (usable rows, how many were dropped)."""
    kept = [r for r in rows if r["safety_category"] not in UNUSABLE_SAFETY_CATEGORIES]
    return kept, len(rows) - len(kept)


def split_heldout(rows: Sequence[Comparison], share: float, seed: int = 0,
                  public_sources: Sequence[str] = ()) -> tuple[list[Comparison], list[Comparison]]:
    """(train, held-out) split by prompt: every pair of a prompt lands on the same side, and a pair keeps its side
    when the dataset grows (a hash of the prompt, not a permutation). Public pairs (`public_sources`) all train:
    the importer published their held-out prompts as a dataset of their own."""
    train, heldout = [], []
    for r in rows:
        if is_public(r["source"], public_sources):
            train.append(r)
            continue
        digest = hashlib.sha256(f"{seed}:{json.dumps(r['prompt'], sort_keys=True)}".encode()).digest()
        (heldout if int.from_bytes(digest[:8], "big") / 2**64 < share else train).append(r)
    return train, heldout


# -- encoded pairs -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairRows:
    chosen: np.ndarray         # (N, L) int64, right-padded with the pad id
    chosen_len: np.ndarray     # (N,) real tokens per row
    rejected: np.ndarray       # (N, L)
    rejected_len: np.ndarray   # (N,)
    margin: np.ndarray         # (N,) float32, m(rating)

    def __len__(self) -> int:
        return len(self.margin)


def encode_pairs(tokenizer, rows: Sequence[Comparison], margin_table: str, max_length: int) -> PairRows:
    def pad(seqs: list[list[int]], width: int) -> tuple[np.ndarray, np.ndarray]:
        out = np.full((len(seqs), width), tokenizer.pad_token_id, dtype=np.int64)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = s
        return out, np.array([len(s) for s in seqs], dtype=np.int64)

    if not rows:
        raise ValueError("no comparison pairs to encode")
    chosen = [encode_response(tokenizer, r["prompt"], r["chosen"], max_length) for r in rows]
    rejected = [encode_response(tokenizer, r["prompt"], r["rejected"], max_length) for r in rows]
    width = max(len(s) for s in chosen + rejected)  # one width for both sides: they share a forward
    (c, c_len), (r, r_len) = pad(chosen, width), pad(rejected, width)
    return PairRows(c, c_len, r, r_len, margins_for([row["margin_level"] for row in rows], margin_table))


def write_pairs(pairs: PairRows, path: str | Path) -> str:
    np.savez(path, chosen=pairs.chosen, chosen_len=pairs.chosen_len, rejected=pairs.rejected,
             rejected_len=pairs.rejected_len, margin=pairs.margin)
    return str(path)


def read_pairs(path: str | Path) -> PairRows:
    data = np.load(path)
    return PairRows(data["chosen"], data["chosen_len"], data["rejected"], data["rejected_len"], data["margin"])


# -- the recipe ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RewardJob:
    train: RewardConfig
    policy_dir: str           # HF folder of the policy the RM starts from (and its tokenizer)
    pairs_path: str           # .npz from `write_pairs`
    output_dir: str
    checkpoint_dir: str
    tracking_uri: str | None = None
    run_id: str | None = None
    on_step: Callable[[int], None] | None = None
    model: ModelConfig = ModelConfig()  # dtype, gradient checkpointing, LoRA (the flow passes cfg.model)
    INPUTS: ClassVar[tuple[str, ...]] = ("policy_dir", "pairs_path")  # shipped to workers on other nodes (launch.py)
    OUTPUTS: ClassVar[tuple[str, ...]] = ("output_dir",)              # fetched back from rank 0's node


def total_reward_steps(num_pairs: int, cfg: RewardConfig, epochs: int | None = None) -> int:
    """Whole global batches in `epochs` passes (default cfg.epochs; the last partial batch is dropped so every
    rank gets pairs)."""
    return max(1, (cfg.epochs if epochs is None else epochs) * num_pairs // cfg.batch_size)


def reward_warmup_steps(total_steps: int, cfg: RewardConfig) -> int:
    """Llama 2 §3.2.2: 3% of the steps, but at least `min_warmup_steps` (and never more than all of them)."""
    return min(total_steps, max(cfg.min_warmup_steps, math.ceil(cfg.warmup_ratio * total_steps)))


# -- what trains (reward.trainable) ------------------------------------------------------------------------------
def freeze_for(model: RewardModel, trainable: str, top_layers: int = 1) -> int:
    """'all' trains every weight (Llama 2 §3.2.2); 'top_layers' the top `top_layers` blocks, the final norm and the
    head; 'head' the head only. Frozen weights get requires_grad=False, so no graph is kept below the first
    trainable block. -> number of trainable parameters."""
    if trainable not in ("all", "head", "top_layers"):
        raise ValueError(f"reward.trainable = {trainable!r} is not allowed; allowed: 'all', 'head', 'top_layers'")
    if trainable != "all":
        model.backbone.requires_grad_(False)
    if trainable == "top_layers":
        blocks = model.backbone.layers
        if top_layers > len(blocks):
            raise ValueError(f"reward.trainable_top_layers = {top_layers} is not allowed; allowed: 1..{len(blocks)}")
        for block in blocks[len(blocks) - top_layers:]:
            block.requires_grad_(True)
        model.backbone.norm.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_reward_sharding(cfg: RewardConfig, model_cfg: ModelConfig, sharding: str) -> None:
    """FSDP shards a reward model that trains as a whole or from its top blocks up. Refused: trainable='head' (a
    linear head on cached trunk states: nothing worth sharding, and the trunk pass would bypass the FSDP root) and
    LoRA (adapters inside sharded blocks would need their own merge on the gathered model)."""
    if sharding != "fsdp":
        return
    if cfg.trainable == "head":
        raise ConfigError("reward.sharding = 'fsdp' is not allowed with reward.trainable = 'head'; allowed: "
                          "reward.sharding = 'none' (the head alone is small), or reward.trainable = 'all' / 'top_layers'")
    sh.refuse_lora("reward", model_cfg.lora_rank, sharding)


@dataclass(frozen=True)
class PairFeatures:
    """Frozen-trunk states at the last real token (trainable='head'): (N, H) for each side."""
    chosen: torch.Tensor
    rejected: torch.Tensor


def _pairs_digest(pairs: PairRows) -> str:
    h = hashlib.sha256()
    for a in (pairs.chosen, pairs.chosen_len, pairs.rejected, pairs.rejected_len):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def trunk_features(model: RewardModel, pairs: PairRows, batch_size: int, device: torch.device) -> PairFeatures:
    """One forward of the frozen trunk per answer, rows of similar length batched together (less padding)."""
    model.eval()
    out = []
    for ids, lengths in ((pairs.chosen, pairs.chosen_len), (pairs.rejected, pairs.rejected_len)):
        feats = torch.empty(len(lengths), model.config.hidden_size, dtype=torch.float32)
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            x, mask = _side(ids, lengths, chunk, int(lengths[chunk].max()))
            feats[torch.from_numpy(chunk)] = model.pooled(x.to(device), mask.to(device)).float().cpu()
        out.append(feats)
    return PairFeatures(*out)


def cached_trunk_features(model: RewardModel, pairs: PairRows, batch_size: int, device: torch.device,
                          cache_dir: str | Path) -> tuple[PairFeatures, float]:
    """`trunk_features`, kept in `cache_dir` (keyed by the encoded pairs) so a resumed run does not recompute
    them. -> (features, seconds spent computing; 0 when read from the cache)."""
    path = Path(cache_dir) / f"trunk-features-{_pairs_digest(pairs)}.pt"
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        return PairFeatures(saved["chosen"], saved["rejected"]), 0.0
    t0 = time.perf_counter()
    feats = trunk_features(model, pairs, batch_size, device)
    seconds = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"chosen": feats.chosen, "rejected": feats.rejected}, tmp)
    os.replace(tmp, path)
    return feats, seconds


def _side(ids: np.ndarray, lengths: np.ndarray, batch: np.ndarray, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(ids[batch, :width])                                                    # (m, W)
    mask = (torch.arange(width)[None, :] < torch.from_numpy(lengths[batch])[:, None]).long()     # (m, W)
    return x, mask


def pair_step(model: torch.nn.Module, pairs: PairRows, batch: np.ndarray, ctx: WorkerContext, global_pairs: int,
              micro_batch_size: int, features: PairFeatures | None = None) -> tuple[float, int, float]:
    """Forward/backward of this rank's pairs in micro-batches -> (loss sum, correct pairs, gap sum).

    Chosen and rejected answers go through one forward, (2m, W). The loss is normalised by the pairs of the global
    batch; DDP averages gradients over ranks, hence `* world_size` (same as SFT's optimizer_step). With `features`
    (trainable='head') `model` is the head and reads the cached trunk states, (2m, H), instead of tokens.
    An FSDP model reduce-scatters after every micro-batch: syncing only the last would hold whole unsharded
    gradients through the accumulation, the memory FSDP is there to save.
    """
    micro = max(1, micro_batch_size or len(batch))
    chunks = [batch[i:i + micro] for i in range(0, len(batch), micro)]
    loss_sum, correct, gap_sum = 0.0, 0, 0.0
    for i, chunk in enumerate(chunks):
        if features is None:
            width = int(max(pairs.chosen_len[chunk].max(), pairs.rejected_len[chunk].max()))  # dynamic padding
            xc, mc = _side(pairs.chosen, pairs.chosen_len, chunk, width)
            xr, mr = _side(pairs.rejected, pairs.rejected_len, chunk, width)
        margin = torch.from_numpy(pairs.margin[chunk]).to(ctx.device)                        # (m,)
        last = i == len(chunks) - 1
        sync = model.no_sync() if not last and hasattr(model, "no_sync") else contextlib.nullcontext()
        with sync:
            if features is None:
                scores = model(torch.cat([xc, xr]).to(ctx.device), torch.cat([mc, mr]).to(ctx.device)).float()  # (2m,)
            else:
                index = torch.from_numpy(chunk)
                h = torch.cat([features.chosen[index], features.rejected[index]]).to(ctx.device)   # (2m, H)
                scores = model(h.to(next(model.parameters()).dtype)).squeeze(-1).float()              # (2m,)
            r_c, r_r = scores[: len(chunk)], scores[len(chunk):]                                           # (m,) each
            loss = margin_ranking_loss(r_c, r_r, margin) * len(chunk)
            (loss * ctx.world_size / global_pairs).backward()
        loss_sum += float(loss.detach())
        correct += int((r_c > r_r).sum())
        gap_sum += float((r_c - r_r).sum().detach())
    return loss_sum, correct, gap_sum


def reward_loop(job: RewardJob, ctx: WorkerContext) -> dict[str, Any]:
    cfg = job.train
    check_reward_sharding(cfg, job.model, ctx.sharding if ctx.sharded else "none")
    # setup: the policy's transformer + a scalar head (Llama 2 §3.2.2); the same seed gives every rank the same head
    tokenizer = load_tokenizer(job.policy_dir)
    # LoRA (model.lora_rank > 0) only when every weight would train; 'head'/'top_layers' freeze the trunk themselves
    model: RewardModel = reward_model_for_training(job.policy_dir, job.model, ctx.device, seed=cfg.seed,
                                                   lora=cfg.trainable == "all")
    pairs = read_pairs(job.pairs_path)
    trainable_params = freeze_for(model, cfg.trainable, cfg.trainable_top_layers)
    model = ctx.shard(model)  # FSDP: each decoder layer a unit, embeddings, final norm and scalar head in the root
    # trainable='head': the trunk never changes, so its last-token states are computed once and the head trains on
    # them for `head_epochs` passes (each rank computes all rows: they are cached, and any rank may draw any row)
    features, feature_seconds = (cached_trunk_features(model, pairs, cfg.eval_batch_size, ctx.device, job.checkpoint_dir)
                                 if cfg.trainable == "head" else (None, 0.0))
    head_mode = features is not None
    max_steps = total_reward_steps(len(pairs), cfg, epochs=cfg.head_epochs if head_mode else cfg.epochs)
    optimizer = build_adamw(model, cfg.head_learning_rate if head_mode else cfg.learning_rate, cfg.weight_decay,
                            (cfg.adam_beta1, cfg.adam_beta2), cfg.adam_eps)
    scheduler = cosine_with_warmup(optimizer, reward_warmup_steps(max_steps, cfg), max_steps, cfg.min_lr_ratio)
    # resume: Ray's restored checkpoint after a worker failure, else the newest one on disk
    resume_from = ctx.restored_checkpoint() or ctx.latest_checkpoint(job.checkpoint_dir)
    start = ctx.load_checkpoint(resume_from, model, optimizer, scheduler) if resume_from else 0
    ddp_model = ctx.wrap(model.head if head_mode else model)
    ddp_model.train()
    metrics = MetricsLogger(job.tracking_uri, job.run_id) if ctx.is_main else MetricsLogger(None, None)
    summary: dict[str, Any] = {**ctx.checkpoint_extra(resume_from).get("summary", {}),
                               "resumed_from_step": start, "max_steps": max_steps, "pairs": len(pairs),
                               "train_pairs": 0, "train_seconds": 0.0, "trainable": cfg.trainable,
                               "trainable_params": trainable_params, "feature_seconds": feature_seconds}
    losses: list[float] = []
    step_seconds: list[float] = []
    for step in range(start, max_steps):
        t0 = time.perf_counter()
        batch = step_rows(len(pairs), cfg.batch_size, step, cfg.seed)[ctx.rank::ctx.world_size]
        lr = scheduler.get_last_lr()[0]
        loss_sum, correct, gap_sum = pair_step(ddp_model, pairs, batch, ctx, cfg.batch_size, cfg.micro_batch_size,
                                               features)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(ddp_model.parameters(), cfg.grad_clip))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss = ctx.all_reduce_sum(loss_sum) / cfg.batch_size
        accuracy = ctx.all_reduce_sum(correct) / cfg.batch_size
        gap = ctx.all_reduce_sum(gap_sum) / cfg.batch_size
        seconds = time.perf_counter() - t0
        losses.append(loss)
        step_seconds.append(seconds)
        summary.update(step=step + 1, loss=loss, accuracy=accuracy, lr=lr, pairs_per_s=cfg.batch_size / seconds)
        summary["train_pairs"] += cfg.batch_size
        summary["train_seconds"] += seconds
        if (step + 1) % cfg.log_every == 0 or step == start or step + 1 == max_steps:
            metrics.log(step + 1, {"loss": loss, "accuracy": accuracy, "reward_gap": gap, "lr": lr,
                                   "pairs_per_s": summary["pairs_per_s"], "grad_norm": grad_norm}, total_steps=max_steps)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == max_steps:
            saved = ctx.save_checkpoint(job.checkpoint_dir, step + 1, model, optimizer, scheduler,
                                        extra={"summary": summary})  # FSDP: every rank writes its shards
            ctx.report({"step": step + 1, "loss": loss}, saved)
        if job.on_step is not None:
            job.on_step(step + 1)
    full = ctx.full_model(model, build=lambda: empty_reward_model(model.config))  # FSDP: gathered from the shards
    if full is not None:
        save_reward_model(full, tokenizer, job.output_dir)
    summary.update(output_dir=job.output_dir, losses=losses, step_seconds=step_seconds,
                   pairs_per_s_mean=summary["train_pairs"] / max(summary["train_seconds"], 1e-9))
    if head_mode:  # the honest rate: every pair's trunk forward plus the head's passes, per distinct pair
        summary["pairs_per_s_mean"] = len(pairs) / max(summary["train_seconds"] + summary["feature_seconds"], 1e-9)
    return summary


def train_reward(job: RewardJob, opts: LaunchOptions) -> dict[str, Any]:
    """Run the recipe; returns rank 0's final metrics (loss, accuracy, per-step losses, pairs/s, output_dir)."""
    check_reward_sharding(job.train, job.model, opts.sharding if opts.num_workers > 1 else "none")
    Path(job.output_dir).mkdir(parents=True, exist_ok=True)
    return launch(reward_loop, job, opts)
