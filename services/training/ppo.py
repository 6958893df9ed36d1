"""PPO with the combined reward and a per-token KL penalty (Llama 2 §3.2.3), one loop, in-process or on Ray Train.

Every iteration: each worker samples answers to its share of the prompts with
the current policy, the reward models score them, and the policy and its value
head take `ppo_epochs` passes of clipped-objective minibatch steps.

    R(g | p) = whiten(logit(R_c(g | p)))  - beta * KL(pi(g | p) || pi_0(g | p))        (Llama 2 eq. 2-3)

The sequence score goes on the last answer token; the KL term is paid per token
as `beta * (log pi - log pi_0)` (the k1 estimate, summed over the answer it is
the sequence KL of eq. 3). Advantages come from GAE over the answer tokens;
the value head sits on the policy's final hidden state (a shared trunk: one
model in memory instead of two). Optimiser: AdamW (0.9, 0.95, eps 1e-5),
weight decay 0.1, grad clip 1.0, constant LR (1e-6 in the paper's presets).
PPO stops early when the held-out prompts' reward has not improved for
`ppo_patience` evaluations; the best policy seen on them is what is saved.

FSDP (`rlhf.sharding = "fsdp"`): the policy and value head train sharded (each decoder layer a unit, embeddings and
both heads in the root), the frozen reference and both reward models are sharded over the same ranks, checkpoints
are sharded (sharding.py) and the kept policy is gathered whole on rank 0. Every forward is then a collective, so
sampling runs in lockstep (`policy_rollouts`) and held-out shares are padded to equal size.

Tensor layout (as in TRL): prompts left-padded to width P, answers right-padded
to width R, one row (B, P + R). Every per-token tensor is (B, R) over answer
tokens; logits at positions P-1 .. P+R-2 predict answer tokens 0 .. R-1.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import torch
import torch.nn as nn

from alignline.config.model import ModelConfig
from alignline.config.rlhf import RLHFConfig
from alignline.services.generation.rollouts import Rollout, sample_rollouts
from alignline.services.generation.sampling import SamplingParams, generate
from alignline.services.models.chat import Message, encode_prompt
from alignline.services.models.factory import load_for_training, load_model, load_tokenizer, prepare_for_training, save_model
from alignline.services.rewards.combine import logit

from . import sharding as sh
from .launch import LaunchOptions, WorkerContext, launch
from .optimization import build_adamw
from alignline.services.tracking import MetricsLogger


@dataclass(frozen=True)
class PPOJob:
    cfg: RLHFConfig
    policy_dir: str                          # starting policy: the rejection-sampling checkpoint
    ref_dir: str                             # pi_0 of the KL penalty: the policy the iteration started from
    prompts: list[list[Message]]             # training prompts (dialogues ending in a user turn)
    is_safety: list[bool]
    heldout: list[list[Message]]             # early-stopping prompts
    heldout_is_safety: list[bool]
    make_scorer: Callable[[], Any]           # () -> Scorer; built on each worker (reward models are not shipped)
    output_dir: str
    tracking_uri: str | None = None
    run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    checkpoint_dir: str | None = None        # resumable state every `ppo_checkpoint_every` iterations (None: none)
    on_iteration: Callable[[int], None] | None = None  # called after each iteration (tests stop runs here)
    model: ModelConfig = ModelConfig()       # dtype, gradient checkpointing, LoRA (the flow passes cfg.model)
    # Shipped to workers on other nodes (launch.py); the reward-model folders when the scorer is built from them.
    INPUTS: ClassVar[tuple[str, ...]] = ("policy_dir", "ref_dir", "make_scorer.helpful_dir", "make_scorer.safety_dir")
    OUTPUTS: ClassVar[tuple[str, ...]] = ("output_dir",)  # fetched back from rank 0's node


@dataclass(frozen=True)
class RewardModelFolders:
    """A picklable scorer factory: builds the combined scorer (Llama 2 eq. 1-2) from the two RM folders on a worker."""
    helpful_dir: str
    safety_dir: str
    threshold: float = 0.15   # Llama 2 §3.2.2; the flow passes reward.safety_threshold
    device: str = "cpu"

    def __call__(self):
        from alignline.services.rewards import CombinedScorer, RewardScorer

        return CombinedScorer(RewardScorer.from_folder(self.helpful_dir, self.device),
                              RewardScorer.from_folder(self.safety_dir, self.device), self.threshold)


class PolicyWithValue(nn.Module):
    """The policy LM and a scalar value head on its final (normed) hidden state."""

    def __init__(self, policy: nn.Module):
        super().__init__()
        self.policy = policy
        self.value_head = nn.Linear(policy.config.hidden_size, 1)
        nn.init.zeros_(self.value_head.weight)  # V = 0 at the start: the mean of a whitened reward
        nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids, attention_mask, position_ids, lm_only: bool = False, **lm_kwargs):
        """-> logits (B, T, V), values (B, T). `lm_only`: the policy's own output (KV cache and all, `lm_kwargs`),
        for sampling through this module (under FSDP its hooks gather the embeddings and the LM head)."""
        if lm_only:
            return self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               **lm_kwargs)
        h = self.policy.model(input_ids=input_ids, attention_mask=attention_mask,
                              position_ids=position_ids).last_hidden_state  # (B, T, H)
        return self.policy.lm_head(h), self.value_head(h).squeeze(-1)


# -- the PPO arithmetic: plain functions on (B, R) tensors, each checked against hand-computed values in tests --------

def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def global_whiten(x: torch.Tensor, mask: torch.Tensor, ctx: WorkerContext, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the masked entries of every rank's share, zero outside the mask: the statistics are
    those of the global batch (count, sum, then squared deviations, all-reduced), so 2 workers whiten exactly like
    1 worker on the same batch."""
    n = max(ctx.all_reduce_sum(float(mask.sum())), 1.0)
    mean = ctx.all_reduce_sum(float((x * mask).sum())) / n
    var = ctx.all_reduce_sum(float((((x - mean) * mask) ** 2).sum())) / n
    return (x - mean) * (var + eps) ** -0.5 * mask


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """logits (B, R, V), tokens (B, R) -> log p(token) (B, R), at temperature 1."""
    return torch.log_softmax(logits.float(), -1).gather(-1, tokens[..., None]).squeeze(-1)


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """(B, R, V) -> entropy of each next-token distribution (B, R)."""
    logp = torch.log_softmax(logits.float(), -1)
    return -(logp.exp() * logp).sum(-1)


