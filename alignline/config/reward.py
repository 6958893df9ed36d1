"""Reward-model recipe settings (Llama 2 §3.2.2, Table 27)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .fields import setting

# Llama 2 Table 27: margin m(r) by rating level.
MARGIN_TABLES: dict[str, dict[str, float]] = {
    "none": {"significantly_better": 0.0, "better": 0.0, "slightly_better": 0.0, "negligibly_better": 0.0},
    "small": {"significantly_better": 1.0, "better": 2 / 3, "slightly_better": 1 / 3, "negligibly_better": 0.0},
    "large": {"significantly_better": 3.0, "better": 2.0, "slightly_better": 1.0, "negligibly_better": 0.0},
}


@dataclass(frozen=True)
class RewardConfig:
    margin: Literal["none", "small", "large"] = setting("small", "Margin table m(rating) in the ranking loss.", source="Llama 2 Table 27")
    learning_rate: float = setting(1e-4, "Peak learning rate.", source="Llama 2 §3.2.2: 1e-5 (5e-6 for 70B)", gt=0)
    min_lr_ratio: float = setting(0.1, "Cosine decay to this share of the peak.", source="Llama 2 §3.2.2: 10%", ge=0, le=1)
    warmup_ratio: float = setting(0.03, "Warmup share of all steps.", source="Llama 2 §3.2.2: 3%", ge=0, le=1)
    min_warmup_steps: int = setting(5, "Warmup steps at least.", ge=0)
    epochs: int = setting(1, "Passes over the comparisons.", source="Llama 2 §3.2.2: 1 epoch (more overfits)", ge=1)
    batch_size: int = setting(16, "Pairs per optimizer step.", source="Llama 2 §3.2.2: 512 pairs", ge=1)
    max_length: int = setting(256, "Tokens per prompt+answer (truncated from the left of the prompt).", ge=8)
    weight_decay: float = setting(0.1, "AdamW weight decay.", ge=0)
    adam_beta1: float = setting(0.9, "AdamW beta1.", source="Llama 2 §2.2 optimizer, reused", ge=0, lt=1)
    adam_beta2: float = setting(0.95, "AdamW beta2.", source="Llama 2 §2.2 optimizer, reused", ge=0, lt=1)
    adam_eps: float = setting(1e-5, "AdamW epsilon.", gt=0)
    grad_clip: float = setting(1.0, "Gradient norm clip.", gt=0)
    helpful_extra_share: float = setting(1.0, "Safety + public pairs (sampled uniformly) added to the helpfulness RM's data, as a share of its own helpfulness pairs.", source="Llama 2 §3.2.2: an equal amount", ge=0)
    safety_helpful_share: float = setting(0.1, "Share of helpfulness pairs (own + public) in the safety RM's mix.", source="Llama 2 §3.2.2: 90/10", ge=0, lt=1)
    public_sources: tuple[str, ...] = setting(("hh-rlhf",), "Values of the comparisons' `source` column that count as public (open-source) data.", source="Llama 2 §3.2.2: Anthropic Helpful/Harmless, OpenAI Summarize, ...")
    public_datasets: tuple[str, ...] = setting(("comparisons-public-helpfulness", "comparisons-public-safety"), "Catalog datasets of imported public pairs (`alignline harvest --hh-rlhf FILE --kind ...`) mixed into both RMs' data when they exist; their `<name>-heldout` sets are scored in the report, never trained on. Empty: no public data.", source="Llama 2 §3.2.2: open-source preference data in every RM's mix")
    heldout_share: float = setting(0.1, "Own comparisons held out for evaluation (public sets bring their own held-out part).", ge=0, lt=1)
    trainable: Literal["all", "head", "top_layers"] = setting("all", "What the RM trains: 'all' (the paper), 'top_layers' (the top `trainable_top_layers` blocks, final norm and head; the trunk below is frozen), 'head' (the scalar head on last-token trunk states computed once and cached: one forward per answer, for CPU-sized runs).", source="Llama 2 §3.2.2 trains all weights; the frozen modes are this platform's, for small machines")
    trainable_top_layers: int = setting(1, "Blocks that train with trainable='top_layers'.", ge=1)
    head_epochs: int = setting(20, "Passes over the cached trunk states with trainable='head' (a linear head on fixed features is cheap per pass and needs many).", ge=1)
    head_learning_rate: float = setting(1e-3, "Peak learning rate with trainable='head'.", gt=0)
    drift_alert_accuracy: float = setting(0.6, "Before retraining, the current RMs score each newly harvested batch of their kind; below this accuracy the flow warns and tags the new RM version drift.alert=true.", source="Llama 2 §3.2.2/§3.4: new batches drift from the RM's training distribution, the reason to retrain every iteration", ge=0, le=1)
    safety_threshold: float = setting(0.15, "Safety score under which an answer counts as unsafe.", source="Llama 2 §3.2.2: 0.15 (precision 0.89, recall 0.55)", ge=0, le=1)
    num_workers: int = setting(1, "Ray Train workers.", ge=1)
    use_gpu: bool = setting(False, "Train on GPUs.")
    use_ray: bool = setting(True, "Run under Ray Train TorchTrainer; false runs the same loop in this process.")
    cpus_per_worker: float = setting(1.0, "CPUs Ray reserves per training worker (fractional on small machines).", gt=0)
    max_failures: int = setting(0, "Ray Train restarts failed workers from the last checkpoint this many times.", ge=0)
    sharding: Literal["none", "fsdp"] = setting("none", "How the Ray Train workers hold the reward model: 'none' (DDP, a whole copy each) or 'fsdp' (FSDP2: parameters, gradients and AdamW state sharded over the workers, for models a worker cannot hold whole; sharded checkpoints). FSDP needs reward.trainable='all' or 'top_layers' and model.lora_rank=0.")
    micro_batch_size: int = setting(0, "Pairs per forward/backward on one worker (gradient accumulation up to the batch); 0: the worker's whole share.", ge=0)
    checkpoint_every: int = setting(50, "Steps between resumable checkpoints.", ge=1)
    log_every: int = setting(5, "Steps between metric records in MLflow.", ge=1)
    eval_batch_size: int = setting(32, "Responses per forward when scoring held-out pairs.", ge=1)
    policy_model: str = setting("policy", "Registered policy both RMs start from.", source="Llama 2 §3.2.2: RMs initialised from the latest chat model")
    policy_version: str = setting("latest", "Version or alias of policy_model; 'latest' is champion, else candidate.")
    demo_stdlib_pairs: int = setting(400, "Helpfulness pairs in the built-in comparisons-demo set (used when no comparisons dataset exists).", ge=1)
    builtin_batch0: bool = setting(False, "Keep the built-in comparisons-demo set in the RM data as batch 0 beside the harvested batches (built-in data only: its pairs are about the built-in SFT answers). Tiny preset: on.", source="Llama 2 §3.2.2: RMs train on all batches so far, bootstrapped with open-source preference data")
    seed: int = setting(0, "Seed for data order, data mixing, the held-out split and the head init.")


_PAPER = {"learning_rate": 1e-5, "batch_size": 512, "max_length": 4096, "use_gpu": True, "micro_batch_size": 8}
# GPUs per preset and FSDP so each fits 80 GB GPUs: `alignline plan --preset P --stage reward`
# (70B: 2 pairs per micro-batch, 4 accumulation steps)
PRESETS: dict[str, dict] = {"tiny": {"builtin_batch0": True},
                            "llama2-7b": {**_PAPER, "num_workers": 8, "sharding": "fsdp"},
                            "llama2-13b": {**_PAPER, "num_workers": 8, "sharding": "fsdp"},
                            "llama2-70b": {**_PAPER, "learning_rate": 5e-6, "num_workers": 64, "micro_batch_size": 2,
                                           "sharding": "fsdp"}}
