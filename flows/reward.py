"""Reward-model flow (Llama 2 §3.2.2): comparisons + latest policy -> `rm-helpfulness` and `rm-safety` (alias candidate).

CLI the lead wires in flows/cli.py:
    alignline reward [--preset tiny] [--config run.toml] [--set reward.margin=large ...]
                     [--helpfulness DATASET[@VERSION]] [--safety DATASET[@VERSION]] [--tracking-uri URI]
    -> run_reward(cfg, helpfulness=..., safety=..., tracking_uri=...)
Without dataset flags it uses the latest `comparisons-helpfulness` and `comparisons-safety` that exist, and the
built-in `comparisons-demo` set when neither does (or beside them, as batch 0, with `reward.builtin_batch0`).
Both RMs start from `reward.policy_model`@`reward.policy_version`.
"""
from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from alignline.config import RunConfig
from alignline.flows.context import RunContext
from alignline.services.data import demo_comparisons_metadata, demo_comparisons_table
from alignline.services.evaluation import evaluate_reward_models, write_reward_report
from alignline.services.models import load_tokenizer, registered_folder
from alignline.services.registry import Lineage, Registry
from alignline.services.rewards import Comparison, RewardScorer, comparison_rows
from alignline.services.training import (RewardJob, encode_pairs, end_run, mix_helpfulness, mix_safety,
                                         split_heldout, start_run, train_reward, write_pairs)

HELPFULNESS_DATASET = "comparisons-helpfulness"
SAFETY_DATASET = "comparisons-safety"
DEMO_DATASET = "comparisons-demo"
REWARD_MODELS = ("rm-helpfulness", "rm-safety")


@task(cache_policy=NO_CACHE)
def comparison_datasets(ctx: RunContext, helpfulness: str | None, safety: str | None) -> list[str]:
    """Catalog refs of the comparisons: the ones named, else the latest harvested ones (plus the built-in set as batch 0
    with `reward.builtin_batch0`), else the built-in demo set."""
    named = [ref for ref in (helpfulness, safety) if ref]
    if named:
        return [ctx.catalog.get(*(ref.split("@", 1) if "@" in ref else (ref, "latest"))).ref for ref in named]
    existing = [ctx.catalog.get(name).ref for name in (HELPFULNESS_DATASET, SAFETY_DATASET) if name in ctx.catalog.names()]
    if existing and not ctx.cfg.reward.builtin_batch0:
        return existing
    n = ctx.cfg.reward.demo_stdlib_pairs  # content-addressed: publishing the same set again returns its version
    return existing + [ctx.catalog.publish(DEMO_DATASET, demo_comparisons_table(n), metadata=demo_comparisons_metadata(n)).ref]


@task(cache_policy=NO_CACHE)
def read_comparisons(ctx: RunContext, refs: list[str]) -> tuple[list[Comparison], list[Comparison]]:
    """All validated pairs, split into (train, held-out) by prompt."""
    rows: list[Comparison] = []
    for ref in refs:
        name, version = ref.split("@", 1)
        rows += comparison_rows(ctx.catalog.read(name, version), ref)
    return split_heldout(rows, ctx.cfg.reward.heldout_share, ctx.cfg.reward.seed)


@task(cache_policy=NO_CACHE)
def start_policy(ctx: RunContext, registry: Registry) -> tuple[str, str]:
    """(HF folder, registry ref) of the latest policy (Llama 2 §3.2.2: RMs start from the chat model)."""
    cfg = ctx.cfg.reward
    folder, info = registered_folder(registry, cfg.policy_model, cfg.policy_version, ctx.work_dir("models"))
    return str(folder), info.ref


@task(cache_policy=NO_CACHE)
def mix_and_encode(ctx: RunContext, rm: str, train: list[Comparison], policy_dir: str, work: Path) -> tuple[str, dict]:
    """The RM's data mix (paper proportions from the config), encoded as padded pairs with margins."""
    cfg = ctx.cfg.reward
    if rm == "rm-helpfulness":
        rows, counts = mix_helpfulness(train, cfg.helpful_extra_share, cfg.public_sources, cfg.seed)
    else:
        rows, counts = mix_safety(train, cfg.safety_helpful_share, cfg.seed)
    if not rows:
        raise ValueError(f"{rm}: no training pairs after mixing ({counts}); the comparisons hold none of its kind")
    pairs = encode_pairs(load_tokenizer(policy_dir), rows, cfg.margin, cfg.max_length)
    return write_pairs(pairs, work / f"{rm}-pairs.npz"), counts


@task(cache_policy=NO_CACHE)
def train_rm(ctx: RunContext, job: RewardJob, ray_name: str) -> dict:
    return train_reward(job, ctx.launch_options(ctx.cfg.reward, ray_name))


