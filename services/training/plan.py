"""Memory plan of a training stage on GPUs: pure arithmetic from the config, checked by hand in the tests.

`alignline plan` prints, per GPU: weights, gradients, optimizer state, the layer FSDP gathers, activations of one
micro-batch, their total against the GPU's usable memory, and tokens per optimizer step; a plan that does not fit is
refused. The accounting is the standard one for mixed-precision training (ZeRO, Rajbhandari et al. 2020 §3.1):

    weights      P   x bytes(dtype)                      (bf16: 2)
    gradients    P_t x bytes(dtype)                      (only what trains)
    optimizer    P_t x (4 fp32 master + 4 + 4 AdamW moments) = 12 B under mixed precision; 8 B in pure fp32

all divided by the shard group (FSDP full shard: every GPU of the job; DDP: 1). LoRA trains only its adapters
(float32, so no separate master copy: 4 weights + 4 grads + 8 moments per adapter parameter) and keeps the frozen base
in `dtype`. FSDP also materialises one layer (two, with prefetch) unsharded while it computes, in the dtype it
stores (the recipes shard float32 master weights and cast under autocast: 4 bytes; LoRA's frozen base: `dtype`), and
the root unit (embeddings, final norm, LM / value / scalar head) stays gathered from forward to backward. Reward and
PPO recipes shard like SFT (`reward.sharding`, `rlhf.sharding`); PPO's frozen reference and two reward models are
sharded over the same group and reshard right after each forward.

Activations (16-bit, per token and layer) follow Korthikanti et al. 2022 §4 adapted to a Llama block with fused
(flash) attention, which stores no attention scores: what autograd keeps is the attention sub-layer's RMSNorm input
and output, q, k, v, the attention output and o_proj's input (5h + 2 kv), and the SwiGLU sub-layer's RMSNorm input
and output, gate and up outputs, SiLU output and the product (2h + 4I): (7h + 2kv + 4I) x 2 bytes. With gradient
checkpointing only each layer's input is kept (h x 2 bytes) plus one layer's full set while it is recomputed. The
LM head adds bf16 logits and their fp32 copy for the loss: V x (2 + 4) bytes per token (reward models have none).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Stage = Literal["sft", "reward", "ppo"]
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
ADAM_MOMENTS = 8          # AdamW exp_avg + exp_avg_sq, float32
FP32_MASTER = 4           # float32 copy of 16-bit weights (mixed precision)
ACT_BYTES = 2             # activations in 16-bit under autocast
LOGIT_BYTES = 2 + 4       # bf16 logits and the fp32 upcast cross-entropy reads
GIB = 1024 ** 3


@dataclass(frozen=True)
class Shape:
    """The dimensions the arithmetic reads (Llama 2 §2.2, Table 1)."""
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    tied: bool = False

    @property
    def kv_dim(self) -> int:
        return self.hidden // self.heads * self.kv_heads

    def layer_params(self) -> int:
        """q, o: h x h; k, v: h x kv; gate, up, down: h x I; two RMSNorm gains."""
        h = self.hidden
        return 2 * h * h + 2 * h * self.kv_dim + 3 * h * self.intermediate + 2 * h

    def params(self, head: bool = True) -> int:
        """All parameters: embeddings, blocks, final norm, and the LM head unless tied (a reward model's scalar head
        instead when `head` is False)."""
        embed = self.vocab * self.hidden
        out = (0 if self.tied else embed) if head else self.hidden
        return embed + self.layers * self.layer_params() + self.hidden + out

    def lora_params(self, rank: int, targets: tuple[str, ...]) -> int:
        """r x (in + out) per adapted matrix and layer."""
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        dims = {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
        unknown = sorted(set(targets) - set(dims))
        if unknown:
            raise ValueError(f"model.lora_target_modules names {unknown}; allowed: {', '.join(dims)}")
        return self.layers * sum(rank * (a + b) for a, b in (dims[t] for t in targets))

    def activation_bytes_per_token(self, checkpointing: bool) -> int:
        """Bytes autograd keeps per token for the whole stack (see the module doc)."""
        per_layer = (7 * self.hidden + 2 * self.kv_dim + 4 * self.intermediate) * ACT_BYTES
        if checkpointing:
            return self.layers * self.hidden * ACT_BYTES + per_layer
        return self.layers * per_layer


@dataclass(frozen=True)
class Plan:
    stage: str
    gpus: int
    sharding: str
    shard_group: int
    dtype: str
    lora_rank: int
    checkpointing: bool
    micro_batch: int            # sequences per forward on one GPU (reward: pairs, i.e. 2x sequences)
    seq_len: int
    batch: int                  # sequences (pairs) per optimizer step, all GPUs
    accumulation: int           # micro-steps per optimizer step on each GPU
    params: int
    trainable: int
    weights_gib: float
    grads_gib: float
    optimizer_gib: float
    frozen_gib: float           # PPO: reference policy and two reward models; 0 otherwise
    gathered_gib: float
    activations_gib: float
    total_gib: float
    usable_gib: float
    gpu_memory_gib: float
    tokens_per_step: int
    problems: tuple[str, ...]

    @property
    def fits(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {**asdict(self), "fits": self.fits}


def shape_of(model_cfg) -> Shape:
    c = model_cfg
    return Shape(c.vocab_size, c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.num_attention_heads,
                 c.num_key_value_heads, c.tie_word_embeddings)


def memory_plan(shape: Shape, *, stage: Stage = "sft", gpus: int = 1, sharding: str = "none", dtype: str = "bfloat16",
                lora_rank: int = 0, lora_targets: tuple[str, ...] = (), checkpointing: bool = False,
                micro_batch: int = 1, seq_len: int = 4096, batch: int = 64, gpu_memory_gib: float = 80.0,
                reserve: float = 0.1) -> Plan:
    """Per-GPU memory of one training stage; `problems` says why it does not fit (empty when it does)."""
    if gpus < 1 or micro_batch < 1 or seq_len < 1 or batch < 1:
        raise ValueError(f"gpus, micro_batch, seq_len and batch must be >= 1 (got {gpus}, {micro_batch}, {seq_len}, {batch})")
    if dtype not in BYTES:
        raise ValueError(f"dtype = {dtype!r} is not allowed; allowed: {', '.join(map(repr, BYTES))}")
    if sharding not in ("none", "fsdp"):
        raise ValueError(f"sharding = {sharding!r} is not allowed; allowed: 'none', 'fsdp'")
    group = gpus if sharding == "fsdp" else 1
    wb = BYTES[dtype]
    params = shape.params(head=stage != "reward")
    mixed = dtype != "float32"
    if lora_rank:
        trainable = shape.lora_params(lora_rank, lora_targets) + (shape.hidden if stage == "reward" else 0)
        weights = params * wb + trainable * 4           # frozen base in dtype, adapters (and an RM head) in fp32
        grads = trainable * 4
        optimizer = trainable * ADAM_MOMENTS
    else:
        trainable = params
        weights = params * wb
        grads = params * wb
        optimizer = params * (ADAM_MOMENTS + (FP32_MASTER if mixed else 0))
    frozen = 0
    if stage == "ppo":  # PPO holds the reference policy and both reward models (Llama 2 §3.2.3), frozen, in dtype
        frozen = (shape.params() + 2 * shape.params(head=False)) * wb
    # the layer computing, the one prefetched, and the root unit (all but the layers), as stored
    gathered = (2 * shape.layer_params() + params - shape.layers * shape.layer_params()) * (wb if lora_rank else 4) \
        if group > 1 else 0
    sequences = micro_batch * (2 if stage == "reward" else 1)    # a pair is a chosen and a rejected answer
    tokens = sequences * seq_len
    per_token = shape.activation_bytes_per_token(checkpointing) + (0 if stage == "reward" else shape.vocab * LOGIT_BYTES)
    activations = tokens * per_token
    sharded = (weights + grads + optimizer + frozen) / group
    total = sharded + gathered + activations
    usable = gpu_memory_gib * (1 - reserve)
    problems = []
    per_step = gpus * micro_batch
    if batch % per_step:
        problems.append(f"batch {batch} is not a multiple of gpus x micro-batch = {gpus} x {micro_batch}")
    if total / GIB > usable:
        problems.append(f"needs {total / GIB:.1f} GiB per GPU, more than the {usable:.1f} GiB usable of "
                        f"{gpu_memory_gib:g} GiB (reserve {reserve:.0%})")
    return Plan(stage=stage, gpus=gpus, sharding=sharding, shard_group=group, dtype=dtype, lora_rank=lora_rank,
                checkpointing=checkpointing, micro_batch=micro_batch, seq_len=seq_len, batch=batch,
                accumulation=max(1, batch // per_step), params=params, trainable=trainable,
                weights_gib=weights / group / GIB, grads_gib=grads / group / GIB, optimizer_gib=optimizer / group / GIB,
                frozen_gib=frozen / group / GIB, gathered_gib=gathered / GIB, activations_gib=activations / GIB,
                total_gib=total / GIB, usable_gib=usable, gpu_memory_gib=gpu_memory_gib,
                tokens_per_step=batch * seq_len * (2 if stage == "reward" else 1), problems=tuple(problems))


def plan_for(cfg, stage: Stage = "sft", gpus: int | None = None) -> Plan:
    """The plan of `stage` under a RunConfig: the model section's shape, dtype (as on CUDA: 'auto' is bfloat16),
    LoRA and checkpointing; the stage's workers (GPUs), sharding, micro-batch, sequence length and batch."""
    from alignline.services.models.factory import resolve_dtype

    m = cfg.model
    section = {"sft": cfg.sft, "reward": cfg.reward, "ppo": cfg.rlhf}[stage]
    dtype = str(resolve_dtype(m.dtype, "cuda")).removeprefix("torch.")
    gpus = gpus or section.num_workers
    if stage == "ppo":  # one gradient step: a minibatch of prompt + answer rows (at most the context), split over GPUs
        seq_len, batch = m.max_position_embeddings, section.ppo_minibatch_size
        micro = max(1, batch // gpus)
    else:  # micro_batch_size 0: a worker's whole share in one forward (the recipes' meaning)
        seq_len = section.seq_len if stage == "sft" else section.max_length
        batch = section.batch_size
        micro = section.micro_batch_size or max(1, batch // gpus)
    return memory_plan(shape_of(m), stage=stage, gpus=gpus,
                       sharding=getattr(section, "sharding", "none"), dtype=dtype, lora_rank=m.lora_rank,
                       lora_targets=m.lora_target_modules, checkpointing=m.gradient_checkpointing,
                       micro_batch=micro, seq_len=seq_len, batch=batch, gpu_memory_gib=m.gpu_memory_gib,
                       reserve=m.memory_reserve)


def format_plan(plan: Plan) -> str:
    rows = [("weights", plan.weights_gib), ("gradients", plan.grads_gib), ("optimizer (AdamW)", plan.optimizer_gib)]
    if plan.frozen_gib:
        rows.append(("frozen ref + 2 RMs", plan.frozen_gib))
    if plan.gathered_gib:
        rows.append(("FSDP gathered layers", plan.gathered_gib))
    rows += [("activations", plan.activations_gib), ("total per GPU", plan.total_gib)]
    unit = "pairs" if plan.stage == "reward" else "sequences"
    lines = [f"{plan.stage}: {plan.params / 1e9:.2f}B parameters ({plan.trainable / 1e6:,.1f}M trained"
             f"{f', LoRA r={plan.lora_rank}' if plan.lora_rank else ''}), {plan.dtype}, "
             f"{plan.gpus} GPU(s), sharding {plan.sharding} (group {plan.shard_group}), "
             f"gradient checkpointing {'on' if plan.checkpointing else 'off'}",
             f"micro-batch {plan.micro_batch} {unit} x {plan.seq_len} tokens, {plan.accumulation} accumulation step(s), "
             f"batch {plan.batch} {unit}: {plan.tokens_per_step:,} tokens per optimizer step"]
    lines += [f"  {name:<22} {gib:>8.1f} GiB" for name, gib in rows]
    lines.append(f"  {'usable':<22} {plan.usable_gib:>8.1f} GiB of {plan.gpu_memory_gib:g} GiB")
    lines.append("fits" if plan.fits else "DOES NOT FIT: " + "; ".join(plan.problems))
    return "\n".join(lines)
