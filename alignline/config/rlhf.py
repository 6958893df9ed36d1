"""Iterative RLHF settings: rejection sampling, PPO, GAtt, context distillation (Llama 2 §3.2.3, §3.3, §4.2.4)."""
from __future__ import annotations

from dataclasses import dataclass

from .fields import setting


@dataclass(frozen=True)
class RLHFConfig:
    kl_beta: float = setting(0.01, "KL penalty against the SFT policy.", source="Llama 2 §3.2.3: 0.01 (7B/13B), 0.005 (34B/70B)", ge=0)
    rs_samples: int = setting(4, "K answers sampled per prompt for rejection sampling.", source="Llama 2 §3.2.3: 10-100", ge=1)
    rs_temperature: float = setting(1.2, "Sampling temperature for rejection sampling.", source="Llama 2 Fig. 8: best 1.2-1.3", gt=0)
    rs_pool_all_iterations: bool = setting(True, "Pool the best samples of all earlier iterations.", source="Llama 2 §3.2.3")
    top_p: float = setting(1.0, "Nucleus sampling mass.", gt=0, le=1)
    max_new_tokens: int = setting(64, "Answer length limit during rollouts.", ge=1)
    rollout_actors: int = setting(1, "Ray generation actors.", ge=1)
    ppo_enabled: bool = setting(False, "Run PPO after rejection sampling.")
    ppo_learning_rate: float = setting(1e-5, "Constant PPO learning rate.", source="Llama 2 §3.2.3: 1e-6", gt=0)
    ppo_adam_beta1: float = setting(0.9, "AdamW beta1.", source="Llama 2 §3.2.3", ge=0, lt=1)
    ppo_adam_beta2: float = setting(0.95, "AdamW beta2.", source="Llama 2 §3.2.3", ge=0, lt=1)
    ppo_adam_eps: float = setting(1e-5, "AdamW epsilon.", source="Llama 2 §3.2.3", gt=0)
    ppo_weight_decay: float = setting(0.1, "AdamW weight decay.", source="Llama 2 §3.2.3", ge=0)
    ppo_grad_clip: float = setting(1.0, "Gradient norm clip.", source="Llama 2 §3.2.3", gt=0)
    ppo_batch_size: int = setting(32, "Rollouts per PPO iteration.", source="Llama 2 §3.2.3: 512", ge=1)
    ppo_minibatch_size: int = setting(8, "Minibatch for each gradient step.", source="Llama 2 §3.2.3: 64", ge=1)
    ppo_clip: float = setting(0.2, "PPO ratio clip.", source="Llama 2 §3.2.3: 0.2", gt=0)
    ppo_epochs: int = setting(1, "Passes over each PPO batch.", ge=1)
    ppo_iterations: int = setting(10, "PPO iterations.", source="Llama 2 §3.2.3: 200-400", ge=1)
    gae_gamma: float = setting(1.0, "GAE discount.", ge=0, le=1)
    gae_lambda: float = setting(0.95, "GAE lambda.", ge=0, le=1)
    gatt_enabled: bool = setting(False, "Ghost Attention dialogues after RS/PPO.")
    context_distillation_enabled: bool = setting(False, "Safety context distillation after RS/PPO.")
    safety_preprompt: str = setting("You are a safe and responsible assistant.", "Generic safety preprompt.", source="Llama 2 §4.2.4")


_PAPER = {"rs_samples": 10, "ppo_learning_rate": 1e-6, "ppo_batch_size": 512, "ppo_minibatch_size": 64,
          "ppo_iterations": 200, "max_new_tokens": 512, "ppo_enabled": True}
PRESETS: dict[str, dict] = {"llama2-7b": _PAPER, "llama2-13b": _PAPER, "llama2-70b": {**_PAPER, "kl_beta": 0.005}}
