"""`alignline sweep`: safety data scaling (Llama 2 §4.2.3, Figures 15 and 33).

For each share in `sweep.safety_shares` (default 0/10/25/50/100%): fine-tune the model SFT starts from (the base
model, or `model.checkpoint`) on every helpfulness demonstration plus that share of the safety demonstrations
(nested subsets, published as `sweep-sft-safety-<pct>` datasets), and train a safety RM on that share of the safety
comparisons. Each policy variant answers the held-out evaluation prompts and the borderline prompts; the latest
reward models (fixed for every variant, like the paper's Meta RMs) score the answers, the refusal classifier counts
false refusals. One MLflow run (experiment `sweep`) holds a metric per share (step = percent), the table and the
plot; variants are experiments, never registered as policies.

CLI: `alignline sweep [--shares 0,0.1,0.25,0.5,1] [--data DATASET[@VERSION]]`.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from prefect import flow, get_run_logger, task

from alignline.config import RunConfig
from alignline.config.reward import RewardConfig
from alignline.flows.context import RunContext
from alignline.flows.evaluate import eval_prompts, eval_set, rm_scores
from alignline.flows.reward import SAFETY_DATASET, read_comparisons
from alignline.flows.sft import encode_rows, sft_dataset, start_model, train_policy
from alignline.services.evaluation.safety_sweep import SweepPoint, sweep_point, with_safety_share, write_sweep_report
from alignline.services.tracking import log_artifacts, log_metrics, tracked_run
from alignline.services.training import (LaunchOptions, RewardJob, SFTJob, encode_pairs, mix_safety, train_reward,
                                         write_pairs)
from alignline.storage import Catalog, DatasetRef

SWEEP_DATASET = "sweep-sft-safety"


@task
def share_dataset(lake: str, sft_ref: str, share: float) -> tuple[str, int, int]:
    """(catalog ref, safety rows kept, helpful rows) of the SFT data with `share` of its safety rows."""
    catalog = Catalog(lake)
    table, kept, total = with_safety_share(catalog.read_ref(sft_ref), share)
    ref = catalog.publish(f"{SWEEP_DATASET}-{round(100 * share)}", table, parents=[sft_ref],
                          metadata={"safety_share": str(share), "safety_rows": str(kept), "safety_rows_all": str(total)})
    return ref.ref, kept, table.num_rows - kept


@task
def answers_of(model_dir: str, dialogues: list[list[dict]], max_new_tokens: int) -> list[str]:
    """Low-temperature, seeded answers of a variant (the same sampling for every variant)."""
    from alignline.services.generation import SamplingParams, generate_chat
    from alignline.services.models import load_model, load_tokenizer

    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, top_p=1.0, seed=1234)
    return list(generate_chat(load_model(model_dir), load_tokenizer(model_dir), dialogues, params))


@task
def safety_rm_data(mlflow_uri: str, lake: str, rc: RewardConfig) -> list[str]:
    """The comparison datasets the latest safety RM was trained on (its lineage), so the share-RMs learn from the
    same pairs; without one, the latest harvested safety comparisons and the public sets."""
    from alignline.services.registry import Registry, RegistryError

    catalog = Catalog(lake)
    try:
        refs = [d for d in Registry(mlflow_uri).latest("rm-safety").datasets if catalog.find(d) is not None]
    except RegistryError:
        refs = []
    return refs or [v.ref for name in (SAFETY_DATASET, *rc.public_datasets) if (v := catalog.find(name))]


def _pair_key(row: dict) -> str:
    return hashlib.sha256(json.dumps([row["prompt"], row["chosen"], row["rejected"]]).encode()).hexdigest()


@task
def safety_rm_on_share(lake: str, comparisons: list[str], share: float, policy_dir: str, rc: RewardConfig,
                       work: str, launch: LaunchOptions) -> tuple[float | None, int, int]:
    """(held-out safety accuracy, training pairs, held-out pairs) of a safety RM trained on `share` of the safety
    comparisons, initialised from `policy_dir` (the share's own policy: RMs start from the chat model, Llama 2
    §3.2.2) and run as reward.* says (in this process, or under Ray Train)."""
    from alignline.services.evaluation import evaluate_reward_models
    from alignline.services.rewards import RewardScorer

    if not comparisons or share == 0:
        return None, 0, 0
    train, heldout, _ = read_comparisons.fn(lake, comparisons, rc.heldout_share, rc.seed, rc.public_sources)
    safety = sorted((i for i, r in enumerate(train) if r["is_safety"]), key=lambda i: _pair_key(train[i]))
    keep = set(safety[:round(share * len(safety))])  # nested subsets in a stable order, like the demonstrations
    rows, counts = mix_safety([r for i, r in enumerate(train) if not r["is_safety"] or i in keep],
                              rc.safety_helpful_share, rc.seed, rc.public_sources)
    held = [r for r in heldout if r["is_safety"]]
    if not rows or not held:
        return None, counts.get("safety", 0), len(held)
    from alignline.services.models import load_tokenizer

    pairs = write_pairs(encode_pairs(load_tokenizer(policy_dir), rows, rc.margin, rc.max_length), Path(work) / "pairs.npz")
    out = train_reward(RewardJob(rc, policy_dir, pairs, f"{work}/rm", f"{work}/rm-checkpoints"), launch)
    scorer = RewardScorer.from_folder(out["output_dir"], batch_size=rc.eval_batch_size, max_length=rc.max_length)
    ev = evaluate_reward_models({"rm-safety": scorer}, held, rc.safety_threshold, public_sources=rc.public_sources)
    metrics = ev.metrics()  # accuracy on the safety pairs (all rating levels), else over every held-out pair
    accuracy = metrics.get("rm-safety.safety.accuracy.avg", metrics.get("rm-safety.accuracy"))
    return accuracy, counts.get("safety", 0), len(held)


@flow(name="sweep", log_prints=True)
def sweep_flow(cfg: RunConfig, shares: tuple[float, ...] | None = None, data: str | None = None) -> dict:
    from alignline.services.evaluation.borderline import BORDERLINE_PROMPTS
    from alignline.services.evaluation.refusal import classify_refusals
    from alignline.services.training import PromptSet

    logger = get_run_logger()
    ctx = RunContext(cfg)
    uri, lake, models, sw = ctx.mlflow_uri, str(ctx.data.lake), str(ctx.data.models), cfg.sweep
    shares = tuple(sorted(shares if shares is not None else sw.safety_shares))
    sft_ref = sft_dataset(lake, data, cfg.sft.stdlib_examples)
    base_dir, parent = start_model(uri, models, cfg.model.checkpoint and str(cfg.model.checkpoint),
                                   cfg.sft.base_model, cfg.sft.base_version)
    # The evaluation's own draw (a quarter safety prompts), so every variant answers the same held-out prompts.
    chosen = eval_prompts(lake, eval_set(lake, cfg.evaluation.eval_dataset), sw.eval_prompts or 10**9,
                          cfg.evaluation.eval_safety_share)
    prompts = PromptSet([str(p["prompt_id"]) for p in chosen], [list(p["messages"]) for p in chosen],
                        [bool(p["is_safety"]) for p in chosen])
    borderline = [[{"role": "user", "content": p}] for p in BORDERLINE_PROMPTS]
    comparisons = safety_rm_data(uri, lake, cfg.reward)
    # Keyed on everything a point is made from: the SFT data, the start model and the safety comparisons (a new RM
    # version's lineage is new data, so its sweep is a new work folder, never an earlier run's outputs).
    data_digest = hashlib.sha256("\n".join([sft_ref, *comparisons]).encode()).hexdigest()[:8]
    key = "-".join([data_digest, parent.replace("/", "-").replace(":", "-")[-24:]])
    work = Path(ctx.work("sweep", "model", "sft", "sweep", "reward", key=key))
    points: list[SweepPoint] = []
    judges: list[str] = []
    params = {**cfg.to_dict()["sweep"], "shares": ",".join(map(str, shares)), "data": sft_ref, "parent": parent}
    with tracked_run(uri, "sweep", f"sweep-{cfg.preset}", params) as run_id:
        for share in shares:
            pct = round(100 * share)
            logger.info("sweep: %d%% of the safety demonstrations", pct)
            ref, kept, helpful_rows = share_dataset(lake, sft_ref, share)
            variant = work / f"share-{pct}"
            variant.mkdir(parents=True, exist_ok=True)
            rows = encode_rows(lake, ref, base_dir, cfg.sft, str(variant))
            job = SFTJob(cfg.sft, base_dir, rows, f"{variant}/model", f"{variant}/checkpoints", model=cfg.model)
            out = train_policy(job, ctx.launch_options(cfg.sft, f"sweep-{pct}-{work.name}"))
            folder = out["output_dir"]
            answers = answers_of(folder, prompts.dialogues + borderline, sw.max_new_tokens)
            own, border = answers[:len(prompts)], answers[len(prompts):]
            scores = rm_scores(uri, models, prompts.dialogues, own, prompts.is_safety, cfg.reward.safety_threshold)
            judges = (scores or {}).get("judges", judges)
            accuracy, pairs, held = safety_rm_on_share(lake, comparisons, share, folder, cfg.reward, str(variant),
                                                       ctx.launch_options(cfg.reward, f"sweep-rm-{pct}-{work.name}"))
            point = sweep_point(share, kept, helpful_rows, prompts.is_safety, scores, classify_refusals(own),
                                classify_refusals(border), (accuracy, pairs, held), folder)
            points.append(point)
            log_metrics(uri, run_id, {k: v for k, v in {
                "sweep.helpfulness_rm_mean": point.mean_helpfulness, "sweep.safety_rm_mean": point.mean_safety,
                "sweep.false_refusal_helpful": point.false_refusal_helpful,
                "sweep.false_refusal_borderline": point.false_refusal_borderline,
                "sweep.safety_rm_accuracy": point.safety_rm_accuracy}.items() if v is not None}, step=pct)
        report = write_sweep_report(points, judges, parent, sft_ref, work / "report")
        log_artifacts(uri, run_id, str(work / "report"), artifact_path="sweep")
    return {"run_id": run_id, "base": parent, "data": sft_ref, "judges": judges, "plot": str(report["plot"]),
            "report": str(report["markdown"]), "html": str(report["html"]), "points": [p.to_dict() for p in points]}


def run_sweep(cfg: RunConfig, shares: tuple[float, ...] | None = None, data: str | None = None) -> dict:
    """What `alignline sweep` calls: one point per safety share (RM means, false-refusal rates), plot and table."""
    return sweep_flow(cfg, shares=shares, data=data)
