"""The one place models and tokenizers are built or loaded (like `Llama.build` in meta-llama/llama).

A model is the transformers `LlamaForCausalLM` (Llama 2 §2.2: pre-norm RMSNorm,
SwiGLU, RoPE, GQA through `num_key_value_heads`), built from a named preset or
read from a local Hugging Face folder. Nothing here ever contacts a hub.
"""
from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from alignline.config.model import ModelConfig

# Transformers must never try the network (no hub is reachable; a stray hub id must fail fast).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def llama_config(cfg: ModelConfig, vocab_size: int | None = None, tokenizer: PreTrainedTokenizerBase | None = None) -> LlamaConfig:
    """HF config for a preset; the tokenizer (when given) fixes vocabulary size and special ids."""
    ids = {}
    if tokenizer is not None:
        vocab_size = len(tokenizer)
        ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.pad_token_id}
    return LlamaConfig(
        vocab_size=vocab_size or cfg.vocab_size, hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads, num_key_value_heads=cfg.num_key_value_heads,
        max_position_embeddings=cfg.max_position_embeddings, rms_norm_eps=cfg.rms_norm_eps,
        rope_theta=cfg.rope_theta, tie_word_embeddings=cfg.tie_word_embeddings,
        hidden_act="silu", attention_bias=False, mlp_bias=False, attention_dropout=0.0, **ids)


def build_model(cfg: ModelConfig, *, vocab_size: int | None = None, tokenizer: PreTrainedTokenizerBase | None = None,
                device: str | torch.device = "cpu", seed: int = 0) -> LlamaForCausalLM:
    """A freshly initialised model; `device="meta"` gives shapes without memory (used for 7B-70B counts)."""
    config = llama_config(cfg, vocab_size, tokenizer)
    if str(device) == "meta":
        with torch.device("meta"):
            return LlamaForCausalLM(config)
    torch.manual_seed(seed)  # same seed -> same initial weights on every DDP rank
    return LlamaForCausalLM(config).to(device)


def load_model(folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> LlamaForCausalLM:
    """A Llama-architecture model saved with `save_pretrained` in a local folder."""
    folder = _local_folder(folder)
    return LlamaForCausalLM.from_pretrained(str(folder), dtype=dtype, local_files_only=True).to(device)


def load_tokenizer(folder: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved beside a model (ours, or a checkpoint's own with its chat_template)."""
    tok = AutoTokenizer.from_pretrained(str(_local_folder(folder)), local_files_only=True)
    if tok.pad_token is None:  # Llama checkpoints ship without one; reuse unk so pad != eos
        tok.pad_token = tok.unk_token or tok.eos_token
    tok.padding_side = "left"
    return tok


def save_model(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase, folder: str | Path) -> Path:
    """HF format folder (config, safetensors, tokenizer files): what the registry stores."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def model_config_of(model: LlamaForCausalLM) -> dict:
    """The shape fields of a loaded model, in `ModelConfig` terms (for run records)."""
    c = model.config
    keys = set(asdict(ModelConfig())) - {"checkpoint", "rope_theta"}
    return {k: getattr(c, k) for k in sorted(keys) if hasattr(c, k)}


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _local_folder(folder: str | Path) -> Path:
    path = Path(folder).expanduser()
    if not (path / "config.json").is_file() and not (path / "tokenizer.json").is_file() and not (path / "tokenizer_config.json").is_file():
        raise FileNotFoundError(f"{str(path)!r} is not a local Hugging Face model folder (no config.json or tokenizer files); "
                                "hub ids are not allowed")
    return path


def registered_folder(registry, name: str, version_or_alias: str, dest: str | Path):
    """(local HF folder, version info) of a registered model; 'latest' is champion, else candidate.

    `registry` is an `alignline.services.registry.Registry` (passed in; this module imports no client).
    """
    folder, info = registry.download(name, version_or_alias, dest)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"model {info.ref} has no config.json in its artifacts ({info.source})")
    return folder, info


def load_registered(registry, name: str, version_or_alias: str, dest: str | Path,
                    device: str | torch.device = "cpu"):
    """(model, tokenizer, version info) of a registered model version, downloaded once into `dest`."""
    folder, info = registered_folder(registry, name, version_or_alias, dest)
    return load_model(folder, device=device), load_tokenizer(folder), info
