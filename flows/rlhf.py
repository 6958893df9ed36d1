"""Iterative RLHF flow (Llama 2 §3.2.3, §3.3, §4.2.4): latest policy + latest reward models -> policy@candidate.

CLI: `alignline rlhf --iteration N [--prompts DATASET[@VERSION]]` (plus --preset/--config/--set/--home).

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

from alignline.config import RunConfig
from alignline.config.model import ModelConfig
from alignline.config.rlhf import RLHFConfig
from alignline.config.training import SFTConfig
from alignline.flows.context import RunContext
from alignline.flows.retries import SERVER_RETRIES
from alignline.services.data import default_sft_table
from alignline.services.generation import RolloutPool, SamplingParams
from alignline.services.models import load_tokenizer, registered_folder
from alignline.services.registry import Lineage, Registry
from alignline.services.tracking import MetricsLogger, tracked_run
from alignline.services.training import (LaunchOptions, PPOJob, PromptSet, RewardModelFolders, SFTJob,
                                         context_distillation_samples, encode_sft_rows, gatt_training_dialogues,
                                         ghost_attention_dialogues, instruction_adherence, rejection_sampling_round,
                                         repair_answers, sample_gatt_answers, train_ppo, train_sft, training_dialogues,
                                         write_sft_rows)
from alignline.storage import Catalog, DatasetRef, ModelRef

BUILTIN_PROMPTS = "prompts-default"     # published by the collect flow
FROM_SFT_PROMPTS = "rlhf-prompts-from-sft"


@task
def prompt_dataset(lake: str, prompts: str | None, configured: str, stdlib_examples: int) -> str:
    """Catalog ref of the RLHF prompts: the given ref, the configured dataset, the built-in one, or the SFT set's."""
    catalog = Catalog(lake)
    if prompts is not None:
        return catalog.resolve(prompts).ref
    for name in (configured, BUILTIN_PROMPTS):
        if (found := catalog.find(name)) is not None:
            return found.ref
    table = PromptSet.from_sft_table(default_sft_table(stdlib_examples)).to_table()
    return catalog.publish(FROM_SFT_PROMPTS, table, metadata={"maker": "PromptSet.from_sft_table"}).ref


@task
def load_prompts(lake: str, ref: str, heldout_prompts: int, max_prompts: int) -> tuple[PromptSet, PromptSet]:
    """(train, held-out) prompts; the held-out ones only decide PPO's early stop."""
    train, heldout = PromptSet.from_table(Catalog(lake).read_ref(ref)).split(heldout_prompts)
    return train.subset(max_prompts), heldout


@task
def distillation_prompts(lake: str, ref: str, heldout_prompts: int, redteam: str, n: int) -> tuple[PromptSet, list[str]]:
    """(adversarial prompts for context distillation, dataset refs read): the training side's safety prompts, then
    the reviewed red-team prompts when the catalog has them, each carrying its risk category; the first n."""
    catalog = Catalog(lake)
    train, _ = PromptSet.from_table(catalog.read_ref(ref)).split(heldout_prompts)
    prompts, refs = train.safety(), []
    if (found := catalog.find(redteam)) is not None:
        red = PromptSet.from_table(catalog.read_ref(found.ref))
        prompts = prompts + replace(red, is_safety=[True] * len(red))  # every red-team prompt is adversarial
        refs.append(found.ref)
    return prompts.subset(n), refs


@task(**SERVER_RETRIES)
def sft_ancestor(mlflow_uri: str, name: str, version: str) -> str:
    """The version of pi_0: the newest SFT-made version in `name/version`'s lineage (itself when it is one)."""
    models, _ = Registry(mlflow_uri).lineage(name, version)
    for info in models:  # breadth-first from the version itself: the nearest SFT ancestor comes first
        if info.name == name and info.tags.get("lineage.method") == "sft":
            return info.version
    raise ValueError(f"{name}/{version} has no SFT-made ancestor in the registry to take PPO's KL penalty against; "
                     "set rlhf.ppo_reference = \"iteration_start\" to penalise divergence from the iteration's start")


@task(**SERVER_RETRIES)
def model_folder(mlflow_uri: str, models_dir: str, name: str, version: str) -> tuple[str, str, tuple[str, ...]]:
    """(local folder, 'name/version', the version's lineage datasets) of a registered model."""
    folder, info = registered_folder(Registry(mlflow_uri), name, version, models_dir)
    return str(folder), info.ref, info.datasets


