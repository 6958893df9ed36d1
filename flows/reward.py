"""Reward-model flow (Llama 2 §3.2.2): comparisons + latest policy -> `rm-helpfulness` and `rm-safety` (alias candidate).

CLI: `alignline reward [--helpfulness DATASET[@VERSION]] [--safety DATASET[@VERSION]]` (plus the common options).
Without dataset flags it uses the latest `comparisons-helpfulness` and `comparisons-safety` that exist, and the
built-in `comparisons-demo` set when no comparisons exist (or beside them, as batch 0, with `reward.builtin_batch0`).
Imported public sets (`reward.public_datasets`, e.g. `comparisons-public-safety` from HH-RLHF harmless-base) join
the mix whenever they exist; their `-heldout` parts are only scored in the report (Llama 2 Table 7 layout).
Before training, the current RMs score the pairs harvested since their own data (reward drift, Llama 2 §3.4).
Both RMs start from `reward.policy_model`@`reward.policy_version`; an RM with no pairs of its kind is skipped.
"""
from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, get_run_logger, task

from alignline.config import RunConfig
from alignline.config.reward import RewardConfig
from alignline.flows.artifacts import publish_reward
from alignline.flows.context import RunContext
from alignline.flows.retries import SERVER_RETRIES
from alignline.services.data import demo_comparisons_metadata, demo_comparisons_table
from alignline.services.evaluation import evaluate_reward_models, write_reward_report
from alignline.services.evaluation.drift import drift_tags, new_comparisons, pairs_of_kind, reward_drift
from alignline.services.models import load_tokenizer, registered_folder
from alignline.services.registry import Lineage, Registry, RegistryError
from alignline.services.rewards import RewardScorer
from alignline.services.tracking import log_artifacts, log_metrics, tracked_run
from alignline.services.training import (LaunchOptions, RewardJob, drop_unusable, encode_pairs, mix_helpfulness,
                                         mix_safety, split_heldout, train_reward, write_pairs)
from alignline.storage import Catalog, DatasetRef
from alignline.storage.schemas import Comparison, comparison_rows

HELPFULNESS_DATASET = "comparisons-helpfulness"
SAFETY_DATASET = "comparisons-safety"
DEMO_DATASET = "comparisons-demo"
REWARD_MODELS = ("rm-helpfulness", "rm-safety")


@task
def comparison_datasets(lake: str, helpfulness: str | None, safety: str | None, reward: RewardConfig) -> list[str]:
    """Catalog refs of the training comparisons: the ones named, else the latest harvested ones (plus the built-in set
    as batch 0 with `reward.builtin_batch0`), else the built-in demo set when there is no data at all; the latest
    public sets (`reward.public_datasets`) in every case where they exist."""
    catalog = Catalog(lake)
    public = [v.ref for name in reward.public_datasets if (v := catalog.find(name)) is not None]
    named = [ref for ref in (helpfulness, safety) if ref]
    if named:
        return [catalog.resolve(ref).ref for ref in named] + public
    existing = [v.ref for name in (HELPFULNESS_DATASET, SAFETY_DATASET) if (v := catalog.find(name)) is not None]
    if (existing or public) and not reward.builtin_batch0:
        return existing + public
    n = reward.demo_stdlib_pairs  # content-addressed: publishing the same set again returns its version
    demo = catalog.publish(DEMO_DATASET, demo_comparisons_table(n), metadata=demo_comparisons_metadata(n)).ref
    return existing + public + [demo]


@task
def heldout_datasets(lake: str, reward: RewardConfig) -> list[str]:
    """Refs of the public sets' held-out parts (`<name>-heldout`, published by the importer): report only."""
    catalog = Catalog(lake)
    return [v.ref for name in reward.public_datasets if (v := catalog.find(f"{name}-heldout")) is not None]


@task
def read_comparisons(lake: str, refs: list[str], heldout_share: float, seed: int,
                     public_sources: tuple[str, ...] = ()) -> tuple[list[Comparison], list[Comparison], int]:
    """All validated, usable pairs of `refs` split into (train, held-out) by prompt (public pairs all train: their
    held-out part is a dataset of its own), and how many unusable pairs were dropped."""
    catalog = Catalog(lake)
    rows: list[Comparison] = []
    for ref in refs:
        rows += comparison_rows(catalog.read_ref(ref), ref)
    rows, unusable = drop_unusable(rows)
    return (*split_heldout(rows, heldout_share, seed, public_sources), unusable)


@task
def read_heldout(lake: str, refs: list[str]) -> list[Comparison]:
    """The public held-out pairs, for evaluation only."""
    catalog = Catalog(lake)
    rows = [row for ref in refs for row in comparison_rows(catalog.read_ref(ref), ref)]
    return drop_unusable(rows)[0]


