"""Iterative RLHF flow (Llama 2 §3.2.3, §3.3, §4.2.4): latest policy + latest reward models -> policy@candidate.

CLI the lead wires in flows/cli.py:
    alignline rlhf --iteration N [--prompts DATASET[@VERSION]] [--tracking-uri URI]
                   [--preset tiny] [--config run.toml] [--set rlhf.ppo_enabled=true ...]
    -> run_rlhf(cfg, iteration=N, prompts=..., tracking_uri=...)

Stages, each registered as a new `policy` version (alias candidate) whose parent
is the stage before: rejection sampling (pooled with the best answers of all
earlier iterations, catalog dataset `rs-pool`), then PPO when
`rlhf.ppo_enabled`, then Ghost Attention and safety context distillation when
enabled. Lineage: prompt and pool datasets, the reward models' own datasets
(comparisons), the parent policy and both reward-model versions, method, config hash.
Without --prompts: `rlhf.prompts_dataset`, else the built-in `prompts-default`,
else prompts cut from the default SFT set.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from alignline.config import RunConfig
from alignline.flows.context import RunContext
from alignline.services.data import default_sft_table
from alignline.services.generation import RolloutPool, SamplingParams
from alignline.services.models import load_tokenizer, registered_folder
from alignline.services.registry import Lineage, Registry
from alignline.services.training import (PPOJob, PromptSet, RewardModelFolders, SFTJob,
                                         context_distillation_samples, encode_sft_rows, end_run,
                                         gatt_training_dialogues, ghost_attention_dialogues, instruction_adherence,
                                         ppo_launch_options, rejection_sampling_round, sample_gatt_answers,
                                         start_run, train_ppo, train_sft, training_dialogues, write_sft_rows)
from alignline.services.training.tracking import MetricsLogger
from alignline.storage.catalog import CatalogError

BUILTIN_PROMPTS = "prompts-default"     # published by the collect flow (issue 5)
FROM_SFT_PROMPTS = "rlhf-prompts-from-sft"


@task(cache_policy=NO_CACHE)
def prompt_dataset(ctx: RunContext, prompts: str | None) -> str:
    """Catalog ref of the RLHF prompts: the given ref, the configured dataset, the built-in one, or the SFT set's."""
    if prompts is not None:
        name, _, version = prompts.partition("@")
        return ctx.catalog.get(name, version or "latest").ref
    for name in (ctx.cfg.rlhf.prompts_dataset, BUILTIN_PROMPTS):
        try:
            return ctx.catalog.get(name).ref
        except CatalogError:
            continue
    table = PromptSet.from_sft_table(default_sft_table(ctx.cfg.sft.stdlib_examples)).to_table()
    return ctx.catalog.publish(FROM_SFT_PROMPTS, table, metadata={"maker": "PromptSet.from_sft_table"}).ref


@task(cache_policy=NO_CACHE)
def load_prompts(ctx: RunContext, ref: str) -> tuple[PromptSet, PromptSet]:
    """(train, held-out) prompts; the held-out ones only decide PPO's early stop."""
    name, _, version = ref.partition("@")
    train, heldout = PromptSet.from_table(ctx.catalog.read(name, version)).split(ctx.cfg.rlhf.heldout_prompts)
    return train.subset(ctx.cfg.rlhf.max_prompts), heldout


@task(cache_policy=NO_CACHE)
def model_folder(ctx: RunContext, registry: Registry, name: str, version: str) -> tuple[str, str, tuple[str, ...]]:
    """(local folder, 'name/version', the version's lineage datasets) of a registered model."""
    folder, info = registered_folder(registry, name, version, ctx.work_dir("models"))
    datasets = tuple(d for d in info.tags.get("lineage.datasets", "").split(",") if d)
    return str(folder), info.ref, datasets


@task(cache_policy=NO_CACHE)
def finetune(ctx: RunContext, dialogues: list, model_dir: str, work: Path, train_on: str, uri: str, run_id: str) -> dict:
    """The SFT recipe on the stage's dialogues (answer-only loss; 'last': GAtt's last-turn-only loss)."""
    work.mkdir(parents=True, exist_ok=True)
    rows = encode_sft_rows(load_tokenizer(model_dir), dialogues, ctx.cfg.sft.seq_len, train_on)
    job = SFTJob(ctx.cfg.sft, model_dir, write_sft_rows(rows, work / "rows.npz"), str(work / "model"),
                 str(work / "checkpoints"), tracking_uri=uri, run_id=run_id)
    return train_sft(job, ctx.launch_options(ctx.cfg.sft, f"rlhf-sft-{work.parent.name}-{work.name}"))


