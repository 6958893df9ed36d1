"""generation: batched sampling with a KV cache (temperature, top-p, max new tokens, stop at EOS, left padding),
and rollouts (K samples per prompt) in this process or on Ray actors."""
from .rollouts import Rollout, RolloutPool, RolloutWorker, sample_rollouts
from .sampling import Generation, SamplingParams, generate, generate_chat, sample_next

__all__ = ["Generation", "SamplingParams", "generate", "generate_chat", "sample_next", "Rollout", "RolloutPool",
           "RolloutWorker", "sample_rollouts"]
