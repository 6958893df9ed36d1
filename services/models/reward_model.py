"""Reward model (Llama 2 §3.2.2): the chat model's transformer with a scalar regression head in place of the LM head.

`RewardModel` is model code only (torch + the transformers `LlamaModel`); the
factory functions at the bottom build one from a policy, save it and load it
back from a local folder (the backbone in HF format, so `registered_folder`
finds its config.json, plus the head and the tokenizer).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel, PreTrainedTokenizerBase

HEAD_FILE = "reward_head.pt"
MARKER_FILE = "reward_model.json"


class RewardModel(nn.Module):
    def __init__(self, backbone: LlamaModel, head: nn.Linear | None = None):
        super().__init__()
        self.backbone = backbone
        # No bias: the ranking loss depends only on r_c - r_r, so a bias would never receive a gradient
        # (Llama 2 §3.2.2 loss; HF LlamaForSequenceClassification's `score` has none either).
        self.head = head if head is not None else nn.Linear(backbone.config.hidden_size, 1, bias=False)

    @property
    def config(self) -> LlamaConfig:
        return self.backbone.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask (B, T), left or right padded -> scores (B,), read at the last real token."""
        pooled = self.pooled(input_ids, attention_mask)                                       # (B, H)
        return self.head(pooled.to(self.head.weight.dtype)).squeeze(-1)                       # (B,)

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The trunk's final hidden state at the last real token, (B, H): what the head reads (and what
        trainable='head' caches once)."""
        # Positions count real tokens only, so a left-padded row sees the same RoPE positions as unpadded.
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)                   # (B, T)
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                               position_ids=position_ids).last_hidden_state                  # (B, T, H)
        index = torch.arange(input_ids.size(1), device=input_ids.device)
        last = (index * attention_mask.long()).argmax(-1)                                     # (B,) last real token
        return hidden[torch.arange(len(last), device=hidden.device), last]                    # (B, H)


def reward_model_from_policy(policy: LlamaForCausalLM, seed: int = 0, init_std: float | None = None) -> RewardModel:
    """Copy the policy's transformer (Llama 2 §3.2.2: RMs start from the chat model checkpoint, so they know what
    it knows) and put a freshly initialised scalar head where the LM head was."""
    backbone = LlamaModel(policy.config)
    backbone.load_state_dict(policy.model.state_dict())
    backbone.to(device=policy.device, dtype=policy.dtype)
    generator = torch.Generator().manual_seed(seed)  # same seed -> same head on every DDP rank
    head = nn.Linear(policy.config.hidden_size, 1, bias=False)
    std = init_std if init_std is not None else policy.config.initializer_range
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * std)
    return RewardModel(backbone, head.to(device=policy.device, dtype=policy.dtype))


def save_reward_model(rm: RewardModel, tokenizer: PreTrainedTokenizerBase, folder: str | Path) -> Path:
    """Backbone as a HF LlamaModel folder, head as a state dict, tokenizer beside them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rm = getattr(rm, "module", rm)  # unwrap DDP
    rm.backbone.save_pretrained(str(folder))
    torch.save(rm.head.state_dict(), folder / HEAD_FILE)
    tokenizer.save_pretrained(str(folder))
    (folder / MARKER_FILE).write_text(json.dumps({"kind": "reward_model", "head": HEAD_FILE,
                                                  "hidden_size": rm.config.hidden_size}))
    return folder


def is_reward_model_folder(folder: str | Path) -> bool:
    return (Path(folder) / MARKER_FILE).is_file()


def load_reward_model(folder: str | Path, device: str | torch.device = "cpu",
                      dtype: torch.dtype = torch.float32) -> tuple[RewardModel, PreTrainedTokenizerBase]:
    """(RewardModel in eval mode, tokenizer) from a folder written by `save_reward_model`."""
    from .factory import load_tokenizer

    folder = Path(folder)
    if not is_reward_model_folder(folder):
        raise FileNotFoundError(f"{str(folder)!r} is not a reward model folder (no {MARKER_FILE})")
    backbone = LlamaModel.from_pretrained(str(folder), dtype=dtype, local_files_only=True)
    rm = RewardModel(backbone)
    rm.head.load_state_dict(torch.load(folder / HEAD_FILE, map_location="cpu", weights_only=True))
    return rm.to(device=device, dtype=dtype).eval(), load_tokenizer(folder)
