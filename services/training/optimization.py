"""AdamW with decoupled weight decay on matrices only, and the cosine schedule with linear warmup (Llama 2 §2.2)."""
from __future__ import annotations

import math

import torch


def build_adamw(model: torch.nn.Module, lr: float, weight_decay: float, betas: tuple[float, float],
                eps: float) -> torch.optim.AdamW:
    """Decay weight matrices and embeddings; RMSNorm gains (1-D) keep no decay, as in nanoGPT and Llama."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    # The fused kernel (one pass per tensor, ~5x the per-tensor Python loop on a 135M model, benchmarks/real_model.py)
    # where torch has it for plain tensors; FSDP's sharded DTensors take the per-tensor path. Both are elementwise,
    # so the bits do not depend on how tensors are grouped and a resumed run matches an unbroken one.
    fused = bool(params) and all(type(p) is torch.nn.Parameter and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, foreach=False, fused=fused or None)


def cosine_lr_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Share of the peak LR for optimizer step `step` (0-based): linear warmup, then cosine down to min_lr_ratio."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps  # the first step already moves the weights
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def capped_warmup(warmup_steps: int, total_steps: int, max_share: float = 0.1) -> int:
    """Warmup steps for a run of `total_steps`: the configured count, but at most `max_share` of the run. A short
    fine-tune (one iteration's rejection-sampling, GAtt or distillation samples: a few steps) would otherwise end
    inside its warmup and never train at the peak learning rate."""
    return min(warmup_steps, int(max_share * total_steps))


def cosine_with_warmup(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                       min_lr_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_lr_factor(step, warmup_steps, total_steps, min_lr_ratio))