def per_token_kl(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log pi(y_t) - log pi_0(y_t) on answer tokens (B, R); its sum over t estimates KL(pi || pi_0) of the answer."""
    return (logp - ref_logp) * mask


def shape_rewards(score: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-token rewards (B, R): -beta * kl_t on every answer token, plus the sequence score (B,) on the last one
    (Llama 2 eq. 3: the reward model judges the whole answer, the KL is paid token by token)."""
    rewards = -beta * kl * mask
    last = (mask.sum(1).long() - 1).clamp(min=0)  # (B,) index of each answer's last token
    return rewards.scatter_add(1, last[:, None], score[:, None].to(rewards.dtype))


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over answer tokens (right-padded, (B, R) each).

    delta_t = r_t + gamma * V_{t+1} - V_t, A_t = delta_t + gamma * lam * A_{t+1}, with V and A zero after the
    last answer token (the episode ends there). Returns (advantages, returns = A + V), zero outside the mask.
    """
    B, R = rewards.shape
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    next_adv = torch.zeros_like(next_value)
    for t in reversed(range(R)):
        live = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv_t = (delta + gamma * lam * next_adv) * live
        advantages[:, t] = adv_t
        next_value = values[:, t] * live  # a padded position passes zeros back to the last real token
        next_adv = adv_t
    return advantages, (advantages + values) * mask


def ppo_losses(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, values: torch.Tensor,
               old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float) -> dict[str, torch.Tensor]:
    """Clipped surrogate (Schulman et al. 2017; clip 0.2 in Llama 2 §3.2.3) and a clipped value loss, token means."""
    ratio = torch.exp(logp - old_logp)  # (B, R)
    pg = torch.maximum(-advantages * ratio, -advantages * ratio.clamp(1 - clip, 1 + clip))
    values_clipped = old_values + (values - old_values).clamp(-clip, clip)
    vf = 0.5 * torch.maximum((values - returns) ** 2, (values_clipped - returns) ** 2)
    return {"policy_loss": masked_mean(pg, mask), "value_loss": masked_mean(vf, mask),
            "clip_fraction": masked_mean(((ratio - 1).abs() > clip).float(), mask),
            "approx_kl": masked_mean(0.5 * (logp - old_logp) ** 2, mask)}


# -- batches ---------------------------------------------------------------------------------------------------------

@dataclass
class RolloutBatch:
    input_ids: torch.Tensor       # (B, P + R) left-padded prompt, right-padded answer
    attention_mask: torch.Tensor  # (B, P + R)
    position_ids: torch.Tensor    # (B, P + R) counting real tokens only
    tokens: torch.Tensor          # (B, R) answer tokens
    mask: torch.Tensor            # (B, R) 1.0 on answer tokens
    prompt_width: int

    def rows(self, idx: torch.Tensor) -> "RolloutBatch":
        return RolloutBatch(self.input_ids[idx], self.attention_mask[idx], self.position_ids[idx], self.tokens[idx],
                            self.mask[idx], self.prompt_width)


def rollout_batch(rollouts: Sequence[Rollout], pad_id: int, device: torch.device) -> RolloutBatch:
    P = max(len(r.prompt_tokens) for r in rollouts)
    R = max(len(r.tokens) for r in rollouts)
    B = len(rollouts)
    input_ids = torch.full((B, P + R), pad_id, dtype=torch.long)
    attention = torch.zeros((B, P + R), dtype=torch.long)
    for i, r in enumerate(rollouts):
        p, n = len(r.prompt_tokens), len(r.tokens)
        input_ids[i, P - p:P] = torch.tensor(r.prompt_tokens)
        input_ids[i, P:P + n] = torch.tensor(r.tokens)
        attention[i, P - p:P + n] = 1
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    mask = attention[:, P:].float()
    return RolloutBatch(input_ids.to(device), attention.to(device), position_ids.to(device),
                        input_ids[:, P:].to(device), mask.to(device), P)


def answer_outputs(model: nn.Module, batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits (B, R, V), values (B, R) or None) at the positions that predict the answer tokens."""
    P, R = batch.prompt_width, batch.tokens.shape[1]
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids)
    if isinstance(out, tuple):
        logits, values = out
        return logits[:, P - 1:P + R - 1], values[:, P - 1:P + R - 1]
    return out.logits[:, P - 1:P + R - 1], None


