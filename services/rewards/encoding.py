"""Token ids of (prompt, response) for a reward model, and padded batches of them.

The RM reads the same Llama 2 chat text the policy writes: the prompt's turns,
then ` response </s>` (services/models/chat.py). Training and scoring share this
encoding, so a score at RLHF time means what it meant in training.
"""
from __future__ import annotations

from typing import Sequence

import torch

from alignline.services.models.chat import IGNORE_INDEX, Message, encode_dialogue


def encode_response(tokenizer, prompt: Sequence[Message], response: str, max_length: int) -> list[int]:
    """Ids of prompt + response; over `max_length`, the prompt loses tokens from its start (the answer and the
    latest turns matter most), and an answer that alone is too long keeps its start and at least
    a quarter of the budget for the prompt."""
    encoded = encode_dialogue(tokenizer, [*prompt, {"role": "assistant", "content": response}], train_on="last")
    first_answer = next(i for i, label in enumerate(encoded.labels) if label != IGNORE_INDEX)
    prompt_ids, answer_ids = encoded.input_ids[:first_answer], encoded.input_ids[first_answer:]
    if len(prompt_ids) + len(answer_ids) <= max_length:
        return encoded.input_ids
    answer_ids = answer_ids[: max_length - min(len(prompt_ids), max_length // 4)]
    keep = max_length - len(answer_ids)
    return (prompt_ids[-keep:] if keep else []) + answer_ids


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """-> input_ids, attention_mask (B, T) with T the longest sequence (dynamic padding)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        span = slice(width - len(s), width) if side == "left" else slice(0, len(s))
        ids[i, span] = torch.tensor(list(s), dtype=torch.long)
        mask[i, span] = 1
    return ids, mask
