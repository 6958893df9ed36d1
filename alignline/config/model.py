"""Model shapes: one Llama-architecture config per named preset (Llama 2 §2.2, Table 1)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .fields import ConfigError, setting


@dataclass(frozen=True)
class ModelConfig:
    checkpoint: Path | None = setting(None, "Local Hugging Face checkpoint folder to start from instead of training a base model (never a hub id).")
    vocab_size: int = setting(8192, "BPE vocabulary size of a tokenizer trained here.", source="Llama 2 §2.2: 32k", ge=256)
    hidden_size: int = setting(256, "Model width.", ge=8)
    intermediate_size: int = setting(688, "SwiGLU hidden width.", ge=8)
    num_hidden_layers: int = setting(4, "Transformer blocks.", ge=1)
    num_attention_heads: int = setting(8, "Query heads.", ge=1)
    num_key_value_heads: int = setting(2, "Key/value heads (grouped-query attention when smaller than num_attention_heads).", source="Llama 2 §2.2: GQA with 8 KV heads for 34B/70B", ge=1)
    max_position_embeddings: int = setting(512, "Context length.", source="Llama 2 §2.2: 4096", ge=16)
    rms_norm_eps: float = setting(1e-5, "RMSNorm epsilon (pre-norm).", source="Llama 2 HF configs", gt=0)
    rope_theta: float = setting(10000.0, "RoPE base.", source="Llama 2 §2.2 (RoPE)", gt=0)
    tie_word_embeddings: bool = setting(False, "Share input and output embeddings (Llama 2 does not).")
    # -- precision, memory, parameter-efficient training -------------------------------------------------------------
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = setting("auto", "Compute dtype. Training keeps float32 master weights and runs forward passes under autocast in this dtype; frozen models (reference policy, reward scorers, LoRA's frozen base) are held in it. 'auto': float32 on CPU, bfloat16 on CUDA.", source="Llama 2 §2.2 trained in bf16 mixed precision (Touvron et al. 2023a)")
    gradient_checkpointing: bool = setting(False, "Recompute each block's activations in backward instead of keeping them (about a third more compute, activation memory of one block per layer).", source="Chen et al. 2016; standard for 7B+ fine-tuning")
    lora_rank: int = setting(0, "LoRA rank r for policy and reward-model training (0: train all weights, the paper's way). Adapters are merged into the weights on save, so saved folders stay plain Hugging Face folders.", source="Hu et al. 2021 (LoRA); the paper fine-tunes all weights", ge=0, le=1024)
    lora_alpha: float = setting(16.0, "LoRA scale numerator: the update is (alpha / r) * B A.", source="Hu et al. 2021; peft default 8, common 16", gt=0)
    lora_dropout: float = setting(0.05, "Dropout on the LoRA branch's input.", source="Hu et al. 2021", ge=0, lt=1)
    gpu_memory_gib: float = setting(80.0, "Memory of one training GPU, for `alignline plan`.", source="A100/H100 80GB", gt=0, le=4096)
    memory_reserve: float = setting(0.1, "Share of GPU memory `alignline plan` keeps free for the CUDA context, NCCL buffers and allocator fragmentation.", source="common practice: 5-15%", ge=0, lt=1)
    lora_target_modules: tuple[str, ...] = setting(("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"), "Linear layers that get adapters (names in Llama, Mistral and Qwen2 blocks).", source="QLoRA (Dettmers et al. 2023): all linear layers")

    def validate(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"model.hidden_size = {self.hidden_size} is not allowed; allowed: a multiple of num_attention_heads ({self.num_attention_heads})")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(f"model.num_key_value_heads = {self.num_key_value_heads} is not allowed; allowed: a divisor of num_attention_heads ({self.num_attention_heads})")
        if self.lora_rank and not self.lora_target_modules:
            raise ConfigError("model.lora_target_modules = () is not allowed with lora_rank > 0; allowed: at least one module name")


def _llama2(hidden: int, inter: int, layers: int, heads: int, kv: int) -> dict:
    return {"vocab_size": 32000, "hidden_size": hidden, "intermediate_size": inter,
            "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": kv, "max_position_embeddings": 4096,
            # bf16 on CUDA ('auto') and activation recomputation: what lets the 4096-token batches fit 80 GB GPUs
            # (`alignline plan --preset llama2-70b`)
            "gradient_checkpointing": True}


# Llama 2 Table 1 / the released HF configs.
PRESETS: dict[str, dict] = {
    "tiny": {},
    "small": {"vocab_size": 16384, "hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 8,
              "num_attention_heads": 8, "num_key_value_heads": 4, "max_position_embeddings": 1024},
    "llama2-7b": _llama2(4096, 11008, 32, 32, 32),
    "llama2-13b": _llama2(5120, 13824, 40, 40, 40),
    "llama2-70b": _llama2(8192, 28672, 80, 64, 8),
}