def rollout_pool(ctx: RunContext, model_dir: str) -> RolloutPool:
    cfg = ctx.cfg.rlhf
    if cfg.rollout_actors:
        ctx.init_ray()
    return RolloutPool(model_dir, cfg.rollout_actors, cfg.rollout_batch_size, cfg.cpus_per_actor, cfg.use_gpu)


def answer_fn(pool: RolloutPool, params: SamplingParams):
    return lambda dialogues: [rows[0] for rows in pool.sample_texts(dialogues, params, 1)]


@task(cache_policy=NO_CACHE)
def rejection_sampling(ctx: RunContext, prompts: PromptSet, model_dir: str, scorer: RewardModelFolders,
                       iteration: int, work: Path, uri: str, run_id: str) -> dict:
    """Best of K per prompt, pooled with all earlier iterations' best (`rs-pool`), then the SFT recipe."""
    cfg = ctx.cfg.rlhf
    pool_ref = None
    try:
        previous = ctx.catalog.get(cfg.rs_pool_dataset) if cfg.rs_pool_all_iterations else None
    except CatalogError:
        previous = None
    rollouts = rollout_pool(ctx, model_dir)
    params = SamplingParams(cfg.max_new_tokens, cfg.rs_temperature, cfg.top_p, seed=cfg.seed + iteration)
    try:
        result = rejection_sampling_round(lambda d, k: rollouts.sample_texts(d, params, k), scorer(), prompts,
                                          cfg.rs_samples, iteration,
                                          ctx.catalog.read(previous.name, previous.version) if previous else None)
    finally:
        rollouts.close()
    pool_ref = ctx.catalog.publish(cfg.rs_pool_dataset, result.pool, parents=[previous.ref] if previous else [],
                                   metadata={"iteration": iteration}).ref
    MetricsLogger(uri, run_id).log(iteration, result.metrics())
    trained = finetune(ctx, training_dialogues(result.pool), model_dir, work, "all", uri, run_id)
    return {"output_dir": trained["output_dir"], "pool": pool_ref, **result.metrics()}


@task(cache_policy=NO_CACHE)
def ppo(ctx: RunContext, train: PromptSet, heldout: PromptSet, model_dir: str, ref_dir: str,
        scorer: RewardModelFolders, work: Path, uri: str, run_id: str) -> dict:
    cfg = ctx.cfg.rlhf
    if cfg.use_ray:
        ctx.init_ray()
    job = PPOJob(cfg, model_dir, ref_dir, train.dialogues, train.is_safety, heldout.dialogues, heldout.is_safety,
                 scorer, str(work / "model"), tracking_uri=uri, run_id=run_id, checkpoint_dir=str(work / "checkpoints"))
    result = train_ppo(job, ppo_launch_options(cfg, str(ctx.work_dir("ray")), f"rlhf-ppo-{work.parent.name}"))
    return {k: result[k] for k in ("output_dir", "iterations", "heldout_initial", "heldout_best", "stopped_early",
                                   "samples_per_s")}


@task(cache_policy=NO_CACHE)
def ghost_attention(ctx: RunContext, prompts: PromptSet, model_dir: str, work: Path, uri: str, run_id: str) -> dict:
    """Multi-turn dialogues with a system instruction sampled with it on every turn, trained with it only first."""
    cfg = ctx.cfg.rlhf
    users = [d[-1]["content"] for d, s in zip(prompts.dialogues, prompts.is_safety) if not s]
    dialogues = ghost_attention_dialogues(users, cfg.gatt_dialogues, cfg.gatt_turns, seed=cfg.seed)
    pool = rollout_pool(ctx, model_dir)
    try:
        answers = sample_gatt_answers(answer_fn(pool, SamplingParams(cfg.max_new_tokens, 1.0, cfg.top_p, cfg.seed)),
                                      dialogues)
    finally:
        pool.close()
    samples = [s for d, a in zip(dialogues, answers) for s in gatt_training_dialogues(d, a)]
    trained = finetune(ctx, samples, model_dir, work, "last", uri, run_id)
    pool = rollout_pool(ctx, trained["output_dir"])
    try:
        evals = ghost_attention_dialogues(users, cfg.gatt_eval_dialogues, cfg.gatt_turns, seed=cfg.seed + 1)
        adherence = instruction_adherence(answer_fn(pool, SamplingParams(cfg.max_new_tokens, 0)), evals)
    finally:
        pool.close()
    metrics = {f"gatt_adherence_turn_{t}": v for t, v in adherence.items()}
    MetricsLogger(uri, run_id).log(1, {**metrics, "gatt_samples": float(len(samples))})
    return {"output_dir": trained["output_dir"], "samples": len(samples), **metrics}


