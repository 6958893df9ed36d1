"""training: the pretraining, SFT and reward-model recipes, run in one process or on Ray Train workers.

Later recipes (rejection sampling, PPO, GAtt) reuse `launch`,
`optimizer_step`, the checkpoint helpers and the packing helpers.
"""
from .context_distillation import (ANSWER_TEMPLATES, DistillationResult, context_distillation_samples,
                                   keep_distilled, preprompt_for, with_preprompt)
from .gatt import (CONSTRAINTS, GAttDialogue, Instruction, gatt_training_dialogues, ghost_attention_dialogues,
                   instruction_adherence, repair_answers, sample_gatt_answers, sample_instruction)
from .ppo import PPOJob, PolicyWithValue, RewardModelFolders, gae, per_token_kl, ppo_launch_options, ppo_losses, shape_rewards, train_ppo
from .rejection_sampling import (POOL_SCHEMA, PromptSet, RejectionSamplingRound, best_of_k, rejection_sampling_round,
                                 training_dialogues)
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .launch import LaunchOptions, WorkerContext, launch
from .optimization import build_adamw, cosine_lr_factor, cosine_with_warmup
from .packing import PackedRows, pack_dialogues, pack_documents, step_rows
from .pretrain import PretrainJob, pretrain_loop, train_pretrain
from .sft import SFTJob, encode_sft_rows, sft_loop, total_sft_steps, train_sft, write_sft_rows
from .reward import (PairRows, RewardJob, drop_unusable, encode_pairs, margin_ranking_loss, margins_for, mix_helpfulness,
                     mix_safety, read_pairs, reward_loop, reward_warmup_steps, split_heldout, total_reward_steps,
                     train_reward, write_pairs)
from .step import StepResult, optimizer_step, token_loss_sum


__all__ = ["latest_checkpoint", "load_checkpoint", "save_checkpoint", "LaunchOptions", "WorkerContext", "launch",
           "build_adamw", "cosine_lr_factor", "cosine_with_warmup", "PackedRows", "pack_dialogues", "pack_documents",
           "step_rows", "drop_unusable", "PretrainJob", "pretrain_loop", "train_pretrain", "SFTJob", "encode_sft_rows", "sft_loop",
           "total_sft_steps", "train_sft", "write_sft_rows", "PairRows", "RewardJob", "encode_pairs",
           "margin_ranking_loss", "margins_for", "mix_helpfulness", "mix_safety", "read_pairs", "reward_loop",
           "reward_warmup_steps", "split_heldout", "total_reward_steps", "train_reward", "write_pairs", "StepResult",
           "optimizer_step", "token_loss_sum",
           "ANSWER_TEMPLATES", "DistillationResult", "context_distillation_samples", "keep_distilled", "preprompt_for",
           "with_preprompt", "CONSTRAINTS", "GAttDialogue", "Instruction", "gatt_training_dialogues",
           "ghost_attention_dialogues", "instruction_adherence", "repair_answers", "sample_gatt_answers", "sample_instruction", "PPOJob",
           "PolicyWithValue", "RewardModelFolders", "gae", "per_token_kl", "ppo_launch_options", "ppo_losses", "shape_rewards", "train_ppo",
           "POOL_SCHEMA", "PromptSet", "RejectionSamplingRound", "best_of_k", "rejection_sampling_round",
           "training_dialogues"]