@task(**SERVER_RETRIES)
def score_new_batches(mlflow_uri: str, lake: str, models_dir: str, refs: list[str], reward: RewardConfig) -> dict:
    """Reward drift (Llama 2 §3.4): each current RM (registry latest) scores the harvested pairs of its kind that
    the comparison versions it was trained on (its lineage.datasets) did not hold. -> {rm: {summary, metrics, tags}}."""
    catalog, registry = Catalog(lake), Registry(mlflow_uri)
    harvested = [r for r in refs if DatasetRef.parse(r).name in (HELPFULNESS_DATASET, SAFETY_DATASET)]
    out: dict[str, dict] = {}
    for rm in REWARD_MODELS:
        try:
            info = registry.latest(rm)
        except RegistryError:
            continue  # no RM yet: nothing drifts
        seen = {cid for ref in info.datasets if (v := catalog.find(ref)) is not None
                for cid in catalog.read_ref(v.ref).column("comparison_id").to_pylist()}
        new = [row for ref in harvested for row in comparison_rows(new_comparisons(catalog.read_ref(ref), seen), ref)]
        fresh = pairs_of_kind(rm, drop_unusable(new)[0])
        scorer = None
        if fresh:
            folder, _ = registered_folder(registry, rm, info.version, models_dir)
            scorer = RewardScorer.from_folder(folder, batch_size=reward.eval_batch_size, max_length=reward.max_length)
        result = reward_drift(rm, info.ref, scorer, fresh, reward.drift_alert_accuracy)
        if result.alert:
            get_run_logger().warning(f"reward drift: {info.ref} ranks {result.accuracy:.1%} of {result.n} new {rm} "
                                     f"pairs correctly, below reward.drift_alert_accuracy={reward.drift_alert_accuracy}")
        out[rm] = {"summary": result.summary(), "metrics": result.metrics(), "tags": drift_tags(result)}
    return out


@task(**SERVER_RETRIES)
def start_policy(mlflow_uri: str, models_dir: str, model: str, version: str) -> tuple[str, str]:
    """(HF folder, registry ref) of the latest policy (Llama 2 §3.2.2: RMs start from the chat model)."""
    folder, info = registered_folder(Registry(mlflow_uri), model, version, models_dir)
    return str(folder), info.ref


@task
def mix_and_encode(rm: str, train: list[Comparison], policy_dir: str, reward: RewardConfig, work: str) -> tuple[str | None, dict]:
    """The RM's data mix (paper proportions from the config), encoded as padded pairs with margins; (None, counts)
    when the comparisons hold no pairs of the RM's kind."""
    if rm == "rm-helpfulness":
        rows, counts = mix_helpfulness(train, reward.helpful_extra_share, reward.public_sources, reward.seed)
    else:
        rows, counts = mix_safety(train, reward.safety_helpful_share, reward.seed, reward.public_sources)
    if not rows:
        return None, counts
    pairs = encode_pairs(load_tokenizer(policy_dir), rows, reward.margin, reward.max_length)
    return write_pairs(pairs, Path(work) / f"{rm}-pairs.npz"), counts


@task
def train_rm(job: RewardJob, launch: LaunchOptions) -> dict:
    return train_reward(job, launch)


@task
def evaluate(output_dirs: dict[str, str], heldout: list[Comparison], reward: RewardConfig, folder: str, title: str) -> dict:
    """The RMs on the held-out pairs (own and public); report (tables like Llama 2 Tables 7-8, plots) in `folder`."""
    scorers = {rm: RewardScorer.from_folder(d, batch_size=reward.eval_batch_size, max_length=reward.max_length)
               for rm, d in output_dirs.items()}
    ev = evaluate_reward_models(scorers, heldout, reward.safety_threshold, safety_rm="rm-safety",
                                public_sources=reward.public_sources)
    write_reward_report(ev, folder, title=title)
    return ev.metrics()


@task(**SERVER_RETRIES)
def log_report(mlflow_uri: str, run_ids: dict[str, str], folder: str, metrics: dict[str, float]) -> None:
    for run_id in run_ids.values():
        log_artifacts(mlflow_uri, run_id, folder, artifact_path="eval")
        log_metrics(mlflow_uri, run_id, {f"eval.{k}": v for k, v in metrics.items()})


@task(**SERVER_RETRIES)
def log_drift(mlflow_uri: str, run_id: str, metrics: dict[str, float]) -> None:
    if metrics:
        log_metrics(mlflow_uri, run_id, metrics)


