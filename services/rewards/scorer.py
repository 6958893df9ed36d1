"""Batched scoring API that later stages (rejection sampling, PPO, context distillation, evaluation) call.

`RewardScorer` wraps one RM: (prompt messages, response) -> sigmoid score in
(0, 1). `CombinedScorer` holds both judges and applies Llama 2's gate
(services/rewards/combine.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from alignline.services.models.chat import Message
from alignline.services.models.reward_model import RewardModel, load_reward_model

from .combine import combine_rewards, logit, whiten
from .encoding import encode_response, pad_batch


class RewardScorer:
    def __init__(self, model: RewardModel, tokenizer, device: str | torch.device = "cpu", batch_size: int = 16,
                 max_length: int | None = None):
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.max_length = max_length or model.config.max_position_embeddings

    @classmethod
    def from_folder(cls, folder: str | Path, device: str | torch.device = "cpu", batch_size: int = 16,
                    max_length: int | None = None) -> "RewardScorer":
        model, tokenizer = load_reward_model(folder, device=device)
        return cls(model, tokenizer, device, batch_size, max_length)

    @torch.no_grad()
    def raw_scores(self, prompts: Sequence[Sequence[Message]], responses: Sequence[str]) -> torch.Tensor:
        """The RM's scalar outputs (N,), before the sigmoid (what the ranking loss compares)."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        ids = [encode_response(self.tokenizer, p, r, self.max_length) for p, r in zip(prompts, responses)]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths together: less padding
        out = torch.empty(len(ids), dtype=torch.float32)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            x, mask = pad_batch([ids[i] for i in chunk], self.tokenizer.pad_token_id)  # (b, T) each
            out[chunk] = self.model(x.to(self.device), mask.to(self.device)).float().cpu()
        return out

    def score(self, prompts: Sequence[Sequence[Message]], responses: Sequence[str]) -> torch.Tensor:
        """Sigmoid scores (N,) in (0, 1), the scale of the paper's 0.15 safety threshold."""
        return torch.sigmoid(self.raw_scores(prompts, responses))


class CombinedScorer:
    """Both judges and the gate; satisfies the `Scorer` protocol."""

    def __init__(self, helpful: RewardScorer, safety: RewardScorer, threshold: float = 0.15):
        self.helpful, self.safety, self.threshold = helpful, safety, threshold

    def score(self, prompts: Sequence[Sequence[Message]], responses: Sequence[str],
              is_safety: Sequence[bool]) -> dict[str, torch.Tensor]:
        """helpful, safety, combined: (N,) in (0,1); reward: whiten(logit(combined)) over this batch (N,)."""
        r_h = self.helpful.score(prompts, responses)
        r_s = self.safety.score(prompts, responses)
        flags = torch.tensor(list(is_safety), dtype=torch.bool)
        combined = combine_rewards(r_h, r_s, flags, self.threshold)
        return {"helpful": r_h, "safety": r_s, "combined": combined, "reward": whiten(logit(combined))}
