"""rewards: the combined Llama 2 reward and the batched scoring API (the comparisons contract is `storage.schemas`)."""
from __future__ import annotations

from typing import Protocol, Sequence

import torch

from alignline.services.models.chat import Message

from .combine import combine_rewards, combined_reward, logit, whiten
from .encoding import encode_response, pad_batch
from .scorer import CombinedScorer, RewardScorer


class Scorer(Protocol):
    """Anything that scores responses for RLHF: `CombinedScorer`, or a rule-based scorer in tests.

    Returns at least `reward` (N,) (the value RLHF maximises); `CombinedScorer` also gives helpful, safety, combined.
    """

    def score(self, prompts: Sequence[Sequence[Message]], responses: Sequence[str],
              is_safety: Sequence[bool]) -> dict[str, torch.Tensor]: ...


__all__ = ["Scorer", "combine_rewards", "combined_reward", "logit", "whiten", "encode_response", "pad_batch",
           "CombinedScorer", "RewardScorer"]
