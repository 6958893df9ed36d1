"""One optimizer step over a global batch: micro-batches, DDP, token-normalised loss, clipping."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from alignline.services.models.chat import IGNORE_INDEX

from .launch import WorkerContext


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over labelled positions. logits (B, T, V), labels (B, T)."""
    shift_logits = logits[:, :-1].reshape(-1, logits.size(-1))  # position t predicts token t+1
    shift_labels = labels[:, 1:].reshape(-1)
    loss = F.cross_entropy(shift_logits.float(), shift_labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, int((shift_labels != IGNORE_INDEX).sum())


@dataclass(frozen=True)
class StepResult:
    loss: float      # mean loss per labelled token over the global batch (all ranks)
    tokens: int      # non-pad input tokens processed, all ranks
    grad_norm: float


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, ctx: WorkerContext,
                   input_ids: torch.Tensor, labels: torch.Tensor, micro_batch_size: int, grad_clip: float,
                   pad_id: int) -> StepResult:
    """input_ids, labels: (b, T), this rank's share of the global batch.

    The loss is normalised by the labelled-token count of the *global* batch, so
    with SFT masks (ranks hold different numbers of answer tokens) N workers
    compute the same gradient as one process. DDP averages gradients over ranks,
    hence the `* world_size`.
    """
    local_count = int((labels[:, 1:] != IGNORE_INDEX).sum())
    global_count = max(1.0, ctx.all_reduce_sum(local_count))
    micro = max(1, micro_batch_size or len(input_ids))
    chunks = list(range(0, len(input_ids), micro))
    loss_total = 0.0
    for i, start in enumerate(chunks):
        x = input_ids[start:start + micro].to(ctx.device)
        y = labels[start:start + micro].to(ctx.device)
        # Only the last micro-batch syncs gradients across ranks.
        sync = contextlib.nullcontext() if i == len(chunks) - 1 or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            logits = model(input_ids=x).logits  # (m, T, V); causal attention, padding only at row ends
            loss_sum, _ = token_loss_sum(logits, y)
            (loss_sum * ctx.world_size / global_count).backward()
        loss_total += float(loss_sum.detach())
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    tokens = ctx.all_reduce_sum(int((input_ids != pad_id).sum()))
    return StepResult(ctx.all_reduce_sum(loss_total) / global_count, int(tokens), float(grad_norm))