# -- FSDP (rlhf.sharding = "fsdp") ---------------------------------------------------------------------------------------

NO_EOS = -1  # an id no tokenizer samples: sharded generation runs every step, answers are cut at EOS afterwards


def scorer_models(scorer) -> list[nn.Module]:
    """The reward models inside a combined scorer (its `helpful` and `safety` judges' `.model`); none for others."""
    judges = (getattr(scorer, name, None) for name in ("helpful", "safety"))
    return [j.model for j in judges if isinstance(getattr(j, "model", None), nn.Module)]


class _PolicyThroughRoot:
    """The policy LM as `generate` calls it, routed through the FSDP root (PolicyWithValue): calling `model.policy`
    directly would skip the root's hooks and read its embeddings and LM head sharded."""

    def __init__(self, root: PolicyWithValue):
        self.root = root

    def __call__(self, **kwargs):
        return self.root(lm_only=True, **kwargs)

    def parameters(self):
        return self.root.parameters()

    @property
    def training(self) -> bool:
        return self.root.training

    def eval(self) -> "_PolicyThroughRoot":
        self.root.eval()
        return self

    def train(self, mode: bool = True) -> "_PolicyThroughRoot":
        self.root.train(mode)
        return self


def policy_rollouts(model: nn.Module, tokenizer, dialogues: Sequence[Sequence[Message]], params: SamplingParams,
                    batch_size: int) -> list[Rollout]:
    """One answer per dialogue from `model` (a PolicyWithValue, sharded or not, or a plain LM).

    Sharded, every forward is a collective, so every rank must make as many as the others: each batch runs all
    `max_new_tokens` steps instead of stopping when its rows reach EOS (what HF calls synced_gpus), and each answer is
    cut at its first EOS. Batching and seeds are `sample_rollouts`'s, and a row's tokens do not depend on the other
    rows, so the answers are the ones the unsharded run samples. The caller gives every rank as many dialogues.
    """
    if not sh.is_sharded(model):
        lm = model.policy if isinstance(model, PolicyWithValue) else model
        return [rows[0] for rows in sample_rollouts(lm, tokenizer, dialogues, params, 1, batch_size)]
    lm, eos = _PolicyThroughRoot(model), tokenizer.eos_token_id
    prompts = [encode_prompt(tokenizer, d) for d in dialogues]
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))  # sample_rollouts' order with k = 1
    out: list[Rollout | None] = [None] * len(prompts)
    for b, start in enumerate(range(0, len(order), batch_size)):
        chunk = order[start:start + batch_size]
        seeded = replace(params, seed=None if params.seed is None else params.seed + b)
        gen = generate(lm, [prompts[i] for i in chunk], seeded, tokenizer.pad_token_id, NO_EOS)
        for i, tokens, logprobs in zip(chunk, gen.tokens, gen.logprobs):
            n = tokens.index(eos) + 1 if eos in tokens else len(tokens)
            out[i] = Rollout(prompts[i], tokens[:n], logprobs[:n],
                             tokenizer.decode(tokens[:n], skip_special_tokens=True).strip())
    return out  # type: ignore[return-value]