def finetune(dialogues: list, model_dir: str, work: Path, train_on: str, sft: SFTConfig, launch: LaunchOptions,
             uri: str, run_id: str, model: ModelConfig = ModelConfig()) -> dict:
    """The SFT recipe on the stage's dialogues (answer-only loss; 'last': GAtt's last-turn-only loss)."""
    work.mkdir(parents=True, exist_ok=True)
    rows = encode_sft_rows(load_tokenizer(model_dir), dialogues, sft.seq_len, train_on)
    job = SFTJob(sft, model_dir, write_sft_rows(rows, work / "rows.npz"), str(work / "model"),
                 str(work / "checkpoints"), tracking_uri=uri, run_id=run_id, model=model)
    return train_sft(job, replace(launch, name=f"{launch.name}-{work.name}"))


def rollout_pool(model_dir: str, rl: RLHFConfig) -> RolloutPool:
    return RolloutPool(model_dir, rl.rollout_actors, rl.rollout_batch_size, rl.cpus_per_actor, rl.use_gpu)


def answer_fn(pool: RolloutPool, params: SamplingParams):
    return lambda dialogues: [rows[0] for rows in pool.sample_texts(dialogues, params, 1)]


@task
def rejection_sampling(lake: str, prompts: PromptSet, model_dir: str, scorer: RewardModelFolders, iteration: int,
                       rl: RLHFConfig, sft: SFTConfig, launch: LaunchOptions, work: str, uri: str, run_id: str, model: ModelConfig = ModelConfig()) -> dict:
    """Best of K per prompt, pooled with all earlier iterations' best (`rs-pool`), then the SFT recipe."""
    catalog = Catalog(lake)
    previous = catalog.find(rl.rs_pool_dataset) if rl.rs_pool_all_iterations else None
    rollouts = rollout_pool(model_dir, rl)
    params = SamplingParams(rl.max_new_tokens, rl.rs_temperature, rl.top_p, seed=rl.seed + iteration)
    try:
        result = rejection_sampling_round(lambda d, k: rollouts.sample_texts(d, params, k), scorer(), prompts,
                                          rl.rs_samples, iteration, catalog.read_ref(previous.ref) if previous else None)
    finally:
        rollouts.close()
    pool_ref = catalog.publish(rl.rs_pool_dataset, result.pool, parents=[previous.ref] if previous else [],
                               metadata={"iteration": iteration}).ref
    from alignline.services.evaluation.judge_agreement import rm_oracle_agreement

    # Does best-of-K pick what it should? The RMs' ranking of these very samples against the reference judge.
    agreement = rm_oracle_agreement(result.scores, result.answers, prompts.references or [None] * len(prompts),
                                    prompts.is_safety)
    logger = MetricsLogger(uri, run_id)
    logger.log(iteration, {**result.metrics(), **{f"rs_rm_oracle_{k}": v for k, v in agreement.items() if v is not None}})
    for k, best, median in result.curve:  # Llama 2 Fig. 7: reward of the best and the median of k samples
        logger.log(k, {"rs_best_of_k_max": best, "rs_best_of_k_median": median})
    trained = finetune(training_dialogues(result.pool), model_dir, Path(work), "all", sft, launch, uri, run_id, model)
    return {"output_dir": trained["output_dir"], "pool": pool_ref, **result.metrics(),
            "best_of_k": [{"k": k, "max": best, "median": median} for k, best, median in result.curve],
            "rm_oracle_agreement": agreement}


@task
def ppo(train: PromptSet, heldout: PromptSet, model_dir: str, ref_dir: str, scorer: RewardModelFolders,
        rl: RLHFConfig, launch: LaunchOptions, work: str, uri: str, run_id: str, model: ModelConfig = ModelConfig()) -> dict:
    job = PPOJob(rl, model_dir, ref_dir, train.dialogues, train.is_safety, heldout.dialogues, heldout.is_safety,
                 scorer, f"{work}/model", tracking_uri=uri, run_id=run_id, checkpoint_dir=f"{work}/checkpoints", model=model)
    result = train_ppo(job, launch)
    return {k: result[k] for k in ("output_dir", "iterations", "heldout_initial", "heldout_best", "stopped_early",
                                   "samples_per_s")}


