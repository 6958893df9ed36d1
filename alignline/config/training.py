"""Optimisation settings of the pretraining and SFT recipes (Llama 2 §2.2, §3.1)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .fields import setting


@dataclass(frozen=True)
class PretrainConfig:
    learning_rate: float = setting(3e-3, "Peak learning rate.", source="Llama 2 §2.2: 3e-4 (7B/13B), 1.5e-4 (70B)", gt=0)
    min_lr_ratio: float = setting(0.1, "Final LR as a share of the peak (cosine).", source="Llama 2 §2.2: decay to 10%", ge=0, le=1)
    warmup_steps: int = setting(10, "Linear warmup steps.", source="Llama 2 §2.2: 2000", ge=0)
    adam_beta1: float = setting(0.9, "AdamW beta1.", source="Llama 2 §2.2", ge=0, lt=1)
    adam_beta2: float = setting(0.95, "AdamW beta2.", source="Llama 2 §2.2", ge=0, lt=1)
    adam_eps: float = setting(1e-5, "AdamW epsilon.", source="Llama 2 §2.2", gt=0)
    weight_decay: float = setting(0.1, "AdamW weight decay.", source="Llama 2 §2.2", ge=0)
    grad_clip: float = setting(1.0, "Gradient norm clip.", source="Llama 2 §2.2", gt=0)
    seq_len: int = setting(256, "Packed sequence length.", source="Llama 2 §2.2: 4096", ge=8)
    batch_size: int = setting(8, "Sequences per optimizer step (all workers).", source="Llama 2 §2.2: 4M tokens", ge=1)
    max_steps: int = setting(150, "Optimizer steps (tiny: about 2 minutes on 2 cores).", ge=1)
    checkpoint_every: int = setting(50, "Steps between resumable checkpoints.", ge=1)
    num_workers: int = setting(1, "Ray Train workers (DDP).", ge=1)
    use_gpu: bool = setting(False, "Train on GPUs (NCCL) instead of CPU (gloo).")
    seed: int = setting(0, "Seed for weights, data order and dropout.")
    micro_batch_size: int = setting(0, "Sequences per forward/backward on one worker (gradient accumulation up to the batch); 0: the worker's whole share at once.", ge=0)
    use_ray: bool = setting(True, "Run under Ray Train TorchTrainer; false runs the same loop in this process.")
    sharding: Literal["none", "fsdp"] = setting("none", "How the Ray Train workers hold the model: 'none' (DDP, a whole copy each) or 'fsdp' (FSDP2: parameters, gradients and AdamW state sharded over the workers, for models a worker cannot hold whole; sharded checkpoints).")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = setting("PACK", "Ray placement of the training workers: PACK fills a node first; STRICT_SPREAD puts each worker on its own node.")
    cpus_per_worker: float = setting(1.0, "CPUs Ray reserves per training worker (fractional on small machines: on 2 CPUs two whole-CPU workers starve Ray's own actors).", gt=0)
    max_failures: int = setting(0, "Ray Train restarts failed workers from the last checkpoint this many times.", ge=0)
    log_every: int = setting(10, "Steps between metric records in MLflow.", ge=1)
    tokenizer_docs: int = setting(20000, "Corpus documents the BPE tokenizer is trained on (0: all).", ge=0)


@dataclass(frozen=True)
class SFTConfig:
    learning_rate: float = setting(1e-3, "Peak learning rate (cosine).", source="Llama 2 §3.1: 2e-5", gt=0)
    min_lr_ratio: float = setting(0.1, "Final LR as a share of the peak.", ge=0, le=1)
    warmup_steps: int = setting(5, "Linear warmup steps.", ge=0)
    weight_decay: float = setting(0.1, "AdamW weight decay.", source="Llama 2 §3.1", ge=0)
    adam_beta1: float = setting(0.9, "AdamW beta1.", ge=0, lt=1)
    adam_beta2: float = setting(0.95, "AdamW beta2.", ge=0, lt=1)
    adam_eps: float = setting(1e-5, "AdamW epsilon.", gt=0)
    grad_clip: float = setting(1.0, "Gradient norm clip.", gt=0)
    batch_size: int = setting(16, "Packed sequences per step (all workers).", source="Llama 2 §3.1: 64", ge=1)
    seq_len: int = setting(256, "Packed sequence length.", source="Llama 2 §3.1: 4096", ge=8)
    epochs: int = setting(2, "Passes over the SFT data.", source="Llama 2 §3.1: 2 epochs", ge=1)
    checkpoint_every: int = setting(50, "Steps between resumable checkpoints.", ge=1)
    num_workers: int = setting(1, "Ray Train workers (DDP).", ge=1)
    use_gpu: bool = setting(False, "Train on GPUs (NCCL) instead of CPU (gloo).")
    seed: int = setting(0, "Seed for data order.")
    micro_batch_size: int = setting(0, "Sequences per forward/backward on one worker (gradient accumulation up to the batch); 0: the worker's whole share at once.", ge=0)
    use_ray: bool = setting(True, "Run under Ray Train TorchTrainer; false runs the same loop in this process.")
    sharding: Literal["none", "fsdp"] = setting("none", "How the Ray Train workers hold the model: 'none' (DDP, a whole copy each) or 'fsdp' (FSDP2: parameters, gradients and AdamW state sharded over the workers, for models a worker cannot hold whole; sharded checkpoints).")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = setting("PACK", "Ray placement of the training workers: PACK fills a node first; STRICT_SPREAD puts each worker on its own node.")
    cpus_per_worker: float = setting(1.0, "CPUs Ray reserves per training worker (fractional on small machines: on 2 CPUs two whole-CPU workers starve Ray's own actors).", gt=0)
    max_failures: int = setting(0, "Ray Train restarts failed workers from the last checkpoint this many times.", ge=0)
    log_every: int = setting(10, "Steps between metric records in MLflow.", ge=1)
    base_model: str = setting("base", "Registered model to start from (ignored when model.checkpoint is set).")
    base_version: str = setting("latest", "Version or alias of base_model; 'latest' is champion, else candidate.")
    train_on: Literal["all", "last"] = setting("all", "Answers that carry loss in multi-turn data: 'all' or 'last' (GAtt-style).", source="Llama 2 §3.1, §3.3")
    stdlib_examples: int = setting(600, "Questions about Python standard-library functions in the default SFT data (0: all found).", ge=0)


# Llama 2 §2.2: 4M-token batches (1024 x 4096), 2T tokens (about 500k steps).
PRETRAIN_PRESETS: dict[str, dict] = {
    "small": {"learning_rate": 1e-3, "seq_len": 512, "max_steps": 2000, "warmup_steps": 100},
    "llama2-7b": {"learning_rate": 3e-4, "seq_len": 4096, "warmup_steps": 2000, "use_gpu": True, "micro_batch_size": 1,
                   "batch_size": 1024, "max_steps": 500_000},
    "llama2-13b": {"learning_rate": 3e-4, "seq_len": 4096, "warmup_steps": 2000, "use_gpu": True, "micro_batch_size": 1,
                   "batch_size": 1024, "max_steps": 500_000},
    "llama2-70b": {"learning_rate": 1.5e-4, "seq_len": 4096, "warmup_steps": 2000, "use_gpu": True, "micro_batch_size": 1,
                   "batch_size": 1024, "max_steps": 500_000},
}
_SFT_PAPER = {"learning_rate": 2e-5, "batch_size": 64, "seq_len": 4096, "epochs": 2, "use_gpu": True, "micro_batch_size": 1}
SFT_PRESETS: dict[str, dict] = {
    "small": {"learning_rate": 3e-4, "seq_len": 512},
    # GPUs (one Ray Train worker each) and FSDP so each preset fits 80 GB GPUs: `alignline plan --preset P --stage sft`
    "llama2-7b": {**_SFT_PAPER, "num_workers": 8, "sharding": "fsdp"},
    "llama2-13b": {**_SFT_PAPER, "num_workers": 8, "sharding": "fsdp"},
    "llama2-70b": {**_SFT_PAPER, "num_workers": 64, "sharding": "fsdp"},
}