@task(**SERVER_RETRIES)
def register_rm(mlflow_uri: str, rm: str, output_dir: str, datasets: list[str], parent: str, config_hash: str,
                run_id: str, counts: dict, margin: str, metrics: dict[str, float], eval_datasets: list[str] = (),
                drift: dict[str, str] | None = None) -> str:
    registry = Registry(mlflow_uri)
    lineage = Lineage(datasets=tuple(datasets), parents=(parent,), config_hash=config_hash, method="reward",
                      extra={"reward_model": rm, "margin": margin, "mix": json.dumps(counts, sort_keys=True),
                             "eval_datasets": ",".join(eval_datasets)})
    version = registry.register_dir(rm, output_dir, lineage, run_id=run_id, alias="candidate", step=output_dir)
    # Accuracy by rating level on the RM's own kind of held-out pairs (Table 8), for model cards.
    kind = "safety" if rm == "rm-safety" else "helpfulness"
    by_level = {k.rsplit(".", 1)[1]: v for k, v in metrics.items() if k.startswith(f"{rm}.{kind}.accuracy.")}
    registry.set_tags(rm, version.version, {"eval.accuracy_by_level": json.dumps(by_level), **(drift or {})})
    return version.ref


@flow(name="reward")
def reward_flow(cfg: RunConfig, helpfulness: str | None = None, safety: str | None = None) -> dict:
    ctx = RunContext(cfg)
    uri, lake, rc = ctx.mlflow_uri, str(ctx.data.lake), cfg.reward
    refs = comparison_datasets(lake, helpfulness, safety, rc)
    eval_refs = heldout_datasets(lake, rc)
    train, own_heldout, unusable = read_comparisons(lake, refs, rc.heldout_share, rc.seed, rc.public_sources)
    heldout = own_heldout + read_heldout(lake, eval_refs)
    drift = score_new_batches(uri, lake, str(ctx.data.models), refs, rc)  # before retraining (Llama 2 §3.4)
    policy_dir, parent = start_policy(uri, str(ctx.data.models), rc.policy_model, rc.policy_version)
    key = "-".join([*(DatasetRef.parse(r).version[:8] for r in refs), parent.replace("/", "-"), cfg.digest("reward")[:8]])
    work = ctx.work("reward", "reward", key=key)  # same inputs: the same folder, so a rerun resumes from its checkpoints
    results: dict[str, dict] = {}
    run_ids: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for rm in REWARD_MODELS:
        pairs_path, counts = mix_and_encode(rm, train, policy_dir, rc, work)
        if pairs_path is None:
            skipped[rm] = f"no pairs of its kind in {', '.join(refs)} (mix {counts}): {rm} not trained"
            get_run_logger().warning(skipped[rm])
            continue
        params = {**cfg.to_dict()["reward"], "data": ",".join(refs), "parent": parent, "mix": json.dumps(counts),
                  "heldout_pairs": len(heldout), "unusable_pairs_dropped": unusable, "eval_data": ",".join(eval_refs)}
        with tracked_run(uri, "reward", f"{rm}-{cfg.preset}", params) as run_id:
            log_drift(uri, run_id, drift.get(rm, {}).get("metrics", {}))
            job = RewardJob(rc, policy_dir, pairs_path, f"{work}/{rm}", f"{work}/{rm}-checkpoints",
                            tracking_uri=uri, run_id=run_id, model=cfg.model)
            results[rm] = {**train_rm(job, ctx.launch_options(rc, f"{rm}-{Path(work).name}")), "mix": counts}
        run_ids[rm] = run_id
    if not results:
        raise ValueError(f"no reward model could be trained: {'; '.join(skipped.values())}")
    report = f"{work}/report"
    metrics = evaluate({rm: r["output_dir"] for rm, r in results.items()}, heldout, rc, report,
                       f"Reward models ({cfg.preset}, margin {rc.margin})")
    log_report(uri, run_ids, report, metrics)
    models = {rm: register_rm(uri, rm, r["output_dir"], refs, parent, cfg.digest("reward"), run_ids[rm], r["mix"],
                              rc.margin, metrics, eval_refs, drift.get(rm, {}).get("tags"))
              for rm, r in results.items()}
    result = {"models": models, "data": refs, "eval_data": eval_refs, "parent": parent, "run_ids": run_ids,
              "report": report, "heldout_pairs": len(heldout), "unusable_pairs_dropped": unusable, "metrics": metrics,
              "skipped": skipped, "drift": {rm: d["summary"] for rm, d in drift.items()},
              "drift_alert": any(d["summary"]["alert"] for d in drift.values()),
              "train": {rm: {k: r[k] for k in ("loss", "accuracy", "step", "pairs_per_s_mean", "mix")}
                        for rm, r in results.items()}}
    publish_reward(result, uri)
    return result


def run_reward(cfg: RunConfig, helpfulness: str | None = None, safety: str | None = None) -> dict:
    """What `alignline reward` calls: returns the registered RM refs (alias candidate), data refs, parent, metrics."""
    return reward_flow(cfg, helpfulness=helpfulness, safety=safety)
