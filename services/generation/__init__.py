"""generation: batched sampling with a KV cache (temperature, top-p, max new tokens, stop at EOS, left padding)."""
from .sampling import Generation, SamplingParams, generate, generate_chat, sample_next

__all__ = ["Generation", "SamplingParams", "generate", "generate_chat", "sample_next"]
