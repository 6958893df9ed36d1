"""Model shapes: one Llama-architecture config per named preset (Llama 2 §2.2, Table 1)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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

    def validate(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"model.hidden_size = {self.hidden_size} is not allowed; allowed: a multiple of num_attention_heads ({self.num_attention_heads})")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(f"model.num_key_value_heads = {self.num_key_value_heads} is not allowed; allowed: a divisor of num_attention_heads ({self.num_attention_heads})")


def _llama2(hidden: int, inter: int, layers: int, heads: int, kv: int) -> dict:
    return {"vocab_size": 32000, "hidden_size": hidden, "intermediate_size": inter,
            "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": kv, "max_position_embeddings": 4096}


# Llama 2 Table 1 / the released HF configs.
PRESETS: dict[str, dict] = {
    "tiny": {},
    "small": {"vocab_size": 16384, "hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 8,
              "num_attention_heads": 8, "num_key_value_heads": 4, "max_position_embeddings": 1024},
    "llama2-7b": _llama2(4096, 11008, 32, 32, 32),
    "llama2-13b": _llama2(5120, 13824, 40, 40, 40),
    "llama2-70b": _llama2(8192, 28672, 80, 64, 8),
}
