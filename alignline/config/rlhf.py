"""Iterative RLHF settings: rejection sampling, PPO, GAtt, context distillation (Llama 2 §3.2.3, §3.3, §4.2.4)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .fields import setting


@dataclass(frozen=True)
class RLHFConfig:
    # -- inputs -------------------------------------------------------------------------------------------------------
    policy_model: str = setting("policy", "Registered policy the iteration starts from (its latest version: champion, else candidate).")
    helpful_rm: str = setting("rm-helpfulness", "Registered helpfulness reward model.", source="Llama 2 §3.2.2")
    safety_rm: str = setting("rm-safety", "Registered safety reward model.", source="Llama 2 §3.2.2")
    rm_version: str = setting("candidate", "Version or alias of both reward models ('latest': champion, else candidate).")
    prompts_dataset: str = setting("prompts", "Catalog dataset of RLHF prompts (id, prompt, is_safety); built from the default SFT set when absent.")
    max_prompts: int = setting(64, "Prompts used per iteration (0: all).", ge=0)
    heldout_prompts: int = setting(8, "Prompts held out for PPO early stopping.", source="Llama 2 §3.2.3: early stop on held-out prompts", ge=1)
    seed: int = setting(0, "Seed for sampling and data order.")
    # -- combined reward ------------------------------------------------------------------------------------------------
    kl_beta: float = setting(0.01, "KL penalty against the SFT policy.", source="Llama 2 §3.2.3: 0.01 (7B/13B), 0.005 (34B/70B)", ge=0)
    # -- rollouts -------------------------------------------------------------------------------------------------------
    top_p: float = setting(1.0, "Nucleus sampling mass.", gt=0, le=1)
    max_new_tokens: int = setting(64, "Answer length limit during rollouts.", ge=1)
    rollout_actors: int = setting(1, "Ray generation actors for rejection sampling, GAtt and distillation (0: sample in this process).", ge=0)
    rollout_batch_size: int = setting(16, "Sequences per generation batch (KV cache) on one actor.", ge=1)
    cpus_per_actor: float = setting(1.0, "CPUs Ray reserves per generation actor.", gt=0)
    # -- rejection sampling -----------------------------------------------------------------------------------------------
    rs_samples: int = setting(4, "K answers sampled per prompt for rejection sampling.", source="Llama 2 §3.2.3: 10-100", ge=1)
    rs_temperature: float = setting(1.2, "Sampling temperature for rejection sampling.", source="Llama 2 Fig. 8: best 1.2-1.3", gt=0)
    rs_pool_all_iterations: bool = setting(True, "Pool the best samples of all earlier iterations.", source="Llama 2 §3.2.3")
    rs_pool_dataset: str = setting("rs-pool", "Catalog dataset holding the best-ever sample per prompt.")
    finetune_epochs: int = setting(2, "Passes of the SFT recipe over each stage's samples (rejection sampling's best answers, GAtt dialogues, distilled safety answers); the rest of the recipe is sft.*.", source="Llama 2 §3.2.3: RS samples are fine-tuned on as in SFT (§3.1: 2 epochs)", ge=1)
    # -- PPO ------------------------------------------------------------------------------------------------------------
    ppo_enabled: bool = setting(False, "Run PPO after rejection sampling.")
    ppo_reference: Literal["sft", "iteration_start"] = setting(
        "sft", "Policy the KL penalty is taken against: the SFT model pi_0 of the policy's lineage in every iteration "
        "(the paper), or the policy this iteration started from.", source="Llama 2 §3.2.3, eq. 3: KL to pi_0")
    ppo_learning_rate: float = setting(1e-5, "Constant PPO learning rate.", source="Llama 2 §3.2.3: 1e-6", gt=0)
    ppo_adam_beta1: float = setting(0.9, "AdamW beta1.", source="Llama 2 §3.2.3", ge=0, lt=1)
    ppo_adam_beta2: float = setting(0.95, "AdamW beta2.", source="Llama 2 §3.2.3", ge=0, lt=1)
    ppo_adam_eps: float = setting(1e-5, "AdamW epsilon.", source="Llama 2 §3.2.3", gt=0)
    ppo_weight_decay: float = setting(0.1, "AdamW weight decay.", source="Llama 2 §3.2.3", ge=0)
    ppo_grad_clip: float = setting(1.0, "Gradient norm clip.", source="Llama 2 §3.2.3", gt=0)
    ppo_batch_size: int = setting(32, "Rollouts per PPO iteration (all workers).", source="Llama 2 §3.2.3: 512", ge=1)
    ppo_minibatch_size: int = setting(8, "Rollouts per gradient step (all workers).", source="Llama 2 §3.2.3: 64", ge=1)
    ppo_clip: float = setting(0.2, "PPO ratio clip (also clips the value update).", source="Llama 2 §3.2.3: 0.2", gt=0)
    ppo_epochs: int = setting(1, "Passes over each PPO batch.", ge=1)
    ppo_iterations: int = setting(10, "PPO iterations.", source="Llama 2 §3.2.3: 200-400", ge=1)
    ppo_temperature: float = setting(1.0, "Sampling temperature of PPO rollouts (1: on-policy log-probs).", gt=0)
    ppo_value_coef: float = setting(0.1, "Weight of the value loss (shared trunk, value head).", ge=0)
    ppo_entropy_coef: float = setting(0.0, "Entropy bonus weight (0: entropy is only logged).", ge=0)
    ppo_checkpoint_every: int = setting(5, "PPO iterations between resumable checkpoints (policy, value head, optimizer, early-stopping state).", ge=1)
    ppo_eval_every: int = setting(2, "PPO iterations between held-out reward evaluations.", ge=1)
    ppo_patience: int = setting(3, "Evaluations without a better held-out reward before PPO stops early.", source="Llama 2 §3.2.3", ge=1)
    gae_gamma: float = setting(1.0, "GAE discount.", ge=0, le=1)
    gae_lambda: float = setting(0.95, "GAE lambda.", ge=0, le=1)
    use_ray: bool = setting(True, "Run PPO under Ray Train TorchTrainer; false runs the same loop in this process.")
    num_workers: int = setting(1, "Ray Train workers for PPO (each samples its share of the batch).", ge=1)
    cpus_per_worker: float = setting(1.0, "CPUs Ray reserves per PPO worker.", gt=0)
    use_gpu: bool = setting(False, "PPO and generation actors on GPUs.")
    sharding: Literal["none", "fsdp"] = setting("none", "How the PPO workers hold the models: 'none' (DDP, a whole copy each) or 'fsdp' (FSDP2: the trained policy and value head with their gradients and AdamW state, and the frozen reference policy and reward models, sharded over the workers, for models a worker cannot hold whole; sharded checkpoints). FSDP needs model.lora_rank=0.")
    # -- Ghost Attention ------------------------------------------------------------------------------------------------
    gatt_enabled: bool = setting(False, "Ghost Attention dialogues after RS/PPO.", source="Llama 2 §3.3")
    gatt_dialogues: int = setting(32, "Synthetic multi-turn dialogues per iteration.", ge=1)
    gatt_turns: int = setting(3, "User turns per synthetic dialogue.", ge=1)
    gatt_repair: bool = setting(True, "Sampled GAtt answers that break their instruction are edited by the instruction's own rules (add the first or last word, capitals, cut to the word limit, replace a banned word) before training; off: trained as sampled. The paper samples from a model that mostly follows instructions already; a small model mostly does not.", source="Llama 2 §3.3 (samples from the latest RLHF model)")
    gatt_eval_dialogues: int = setting(8, "Dialogues for the instruction-adherence metric.", source="Llama 2 Table 30", ge=1)
    gatt_eval_turns: tuple[int, ...] = setting((2, 4, 6, 8), "Turns at which instruction adherence is measured, with and without GAtt.", source="Llama 2 Table 30")
    gatt_eval_max_new_tokens: int = setting(32, "Answer length limit of the greedy answers the adherence metric reads (each of up to max(gatt_eval_turns) turns carries every earlier answer, so long answers make the 8th turn's context long).", ge=1)
    # -- safety context distillation --------------------------------------------------------------------------------------
    context_distillation_enabled: bool = setting(False, "Safety context distillation after RS/PPO.", source="Llama 2 §4.2.4")
    safety_preprompt: str = setting("You are a safe and responsible assistant.", "Generic safety preprompt.", source="Llama 2 §4.2.4")
    context_distillation_prompts: int = setting(32, "Adversarial prompts distilled per iteration: the safety prompts of the RLHF set (its training side) and of the red-team set, when there is one (0: all).", source="Llama 2 §4.2.4", ge=0)
    redteam_dataset: str = setting("prompts-redteam", "Catalog dataset of reviewed red-team prompts (with risk categories) that context distillation also reads, when it exists.", source="Llama 2 §4.3")
    use_answer_templates: bool = setting(True, "Use the per-risk-category answer template when a prompt has a category (works better).", source="Llama 2 §4.2.4, Table 39")


_PAPER = {"rs_samples": 10, "ppo_learning_rate": 1e-6, "ppo_batch_size": 512, "ppo_minibatch_size": 64,
          "ppo_iterations": 200, "max_new_tokens": 512, "ppo_enabled": True, "gatt_enabled": True,
          "context_distillation_enabled": True, "max_prompts": 0, "use_gpu": True, "heldout_prompts": 256,
          "gatt_turns": 6}
# PPO workers (GPUs) per preset and FSDP (policy, value head, reference and both RMs sharded) so each fits 80 GB
# GPUs: `alignline plan --preset P --stage ppo`
PRESETS: dict[str, dict] = {"llama2-7b": {**_PAPER, "num_workers": 8, "sharding": "fsdp"},
                            "llama2-13b": {**_PAPER, "num_workers": 8, "sharding": "fsdp"},
                            "llama2-70b": {**_PAPER, "kl_beta": 0.005, "num_workers": 64, "sharding": "fsdp"}}