@task
def ghost_attention(prompts: PromptSet, model_dir: str, rl: RLHFConfig, sft: SFTConfig, launch: LaunchOptions,
                    work: str, uri: str, run_id: str, model: ModelConfig = ModelConfig()) -> dict:
    """Multi-turn dialogues with a system instruction sampled with it on every turn, trained with it only first."""
    users = [d[-1]["content"] for d, s in zip(prompts.dialogues, prompts.is_safety) if not s]
    dialogues = ghost_attention_dialogues(users, rl.gatt_dialogues, rl.gatt_turns, seed=rl.seed)
    pool = rollout_pool(model_dir, rl)
    try:
        answers = sample_gatt_answers(answer_fn(pool, SamplingParams(rl.max_new_tokens, 1.0, rl.top_p, rl.seed)),
                                      dialogues)
    finally:
        pool.close()
    repaired = 0
    if rl.gatt_repair:  # answers that break the instruction, edited by its own rules before training
        fixed = [repair_answers(d, a) for d, a in zip(dialogues, answers)]
        answers, repaired = [a for a, _ in fixed], sum(n for _, n in fixed)
    samples = [s for d, a in zip(dialogues, answers) for s in gatt_training_dialogues(d, a)]
    trained = finetune(samples, model_dir, Path(work), "last", sft, launch, uri, run_id, model)
    # Table 30: adherence at each turn of the same held dialogues, for the policy before GAtt and after it.
    evals = ghost_attention_dialogues(users, rl.gatt_eval_dialogues, rl.gatt_turns, seed=rl.seed + 1)
    adherence = {}
    for label, folder in (("without", model_dir), ("with", trained["output_dir"])):
        pool = rollout_pool(folder, rl)
        try:
            greedy = answer_fn(pool, SamplingParams(rl.gatt_eval_max_new_tokens, 0))
            adherence[label] = instruction_adherence(greedy, evals, rl.gatt_eval_turns)
        finally:
            pool.close()
    metrics = {f"gatt_adherence_turn_{t}": v for t, v in adherence["with"].items()}
    metrics |= {f"gatt_adherence_turn_{t}_without": v for t, v in adherence["without"].items()}
    MetricsLogger(uri, run_id).log(1, {**metrics, "gatt_samples": float(len(samples)), "gatt_repaired": float(repaired)})
    return {"output_dir": trained["output_dir"], "samples": len(samples), "repaired": repaired, **metrics,
            "adherence": {label: {str(t): v for t, v in row.items()} for label, row in adherence.items()}}


@task
def context_distillation(safety: PromptSet, model_dir: str, scorer: RewardModelFolders, rl: RLHFConfig,
                         sft: SFTConfig, launch: LaunchOptions, work: str, uri: str, run_id: str, model: ModelConfig = ModelConfig()) -> dict:
    pool = rollout_pool(model_dir, rl)
    try:
        result = context_distillation_samples(answer_fn(pool, SamplingParams(rl.max_new_tokens, 0)), scorer(),
                                              safety.dialogues, safety.categories or [None] * len(safety),
                                              rl.safety_preprompt, rl.use_answer_templates)
    finally:
        pool.close()
    MetricsLogger(uri, run_id).log(1, result.metrics())
    summary = {k: v for k, v in result.metrics().items() if not k.startswith("cd.")}
    summary["by_category"] = result.by_category  # Fig. 16 per risk category: safety RM before / after, kept
    if not result.dialogues:  # nothing safer to distil: the policy passes through unchanged
        return {"output_dir": model_dir, **summary}
    trained = finetune(result.dialogues, model_dir, Path(work), "all", sft, launch, uri, run_id, model)
    return {"output_dir": trained["output_dir"], **summary}


@task(**SERVER_RETRIES)
def register_policy(mlflow_uri: str, output_dir: str, lineage: Lineage, run_id: str) -> str:
    return Registry(mlflow_uri).register_dir("policy", output_dir, lineage, run_id=run_id, alias="candidate",
                                             step=output_dir).ref