def save_policy(model: nn.Module, tokenizer, folder: str, ctx: WorkerContext) -> None:
    """The policy LM (without the value head) as a HF folder on rank 0; under FSDP gathered from every rank's
    shards first (a collective: every rank calls)."""
    full = ctx.full_model(model, build=lambda: PolicyWithValue(type(model.policy)(model.policy.config)))
    if full is not None:
        save_model(full.policy, tokenizer, folder)


# -- the recipe ----------------------------------------------------------------------------------------------------------

def heldout_reward(policy, tokenizer, scorer, job: PPOJob, ctx: WorkerContext, params: SamplingParams) -> float:
    """Mean combined score of answers to this rank's share of the held-out prompts, averaged over all ranks.
    `policy`: a PolicyWithValue (sharded or not) or a plain LM. Sharded, every rank samples and scores as many
    prompts as the largest share (the shortfall repeats held-out prompt 0 and is not counted)."""
    dialogues = job.heldout[ctx.rank::ctx.world_size]
    flags = job.heldout_is_safety[ctx.rank::ctx.world_size]
    real = len(dialogues)
    if sh.is_sharded(policy):
        shortfall = -(-len(job.heldout) // ctx.world_size) - real
        dialogues, flags = dialogues + [job.heldout[0]] * shortfall, flags + [job.heldout_is_safety[0]] * shortfall
    total = 0.0
    if dialogues:
        rollouts = policy_rollouts(policy, tokenizer, dialogues, params, job.cfg.rollout_batch_size)
        scores = scorer.score(dialogues, [r.text for r in rollouts], flags)
        total = float(scores.get("combined", scores["reward"])[:real].sum())
    return ctx.all_reduce_sum(total) / max(1, len(job.heldout))


def ppo_loop(job: PPOJob, ctx: WorkerContext) -> dict[str, Any]:
    cfg = job.cfg
    sh.refuse_lora("rlhf", job.model.lora_rank, ctx.sharding if ctx.sharded else "none")
    tokenizer = load_tokenizer(job.policy_dir)
    # mixed precision / LoRA / checkpointing as configured; the frozen reference is held in the compute dtype
    model = prepare_for_training(PolicyWithValue(load_for_training(job.policy_dir, job.model, ctx.device)).to(ctx.device),
                                 job.model, ctx.device)
    # FSDP: each decoder layer a unit, embeddings, final norm, LM head and value head in the root; before the optimizer
    model = ctx.shard(model)
    ref = load_model(job.ref_dir, device=ctx.device, dtype=job.model.dtype).eval().requires_grad_(False)
    scorer = job.make_scorer()
    if ctx.sharded:  # the frozen reference and both RMs are as large as the policy (four 70B models): sharded too
        for frozen in (ref, *scorer_models(scorer)):
            sh.shard_model(frozen, frozen=True)
    optimizer = build_adamw(model, cfg.ppo_learning_rate, cfg.ppo_weight_decay, (cfg.ppo_adam_beta1, cfg.ppo_adam_beta2),
                            cfg.ppo_adam_eps)
    constant = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)  # constant LR (Llama 2 §3.2.3)
    # resume: Ray's restored checkpoint after a worker failure, else the newest one on disk
    resume_from = ctx.restored_checkpoint() or ctx.latest_checkpoint(job.checkpoint_dir)
    start = ctx.load_checkpoint(resume_from, model, optimizer, constant) if resume_from else 0
    ddp_model = ctx.wrap(model)
    metrics_log = MetricsLogger(job.tracking_uri, job.run_id) if ctx.is_main else MetricsLogger(None, None)
    local_batch = max(1, cfg.ppo_batch_size // ctx.world_size)
    local_minibatch = max(1, min(local_batch, cfg.ppo_minibatch_size // ctx.world_size))
    eval_params = SamplingParams(cfg.max_new_tokens, cfg.ppo_temperature, cfg.top_p, seed=cfg.seed + 7919)
    if resume_from:  # the early-stopping state and the running summary travel with the weights
        state = ctx.checkpoint_extra(resume_from)
        summary, totals, best, since_best = state["summary"], state["totals"], state["best"], state["since_best"]
    else:
        best = heldout_reward(model, tokenizer, scorer, job, ctx, eval_params)
        save_policy(model, tokenizer, job.output_dir, ctx)
        summary = {"heldout": [best], "heldout_initial": best, "stopped_early": False, "history": []}
        since_best = 0
        totals = {"generation_s": 0.0, "scoring_s": 0.0, "training_s": 0.0, "samples": 0}
    summary["resumed_from_iteration"] = start
    for it in range(start, cfg.ppo_iterations):
        if summary["stopped_early"]:
            break
        # 1. Rollouts: this rank's share of the batch, sampled with the current policy. The prompt draw is a function
        #    of (seed, iteration, rank), so a resumed run draws what the killed run would have drawn.
        t0 = time.perf_counter()
        rng = random.Random((cfg.seed * 1_000_003 + it) * 1009 + ctx.rank)
        picks = [rng.randrange(len(job.prompts)) for _ in range(local_batch)]
        dialogues = [job.prompts[i] for i in picks]
        params = SamplingParams(cfg.max_new_tokens, cfg.ppo_temperature, cfg.top_p, seed=cfg.seed + 1000 * it + ctx.rank)
        rollouts = policy_rollouts(model, tokenizer, dialogues, params, cfg.rollout_batch_size)
        t1 = time.perf_counter()
        # 2. Scores: whiten(logit(R_c)) per answer (B,), Llama 2 eq. 2, whitened over the global batch.
        scores = scorer.score(dialogues, [r.text for r in rollouts], [job.is_safety[i] for i in picks])
        raw = logit(scores["combined"].float()) if "combined" in scores else scores["reward"].float()
        score = global_whiten(raw.to(ctx.device), torch.ones_like(raw, device=ctx.device), ctx)
        t2 = time.perf_counter()
        # 3. Old log-probs, values, reference log-probs, shaped rewards, advantages; all (B, R).
        batch = rollout_batch(rollouts, tokenizer.pad_token_id, ctx.device)
        with torch.no_grad():
            logits, old_values = answer_outputs(model, batch)
            old_logp = token_logprobs(logits, batch.tokens)
            ref_logp = token_logprobs(answer_outputs(ref, batch)[0], batch.tokens)
            kl = per_token_kl(old_logp, ref_logp, batch.mask)
            rewards = shape_rewards(score, kl, batch.mask, cfg.kl_beta)
            advantages, returns = gae(rewards, old_values, batch.mask, cfg.gae_gamma, cfg.gae_lambda)
            advantages = global_whiten(advantages, batch.mask, ctx)
        # 4. PPO epochs over minibatches (every rank takes the same number of steps, so DDP stays in step).
        stats: dict[str, list[float]] = {"policy_loss": [], "value_loss": [], "clip_fraction": [], "approx_kl": [],
                                         "entropy": [], "grad_norm": []}
        model.train()
        for epoch in range(cfg.ppo_epochs):
            order = torch.randperm(local_batch, generator=torch.Generator().manual_seed(cfg.seed + it * 31 + epoch))
            for start in range(0, local_batch - local_minibatch + 1, local_minibatch):
                idx = order[start:start + local_minibatch].to(ctx.device)
                mb = batch.rows(idx)
                mb_logits, values = answer_outputs(ddp_model, mb)
                logp = token_logprobs(mb_logits, mb.tokens)
                losses = ppo_losses(logp, old_logp[idx], advantages[idx], values, old_values[idx], returns[idx],
                                    mb.mask, cfg.ppo_clip)
                entropy = masked_mean(token_entropy(mb_logits), mb.mask)
                loss = losses["policy_loss"] + cfg.ppo_value_coef * losses["value_loss"] - cfg.ppo_entropy_coef * entropy
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.ppo_grad_clip)
                optimizer.step()  # constant LR: no schedule (Llama 2 §3.2.3)
                optimizer.zero_grad(set_to_none=True)
                for key, value in losses.items():
                    stats[key].append(float(value.detach()))
                stats["entropy"].append(float(entropy.detach()))
                stats["grad_norm"].append(float(grad_norm))
        t3 = time.perf_counter()
        # 5. Metrics (means over all ranks) to MLflow, one record per iteration.
        n = ctx.world_size
        row = {"reward": ctx.all_reduce_sum(float(scores.get("combined", scores["reward"]).mean())) / n,
               "kl": ctx.all_reduce_sum(float(kl.sum(1).mean())) / n,
               "response_length": ctx.all_reduce_sum(float(batch.mask.sum(1).mean())) / n,
               **{k: ctx.all_reduce_sum(sum(v) / max(1, len(v))) / n for k, v in stats.items()},
               "generation_s": t1 - t0, "scoring_s": t2 - t1, "training_s": t3 - t2,
               "samples_per_s": ctx.all_reduce_sum(local_batch) / (t3 - t0)}
        totals["generation_s"] += t1 - t0
        totals["scoring_s"] += t2 - t1
        totals["training_s"] += t3 - t2
        totals["samples"] += int(ctx.all_reduce_sum(local_batch))
        # 6. Early stopping on the held-out prompts; the best policy so far is the one on disk.
        if (it + 1) % cfg.ppo_eval_every == 0 or it + 1 == cfg.ppo_iterations:
            current = heldout_reward(model, tokenizer, scorer, job, ctx, eval_params)
            row["heldout_reward"] = current
            summary["heldout"].append(current)
            if current > best:
                best, since_best = current, 0
                save_policy(model, tokenizer, job.output_dir, ctx)
            else:
                since_best += 1
        summary["history"].append(row)
        metrics_log.log(it + 1, row, total_steps=cfg.ppo_iterations)
        summary["stopped_early"] = since_best >= cfg.ppo_patience
        last = summary["stopped_early"] or it + 1 == cfg.ppo_iterations
        saved = None
        if job.checkpoint_dir and ((it + 1) % cfg.ppo_checkpoint_every == 0 or last):  # FSDP: every rank its shards
            saved = ctx.save_checkpoint(job.checkpoint_dir, it + 1, model, optimizer, constant, extra={
                "summary": summary, "totals": totals, "best": best, "since_best": since_best})
        ctx.report({"iteration": it + 1, **{k: v for k, v in row.items() if isinstance(v, float)}}, saved)
        if job.on_iteration is not None:
            job.on_iteration(it + 1)
    seconds = totals["generation_s"] + totals["scoring_s"] + totals["training_s"]
    summary.update(iterations=len(summary["history"]), heldout_best=best, output_dir=job.output_dir,
                   samples_per_s=totals["samples"] / max(seconds, 1e-9), **totals,
                   **{k: [r[k] for r in summary["history"]] for k in ("reward", "kl", "clip_fraction", "value_loss",
                                                                      "entropy", "response_length")})
    return summary


def train_ppo(job: PPOJob, opts: LaunchOptions) -> dict[str, Any]:
    """Run the recipe; returns rank 0's summary (per-iteration metrics, held-out rewards, timings, output_dir)."""
    sh.refuse_lora("rlhf", job.model.lora_rank, opts.sharding if opts.num_workers > 1 else "none")
    Path(job.output_dir).mkdir(parents=True, exist_ok=True)
    return launch(ppo_loop, job, opts)


def ppo_launch_options(cfg: RLHFConfig, storage_path: str, name: str, storage_endpoint: str = "") -> LaunchOptions:
    """PPO's workers, from the rlhf section; run storage may be a shared URI (s3://...) with its endpoint."""
    return LaunchOptions(use_ray=cfg.use_ray, num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                         cpus_per_worker=cfg.cpus_per_worker, storage_path=storage_path, name=name,
                         storage_endpoint=storage_endpoint, max_failures=getattr(cfg, "max_failures", 0),
                         sharding=cfg.sharding)


__all__ = ["PPOJob", "PolicyWithValue", "RewardModelFolders", "gae", "global_whiten", "masked_mean", "per_token_kl", "ppo_losses",
           "ppo_launch_options", "ppo_loop", "rollout_batch", "shape_rewards", "token_entropy", "token_logprobs",
           "train_ppo"]
