"""Batched sampling with a KV cache (the loop of meta-llama/llama `generation.py`, on transformers models).

Prompts are left-padded so every row's last prompt token sits in the last
column: one forward over the batch fills the cache (prefill), then each step
feeds one token per row. Rows stop at EOS; finished rows are fed the pad id
until all stop or `max_new_tokens` is reached. Later stages use this for
rejection-sampling and PPO rollouts, so it also returns each sampled token's
log-probability under the model (untempered).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import DynamicCache

from alignline.services.models.chat import Message, encode_prompt
from alignline.services.progress import Progress


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 64
    temperature: float = 1.0   # 0: greedy
    top_p: float = 1.0         # nucleus: smallest set of tokens whose probability reaches top_p
    seed: int | None = None


@dataclass(frozen=True)
class Generation:
    tokens: list[list[int]]      # new tokens per prompt, the EOS included when it was sampled
    logprobs: list[list[float]]  # log p(token) under the model at temperature 1, per new token


def sample_next(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    """logits (B, V) -> token ids (B,)."""
    if params.temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Drop a token when the tokens before it already reach top_p; the most likely one always stays.
        drop = sorted_probs.cumsum(-1) - sorted_probs > params.top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        choice = torch.multinomial(sorted_probs, 1, generator=generator)  # renormalises implicitly
        return order.gather(-1, choice).squeeze(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(model, prompts: Sequence[Sequence[int]], params: SamplingParams, pad_id: int, eos_id: int) -> Generation:
    """Sample continuations of every prompt in one batch."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(params.seed) if params.seed is not None else None
    batch, width = len(prompts), max(len(p) for p in prompts)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long, device=device)
    attention_mask = torch.zeros((batch, width), dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        input_ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        attention_mask[i, width - len(p):] = 1
    # RoPE positions count real tokens only, so a left-padded row sees the same positions as unpadded.
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (B, W)
    cache = DynamicCache()
    was_training = model.training
    model.eval()
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]  # (B, V)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    new_tokens, new_logprobs = [], []
    for _ in range(params.max_new_tokens):
        token = sample_next(logits, params, generator)
        token = torch.where(finished, torch.full_like(token, pad_id), token)
        logprob = torch.log_softmax(logits.float(), -1).gather(-1, token[:, None]).squeeze(-1)
        new_tokens.append(token)
        new_logprobs.append(logprob)
        finished |= token == eos_id
        if bool(finished.all()):
            break
        attention_mask = torch.cat([attention_mask, torch.ones((batch, 1), dtype=torch.long, device=device)], dim=1)
        position_ids = position_ids[:, -1:] + 1  # (B, 1)
        logits = model(input_ids=token[:, None], attention_mask=attention_mask, position_ids=position_ids,
                       cache=cache, use_cache=True).logits[:, -1]
    model.train(was_training)
    tokens = torch.stack(new_tokens, 1).tolist()      # (B, n)
    logprobs = torch.stack(new_logprobs, 1).tolist()
    out_tokens, out_logprobs = [], []
    for row, lps in zip(tokens, logprobs):
        n = row.index(eos_id) + 1 if eos_id in row else len(row)
        out_tokens.append(row[:n])
        out_logprobs.append(lps[:n])
    return Generation(out_tokens, out_logprobs)


def generate_chat(model, tokenizer, dialogues: Sequence[Sequence[Message]], params: SamplingParams,
                  batch_size: int = 16) -> list[str]:
    """Answers to dialogues that end with a user turn, in the tokenizer's chat format."""
    prompts = [encode_prompt(tokenizer, d) for d in dialogues]
    # Similar lengths together: less left padding per batch; answers are put back in input order.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[str] = [""] * len(prompts)
    # Progress only when there is more than one batch to wait for (evaluation calls this for many small sets).
    with Progress("generate", len(prompts), "answer", enabled=len(prompts) > batch_size) as shown:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            gen = generate(model, [prompts[i] for i in chunk], params, tokenizer.pad_token_id, tokenizer.eos_token_id)
            for i, toks in zip(chunk, gen.tokens):
                answers[i] = tokenizer.decode(toks, skip_special_tokens=True).strip()
            shown.advance(len(chunk))
    return answers