@flow(name="rlhf")
def rlhf_flow(cfg: RunConfig, iteration: int, prompts: str | None = None) -> dict:
    from alignline.services.training import ppo_launch_options

    ctx = RunContext(cfg)
    rl, uri, lake, models = cfg.rlhf, ctx.mlflow_uri, str(ctx.data.lake), str(ctx.data.models)
    prompts_ref = prompt_dataset(lake, prompts, rl.prompts_dataset, cfg.sft.stdlib_examples)
    train, heldout = load_prompts(lake, prompts_ref, rl.heldout_prompts, rl.max_prompts)
    start_dir, parent, _ = model_folder(uri, models, rl.policy_model, "latest")
    helpful_dir, helpful_ref, helpful_data = model_folder(uri, models, rl.helpful_rm, rl.rm_version)
    safety_dir, safety_ref, safety_data = model_folder(uri, models, rl.safety_rm, rl.rm_version)
    scorer = RewardModelFolders(helpful_dir, safety_dir, cfg.reward.safety_threshold, "cuda" if rl.use_gpu else "cpu")
    key = f"iter{iteration}-{DatasetRef.parse(prompts_ref).version}-{parent.replace('/', '-')}"
    work = Path(ctx.work("rlhf", "rlhf", "sft", "reward", key=key))
    if rl.rollout_actors or rl.use_ray:
        ctx.init_ray()  # rollout actors and PPO workers run on this data dir's Ray head
    sft_launch = ctx.launch_options(cfg.sft, f"rlhf-sft-{work.name}")
    stage_sft = replace(cfg.sft, epochs=rl.finetune_epochs)  # the SFT recipe, rl.finetune_epochs passes per stage
    base = Lineage(datasets=tuple(dict.fromkeys((prompts_ref, *helpful_data, *safety_data))),
                   config_hash=cfg.digest("rlhf", "sft", "reward"),
                   extra={"iteration": str(iteration), "reward_models": f"{helpful_ref},{safety_ref}"})
    out: dict = {"prompts": prompts_ref, "parent": parent, "reward_models": [helpful_ref, safety_ref], "stages": {}}
    current_dir, current_ref = start_dir, parent

    def stage(method: str, run) -> None:
        nonlocal current_dir, current_ref
        params = {**cfg.to_dict()["rlhf"], "iteration": iteration, "parent": current_ref, "prompts": prompts_ref}
        with tracked_run(uri, "rlhf", f"rlhf-{cfg.preset}-iter{iteration}-{method}", params) as run_id:
            result = run(str(work / method), run_id)
            datasets = base.datasets + ((result["pool"],) if "pool" in result else ())
            lineage = replace(base, datasets=datasets, method=method, parents=(current_ref, helpful_ref, safety_ref))
            # A stage that changed nothing (no distilled answer was safer) registers no new version.
            ref = (current_ref if result["output_dir"] == current_dir
                   else register_policy(uri, result["output_dir"], lineage, run_id))
        out["stages"][method] = {"model": ref, "run_id": run_id,
                                 **{k: v for k, v in result.items() if k != "output_dir"}}
        current_dir, current_ref = result["output_dir"], ref

    stage("rejection_sampling", lambda w, r: rejection_sampling(lake, train, current_dir, scorer, iteration, rl,
                                                                stage_sft, sft_launch, w, uri, r, cfg.model))
    if rl.ppo_enabled:  # KL against pi_0, the SFT model, in every iteration (Llama 2 §3.2.3, eq. 3)
        ppo_launch = ppo_launch_options(rl, cfg.servers.train_storage or str(ctx.data.ray_storage),
                                        f"rlhf-ppo-{work.name}", cfg.servers.train_storage_endpoint)
        ref_dir, ref = start_dir, parent
        if rl.ppo_reference == "sft":
            ref_version = sft_ancestor(uri, rl.policy_model, ModelRef.parse(parent).version)
            ref_dir, ref, _ = model_folder(uri, models, rl.policy_model, ref_version)
        out["ppo_reference"] = ref
        stage("ppo", lambda w, r: ppo(train, heldout, current_dir, ref_dir, scorer, rl, ppo_launch, w, uri, r, cfg.model))
    if rl.gatt_enabled:
        stage("gatt", lambda w, r: ghost_attention(train, current_dir, rl, stage_sft, sft_launch, w, uri, r, cfg.model))
    if rl.context_distillation_enabled:
        adversarial, redteam_refs = distillation_prompts(lake, prompts_ref, rl.heldout_prompts, rl.redteam_dataset,
                                                         rl.context_distillation_prompts)
        base = replace(base, datasets=tuple(dict.fromkeys((*base.datasets, *redteam_refs))))
        stage("context_distillation", lambda w, r: context_distillation(adversarial, current_dir, scorer, rl, stage_sft,
                                                                        sft_launch, w, uri, r, cfg.model))
    out["model"] = current_ref
    return out


def run_rlhf(cfg: RunConfig, iteration: int, prompts: str | None = None) -> dict:
    """What `alignline rlhf` calls: returns the final policy ref (alias candidate), one entry per stage, lineage refs."""
    return rlhf_flow(cfg, iteration=iteration, prompts=prompts)