@task(cache_policy=NO_CACHE)
def evaluate(ctx: RunContext, output_dirs: dict[str, str], heldout: list[Comparison], folder: Path) -> dict:
    """Both RMs on the held-out pairs; report (tables like Llama 2 Tables 7-8, plots) written to `folder`."""
    cfg = ctx.cfg.reward
    scorers = {rm: RewardScorer.from_folder(d, batch_size=cfg.eval_batch_size, max_length=cfg.max_length)
               for rm, d in output_dirs.items()}
    ev = evaluate_reward_models(scorers, heldout, cfg.safety_threshold, safety_rm="rm-safety")
    write_reward_report(ev, folder, title=f"Reward models ({ctx.cfg.preset}, margin {cfg.margin})")
    return ev.metrics()


@task(cache_policy=NO_CACHE)
def log_report(uri: str, run_ids: dict[str, str], folder: Path, metrics: dict[str, float]) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri=uri)
    for run_id in run_ids.values():
        client.log_artifacts(run_id, str(folder), artifact_path="eval")
        client.log_batch(run_id, metrics=[Metric(f"eval.{k}", float(v), 0, 0) for k, v in metrics.items()])


@task(cache_policy=NO_CACHE)
def register_rm(registry: Registry, rm: str, output_dir: str, datasets: list[str], parent: str, config_hash: str,
                run_id: str, counts: dict, margin: str, metrics: dict[str, float]) -> str:
    lineage = Lineage(datasets=tuple(datasets), parents=(parent,), config_hash=config_hash, method="reward",
                      extra={"reward_model": rm, "margin": margin, "mix": json.dumps(counts, sort_keys=True)})
    version = registry.register_dir(rm, output_dir, lineage, run_id=run_id, alias="candidate")
    # Accuracy by rating level on the RM's own kind of held-out pairs (Table 8), for model cards.
    kind = "safety" if rm == "rm-safety" else "helpfulness"
    by_level = {k.rsplit(".", 1)[1]: v for k, v in metrics.items() if k.startswith(f"{rm}.{kind}.accuracy.")}
    registry.client.set_model_version_tag(rm, version.version, "eval.accuracy_by_level", json.dumps(by_level))
    return version.ref


@flow(name="reward")
def reward_flow(cfg: RunConfig, helpfulness: str | None = None, safety: str | None = None,
                tracking_uri: str | None = None) -> dict:
    ctx = RunContext(cfg)
    uri = tracking_uri or ctx.mlflow_uri
    registry = Registry(uri)
    refs = comparison_datasets(ctx, helpfulness, safety)
    train, heldout = read_comparisons(ctx, refs)
    policy_dir, parent = start_policy(ctx, registry)
    key = "-".join([cfg.digest(), *(r.split("@")[1][:8] for r in refs), parent.replace("/", "-")])
    work = ctx.work_dir("reward", key)  # same inputs: the same folder, so a rerun resumes from its checkpoints
    run_ids: dict[str, str] = {}
    results: dict[str, dict] = {}
    try:
        for rm in REWARD_MODELS:
            pairs_path, counts = mix_and_encode(ctx, rm, train, policy_dir, work)
            run_ids[rm] = start_run(uri, "reward", f"{rm}-{cfg.preset}",
                                    {**cfg.to_dict()["reward"], "data": ",".join(refs), "parent": parent,
                                     "mix": json.dumps(counts), "heldout_pairs": len(heldout)})
            job = RewardJob(cfg.reward, policy_dir, pairs_path, str(work / rm), str(work / f"{rm}-checkpoints"),
                            tracking_uri=uri, run_id=run_ids[rm])
            results[rm] = {**train_rm(ctx, job, ray_name=f"{rm}-{work.name}"), "mix": counts}
        metrics = evaluate(ctx, {rm: r["output_dir"] for rm, r in results.items()}, heldout, work / "report")
        log_report(uri, run_ids, work / "report", metrics)
        models = {rm: register_rm(registry, rm, results[rm]["output_dir"], refs, parent, cfg.digest(), run_ids[rm],
                                  results[rm]["mix"], cfg.reward.margin, metrics) for rm in REWARD_MODELS}
    except BaseException:
        for run_id in run_ids.values():
            end_run(uri, run_id, "FAILED")
        raise
    for run_id in run_ids.values():
        end_run(uri, run_id)
    return {"models": models, "data": refs, "parent": parent, "run_ids": run_ids, "report": str(work / "report"),
            "heldout_pairs": len(heldout), "metrics": metrics,
            "train": {rm: {k: r[k] for k in ("loss", "accuracy", "step", "pairs_per_s_mean", "mix")}
                      for rm, r in results.items()}}


def run_reward(cfg: RunConfig, helpfulness: str | None = None, safety: str | None = None,
               tracking_uri: str | None = None) -> dict:
    """What `alignline reward` calls: returns the registered RM refs (alias candidate), data refs, parent, metrics."""
    return reward_flow(cfg, helpfulness=helpfulness, safety=safety, tracking_uri=tracking_uri)
