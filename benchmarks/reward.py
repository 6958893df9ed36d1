"""Reward-model training throughput and accuracy: this recipe under Ray Train against TRL's RewardTrainer.

One run, same starting model (tiny preset, backbone + the same seeded head), the same token ids for every pair
(this recipe's encoding, handed to TRL pre-tokenized), the same margins (Table 27 'small'), batch size, LR
schedule (cosine to 10% after the same warmup) and optimizer settings. Pairs/s counts pairs over the training
steps only (start-up excluded on both sides). Held-out accuracy of both, by rating level, on the built-in demo's
comparisons (split by prompt).

    .venv/bin/python benchmarks/reward.py --out /tmp/alignline-reward-bench [--stdlib-pairs 240]
Appends the figures to benchmarks/RESULTS.md (section "reward").
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_DISABLE_TELEMETRY", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import torch  # noqa: E402

from alignline.config import load_config  # noqa: E402
from alignline.services.data import demo_comparisons_table  # noqa: E402
from alignline.services.evaluation import evaluate_reward_models  # noqa: E402
from alignline.services.evaluation.reward_eval import LEVEL_TITLES  # noqa: E402
from alignline.services.models import (RewardModel, build_model, load_model, reward_model_from_policy,  # noqa: E402
                                       save_model, train_bpe_tokenizer)
from alignline.services.rewards import RewardScorer, comparison_rows  # noqa: E402
from alignline.services.rewards.schema import MARGIN_LEVELS  # noqa: E402
from alignline.services.training import (LaunchOptions, RewardJob, encode_pairs, read_pairs, reward_warmup_steps,  # noqa: E402
                                         split_heldout, total_reward_steps, train_reward, write_pairs)

TOKENIZER_SOURCES = ("json", "os", "re", "collections", "pathlib", "inspect", "argparse", "typing", "subprocess",
                     "logging", "email.message", "http.client", "unittest.case", "dataclasses", "functools")


def run_ours(rcfg, policy: Path, pairs_path: str, out: Path, workers: int) -> dict:
    job = RewardJob(rcfg, str(policy), pairs_path, str(out / f"rm-w{workers}"), str(out / f"ckpt-w{workers}"))
    opts = LaunchOptions(use_ray=True, num_workers=workers, cpus_per_worker=2.0 / workers,
                         storage_path=str(out / "ray"), name=f"rm-w{workers}")
    t0 = time.perf_counter()
    result = train_reward(job, opts)
    result["wall_s"] = time.perf_counter() - t0
    return result


def run_trl(rcfg, tokenizer, policy: Path, pairs_path: str, out: Path, steps: int) -> tuple[dict, RewardModel]:
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForSequenceClassification
    from trl import RewardConfig as TRLConfig, RewardTrainer

    pairs = read_pairs(pairs_path)
    records = [{"chosen_ids": pairs.chosen[i, : pairs.chosen_len[i]].tolist(),
                "rejected_ids": pairs.rejected[i, : pairs.rejected_len[i]].tolist(), "margin": float(pairs.margin[i])}
               for i in range(len(pairs))]
    # The same start as ours: the policy's transformer and the head reward_model_from_policy draws for this seed.
    ours = reward_model_from_policy(load_model(policy), seed=rcfg.seed)
    model = LlamaForSequenceClassification(LlamaConfig(**{**ours.config.to_dict(), "num_labels": 1}))
    model.model.load_state_dict(ours.backbone.state_dict())
    model.score.weight.data.copy_(ours.head.weight.data)
    torch.set_num_threads(2)
    args = TRLConfig(output_dir=str(out / "trl"), per_device_train_batch_size=rcfg.batch_size, max_steps=steps,
                     learning_rate=rcfg.learning_rate, lr_scheduler_type="cosine_with_min_lr",
                     lr_scheduler_kwargs={"min_lr_rate": rcfg.min_lr_ratio},
                     warmup_steps=reward_warmup_steps(steps, rcfg), weight_decay=rcfg.weight_decay,
                     adam_beta1=rcfg.adam_beta1, adam_beta2=rcfg.adam_beta2, adam_epsilon=rcfg.adam_eps,
                     max_grad_norm=rcfg.grad_clip, max_length=rcfg.max_length, bf16=False, fp16=False,
                     gradient_checkpointing=False, report_to=[], logging_steps=1, save_strategy="no",
                     use_cpu=True, dataloader_num_workers=0, seed=rcfg.seed, center_rewards_coefficient=None)
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(records),
                            processing_class=tokenizer)
    t0 = time.perf_counter()
    trainer.train()
    runtime = time.perf_counter() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    trained = RewardModel(model.model, model.score).eval()
    return {"pairs_per_s_mean": steps * rcfg.batch_size / runtime, "train_seconds": runtime, "losses": losses,
            "step": len(losses)}, trained


def append_results(path: Path, text: str) -> None:
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    path.write_text(old.rstrip("\n") + "\n\n" + text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/alignline-reward-bench")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--stdlib-pairs", type=int, default=240)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(args.preset)
    rcfg = dataclasses.replace(cfg.reward, max_length=args.max_length, learning_rate=args.learning_rate,
                               log_every=1, checkpoint_every=10_000)
    texts = [inspect.getsource(importlib.import_module(m)) for m in TOKENIZER_SOURCES]
    tokenizer = train_bpe_tokenizer(texts, cfg.model.vocab_size)
    policy = out / "policy"
    save_model(build_model(cfg.model, tokenizer=tokenizer, seed=0), tokenizer, policy)
    rows = comparison_rows(demo_comparisons_table(args.stdlib_pairs), "comparisons-demo")
    train, heldout = split_heldout(rows, 0.2, seed=0)
    pairs = encode_pairs(tokenizer, train, rcfg.margin, rcfg.max_length)
    pairs_path = write_pairs(pairs, out / "pairs.npz")
    steps = total_reward_steps(len(pairs), rcfg)

    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        ours = {w: run_ours(rcfg, policy, pairs_path, out, w) for w in (1, 2)}
    finally:
        ray.shutdown()
    trl, trl_model = run_trl(rcfg, tokenizer, policy, pairs_path, out, steps)
    scorers = {"alignline": RewardScorer.from_folder(ours[1]["output_dir"], max_length=rcfg.max_length),
               "TRL": RewardScorer(trl_model, tokenizer, max_length=rcfg.max_length)}
    ev = evaluate_reward_models(scorers, heldout, rcfg.safety_threshold, safety_rm=None)
    figures = {"ours": {w: {k: r[k] for k in ("pairs_per_s_mean", "train_seconds", "wall_s", "step", "losses")}
                        for w, r in ours.items()}, "trl": trl, "tables": ev.tables, "train_pairs": len(pairs),
               "heldout_pairs": len(heldout)}
    (out / "figures.json").write_text(json.dumps(figures, indent=1, default=lambda o: None))

    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}"

    def level_row(name, kind):
        k = ev.tables[name]["by_kind"].get(kind)
        if k is None:
            return f"| {name} | {kind} | " + " | ".join("-" for _ in range(6)) + " |"
        lv = k["by_level"]
        return (f"| {name} | {kind} | " + " | ".join(f"{pct(lv[x]['accuracy'])} ({lv[x]['n']})" for x in MARGIN_LEVELS)
                + f" | {pct(lv['avg']['accuracy'])} | {lv['avg']['n']} |")

    gap = max(abs(a - b) for a, b in zip(ours[1]["losses"], ours[2]["losses"]))
    same_as_one_worker = f"not scored (losses match 1 worker to {gap:.1e})"
    n_params = sum(p.numel() for p in load_model(policy).parameters()) / 1e6
    load = os.getloadavg()
    lines = [
        "## reward", "",
        f"`benchmarks/reward.py`, one run on {platform.machine()} with {os.cpu_count()} CPU cores shared with other "
        f"engineers' jobs (load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end), torch {torch.__version__}, "
        f"preset `{args.preset}` ({n_params:.1f}M params, untrained base as the policy), built-in `comparisons-demo` "
        f"({args.stdlib_pairs} helpfulness + 90 safety pairs), split by prompt: {len(pairs)} train / {len(heldout)} "
        f"held-out pairs, max length {rcfg.max_length}, batch {rcfg.batch_size}, margin `{rcfg.margin}`, LR "
        f"{rcfg.learning_rate} cosine to 10% after {reward_warmup_steps(steps, rcfg)} warmup steps, 1 epoch = {steps} steps. "
        "Both sides get identical token ids and margins (TRL pre-tokenized `chosen_ids`/`rejected_ids`/`margin`) "
        "and the same initial weights. Pairs/s over training steps only.", "",
        "| run | pairs/s | train s | vs TRL | held-out accuracy |", "|---|---|---|---|---|",
        *(f"| alignline RM, Ray Train {w} worker{'s' if w > 1 else ''} (gloo) | {r['pairs_per_s_mean']:.1f} | "
          f"{r['train_seconds']:.1f} (wall {r['wall_s']:.0f} incl. Ray start) | "
          f"{r['pairs_per_s_mean'] / trl['pairs_per_s_mean']:.2f}x | "
          f"{pct(ev.tables['alignline']['overall']) if w == 1 else same_as_one_worker} |"
          for w, r in ours.items()),
        f"| TRL RewardTrainer (margin column, fp32) | {trl['pairs_per_s_mean']:.1f} | {trl['train_seconds']:.1f} | 1.00x | "
        f"{pct(ev.tables['TRL']['overall'])} |", "",
        "Held-out accuracy by rating level (%, pairs in brackets; layout of Llama 2 Table 8):", "",
        "| RM | test set | " + " | ".join(LEVEL_TITLES[x] for x in MARGIN_LEVELS) + " | Avg | pairs |",
        "|---|---|" + "---|" * 6,
        *(level_row(name, kind) for name in ("alignline", "TRL") for kind in ("helpfulness", "safety")), "",
        f"Losses (first, last): alignline {ours[1]['losses'][0]:.3f} -> {ours[1]['losses'][-1]:.3f}; "
        f"TRL {trl['losses'][0]:.3f} -> {trl['losses'][-1]:.3f}.", "",
    ]
    append_results(Path(args.results), "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