@task(cache_policy=NO_CACHE)
def context_distillation(ctx: RunContext, prompts: PromptSet, model_dir: str, scorer: RewardModelFolders,
                         work: Path, uri: str, run_id: str) -> dict:
    cfg = ctx.cfg.rlhf
    safety = prompts.take([i for i, s in enumerate(prompts.is_safety) if s])
    pool = rollout_pool(ctx, model_dir)
    try:
        result = context_distillation_samples(answer_fn(pool, SamplingParams(cfg.max_new_tokens, 0)), scorer(),
                                              safety.dialogues, safety.categories or [None] * len(safety),
                                              cfg.safety_preprompt, cfg.use_answer_templates)
    finally:
        pool.close()
    MetricsLogger(uri, run_id).log(1, result.metrics())
    if not result.dialogues:  # nothing safer to distil: the policy passes through unchanged
        return {"output_dir": model_dir, **result.metrics()}
    trained = finetune(ctx, result.dialogues, model_dir, work, "all", uri, run_id)
    return {"output_dir": trained["output_dir"], **result.metrics()}


@task(cache_policy=NO_CACHE)
def register_policy(registry: Registry, output_dir: str, lineage: Lineage, run_id: str) -> str:
    return registry.register_dir("policy", output_dir, lineage, run_id=run_id, alias="candidate").ref


@flow(name="rlhf")
def rlhf_flow(cfg: RunConfig, iteration: int, prompts: str | None = None, tracking_uri: str | None = None) -> dict:
    ctx = RunContext(cfg)
    rl = cfg.rlhf
    uri = tracking_uri or ctx.mlflow_uri
    registry = Registry(uri)
    prompts_ref = prompt_dataset(ctx, prompts)
    train, heldout = load_prompts(ctx, prompts_ref)
    start_dir, parent, _ = model_folder(ctx, registry, rl.policy_model, "latest")
    helpful_dir, helpful_ref, helpful_data = model_folder(ctx, registry, rl.helpful_rm, rl.rm_version)
    safety_dir, safety_ref, safety_data = model_folder(ctx, registry, rl.safety_rm, rl.rm_version)
    scorer = RewardModelFolders(helpful_dir, safety_dir, cfg.reward.safety_threshold, "cuda" if rl.use_gpu else "cpu")
    work = ctx.work_dir("rlhf", f"iter{iteration}-{cfg.digest()}-{prompts_ref.split('@')[1]}-{parent.replace('/', '-')}")
    base = Lineage(datasets=tuple(dict.fromkeys((prompts_ref, *helpful_data, *safety_data))),
                   config_hash=cfg.digest(), extra={"iteration": str(iteration), "reward_models": f"{helpful_ref},{safety_ref}"})
    out: dict = {"prompts": prompts_ref, "parent": parent, "reward_models": [helpful_ref, safety_ref], "stages": {}}
    current_dir, current_ref = start_dir, parent

    def stage(method: str, run) -> None:
        nonlocal current_dir, current_ref
        run_id = start_run(uri, "rlhf", f"rlhf-{cfg.preset}-iter{iteration}-{method}",
                           {**cfg.to_dict()["rlhf"], "iteration": iteration, "parent": current_ref, "prompts": prompts_ref})
        try:
            result = run(work / method, run_id)
            datasets = base.datasets + ((result["pool"],) if "pool" in result else ())
            lineage = replace(base, datasets=datasets, method=method, parents=(current_ref, helpful_ref, safety_ref))
            # A stage that changed nothing (no distilled answer was safer) registers no new version.
            ref = (current_ref if result["output_dir"] == current_dir
                   else register_policy(registry, result["output_dir"], lineage, run_id))
        except BaseException:
            end_run(uri, run_id, "FAILED")
            raise
        end_run(uri, run_id)
        out["stages"][method] = {"model": ref, "run_id": run_id,
                                 **{k: v for k, v in result.items() if k != "output_dir"}}
        current_dir, current_ref = result["output_dir"], ref

    stage("rejection_sampling", lambda w, r: rejection_sampling(ctx, train, current_dir, scorer, iteration, w, uri, r))
    if rl.ppo_enabled:  # KL against the policy this iteration started from (pi_0, Llama 2 eq. 3)
        stage("ppo", lambda w, r: ppo(ctx, train, heldout, current_dir, start_dir, scorer, w, uri, r))
    if rl.gatt_enabled:
        stage("gatt", lambda w, r: ghost_attention(ctx, train, current_dir, w, uri, r))
    if rl.context_distillation_enabled:
        stage("context_distillation", lambda w, r: context_distillation(ctx, train, current_dir, scorer, w, uri, r))
    out["model"] = current_ref
    return out


def run_rlhf(cfg: RunConfig, iteration: int, prompts: str | None = None, tracking_uri: str | None = None) -> dict:
    """What `alignline rlhf` calls: returns the final policy ref (alias candidate), one entry per stage, lineage refs."""
    return rlhf_flow(cfg, iteration=iteration, prompts=prompts, tracking_uri=tracking_uri)
