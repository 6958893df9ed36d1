"""The one place models and tokenizers are built or loaded (like `Llama.build` in meta-llama/llama).

A model built here is the transformers `LlamaForCausalLM` (Llama 2 §2.2: pre-norm
RMSNorm, SwiGLU, RoPE, GQA through `num_key_value_heads`) from a named preset. A
model read from a local Hugging Face folder is whatever Llama-family causal LM its
config names (Llama 2/3, Mistral, Qwen2, SmolLM2), through `AutoModelForCausalLM`,
with the checkpoint's own tokenizer and chat template. Nothing here ever contacts a hub.

Precision (`model.dtype`): a model that trains keeps float32 master weights and runs
its forward under autocast in the compute dtype (mixed precision as in HF Trainer's
`bf16=True` and accelerate); a frozen model (reference policy, reward scorers, LoRA's
base) is simply held in the compute dtype.
"""
from __future__ import annotations

import functools
import os
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedModel,
                          PreTrainedTokenizerBase)

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


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str | torch.dtype | None, device: str | torch.device = "cpu") -> torch.dtype:
    """`model.dtype` -> torch dtype; 'auto' (or None) is float32 on CPU and bfloat16 on CUDA."""
    if isinstance(name, torch.dtype):
        return name
    if name in (None, "auto"):
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ValueError(f"model.dtype = {name!r} is not allowed; allowed: 'auto', {', '.join(map(repr, DTYPES))}")
    return DTYPES[name]


def load_model(folder: str | Path, device: str | torch.device = "cpu",
               dtype: str | torch.dtype | None = None) -> PreTrainedModel:
    """A Llama-family causal LM saved with `save_pretrained` in a local folder (the class comes from its config:
    LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, ...), its weights in `dtype` ('auto' by device)."""
    folder = _local_folder(folder)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=resolve_dtype(dtype, device), local_files_only=True)
    return model.to(device)


def load_for_training(folder: str | Path, cfg: ModelConfig, device: str | torch.device = "cpu") -> PreTrainedModel:
    """A model ready for a training recipe under `cfg`'s precision, memory and LoRA settings.

    Full training: float32 master weights, forward under autocast in `cfg.dtype`. LoRA (`cfg.lora_rank > 0`): the
    frozen base is held in `cfg.dtype`, adapters (float32) are the only trainable weights. Gradient checkpointing when
    asked. `save_model` merges adapters back, so what is saved is a plain HF folder.
    """
    from .lora import add_lora  # peft is imported only when LoRA is used

    compute = resolve_dtype(cfg.dtype, device)
    model = load_model(folder, device=device, dtype=compute if cfg.lora_rank else torch.float32)
    if cfg.lora_rank:
        add_lora(model, cfg)
    return prepare_for_training(model, cfg, device)


def prepare_for_training(model: torch.nn.Module, cfg: ModelConfig, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Gradient checkpointing and mixed-precision autocast on an already built model (policy, RM or policy+value)."""
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    compute = resolve_dtype(cfg.dtype, device)
    if compute != torch.float32:
        autocast_forward(model, torch.device(device).type, compute)
    return model


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Every HF transformer inside `model` recomputes block activations in backward (non-reentrant: works with
    frozen inputs, LoRA and DDP); the KV cache is off while training."""
    found = False
    for module in model.modules():
        if isinstance(module, PreTrainedModel) and module.supports_gradient_checkpointing:
            module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            module.config.use_cache = False
            found = True
    if not found:
        raise ValueError(f"model.gradient_checkpointing = true is not allowed for {type(model).__name__}; "
                         "allowed: a Hugging Face transformer that supports it")


def autocast_forward(model: torch.nn.Module, device_type: str, dtype: torch.dtype) -> None:
    """Run `model.forward` under autocast (accelerate's way of mixed precision): matmuls in `dtype`, weights, their
    gradients and the optimizer's state in float32; backward runs outside autocast, as torch advises."""
    if getattr(model.forward, "_alignline_autocast", None) == (device_type, dtype):
        return
    wrapped = torch.autocast(device_type=device_type, dtype=dtype)(model.forward)
    wrapped = functools.wraps(model.forward)(wrapped)
    wrapped._alignline_autocast = (device_type, dtype)
    model.forward = wrapped  # an instance attribute: nn.Module.__call__ (and DDP) call it


def compute_dtype_of(model: torch.nn.Module) -> torch.dtype:
    """The dtype matmuls run in: autocast's when `autocast_forward` wrapped the model, else the weights'."""
    marked = getattr(model.forward, "_alignline_autocast", None)
    return marked[1] if marked else next(model.parameters()).dtype


def load_tokenizer(folder: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved beside a model (ours, or a checkpoint's own with its chat_template)."""
    tok = AutoTokenizer.from_pretrained(str(_local_folder(folder)), local_files_only=True)
    if tok.pad_token is None:  # Llama checkpoints ship without one; reuse unk so pad != eos
        tok.pad_token = tok.unk_token or tok.eos_token
    tok.padding_side = "left"
    return tok


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: str | Path) -> Path:
    """HF format folder (config, safetensors, tokenizer files): what the registry stores. LoRA adapters are saved
    merged into the weights (the model itself keeps training unchanged), so the folder is plain HF."""
    from .lora import has_lora, merged_state_dict

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)  # unwrap DDP
    if getattr(model.config, "use_cache", True) is False:  # training switched the KV cache off; users want it on
        model.config.use_cache = True
    model.save_pretrained(str(folder), state_dict=merged_state_dict(model) if has_lora(model) else None)
    tokenizer.save_pretrained(str(folder))
    return folder


def model_config_of(model: LlamaForCausalLM) -> dict:
    """The shape fields of a loaded model, in `ModelConfig` terms (for run records)."""
    c = model.config
    keys = set(asdict(ModelConfig())) - {"checkpoint", "rope_theta", "dtype", "gradient_checkpointing", "lora_rank",
                                         "lora_alpha", "lora_dropout", "lora_target_modules"}
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
