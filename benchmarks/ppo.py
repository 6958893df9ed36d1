"""PPO step time of this recipe (generation / scoring / training, samples/s) on Ray Train with 1 and 2 workers,
rejection-sampling rollouts on 1 and 2 Ray actors, and TRL 1.12's experimental PPO on the same policy and prompts.

One run. Policy: the tiny preset (random init, tokenizer trained on stdlib sources); reward models: two
reward-model heads on that policy (real RM forwards, random scores); prompts: the default SFT set's questions.
Same batch (16), minibatch (4), 1 PPO epoch, response length and iterations on both sides.
TRL runs in a subprocess with TRL 1.12 on PYTHONPATH (`pip install --target DIR --no-deps trl==1.12.0`).

    .venv/bin/python benchmarks/ppo.py --out /tmp/ppo-bench [--trl-path /tmp/trl112] [--iterations 4]
Appends the figures to benchmarks/RESULTS.md (section "ppo").
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import torch  # noqa: E402

from alignline.config import load_config  # noqa: E402
from alignline.services.data import default_sft_table  # noqa: E402
from alignline.services.generation import RolloutPool, SamplingParams  # noqa: E402
from alignline.services.models import build_model, count_parameters, save_model, train_bpe_tokenizer  # noqa: E402
from alignline.services.models.reward_model import reward_model_from_policy, save_reward_model  # noqa: E402
from alignline.services.training import LaunchOptions, PPOJob, PromptSet, RewardModelFolders, train_ppo  # noqa: E402

SOURCES = ("json", "os", "re", "collections", "pathlib", "inspect", "argparse", "typing")
BATCH, MINIBATCH = 16, 4

TRL_SCRIPT = r'''
import json, sys, time, os
os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from trl.experimental.ppo import PPOConfig, PPOTrainer
a = json.loads(sys.argv[1])
tok = AutoTokenizer.from_pretrained(a["policy"]); tok.padding_side = "left"
policy = AutoModelForCausalLM.from_pretrained(a["policy"]); ref = AutoModelForCausalLM.from_pretrained(a["policy"])
rm = AutoModelForSequenceClassification.from_pretrained(a["policy"], num_labels=1)
vm = AutoModelForSequenceClassification.from_pretrained(a["policy"], num_labels=1)
for m in (rm, vm):
    m.config.pad_token_id = tok.pad_token_id
ds = Dataset.from_dict({"input_ids": a["prompts"]})
args = PPOConfig(output_dir=a["out"], per_device_train_batch_size=a["minibatch"], gradient_accumulation_steps=1,
                 num_mini_batches=a["batch"] // a["minibatch"], num_ppo_epochs=1, total_episodes=a["batch"] * a["iterations"],
                 response_length=a["response_length"], stop_token="eos", learning_rate=a["lr"], kl_coef=0.01,
                 local_rollout_forward_batch_size=a["batch"], num_sample_generations=0, bf16=False, fp16=False,
                 gradient_checkpointing=False, report_to=[], logging_steps=1, save_strategy="no", seed=0,
                 temperature=1.0, use_cpu=True)
trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=ref, reward_model=rm,
                     train_dataset=ds, value_model=vm)
t0 = time.perf_counter(); trainer.train(); dt = time.perf_counter() - t0
print("RESULT " + json.dumps({"seconds": dt, "samples": a["batch"] * a["iterations"]}))
'''


def setup(out: Path, prompts_n: int):
    cfg = load_config("tiny")
    tokenizer = train_bpe_tokenizer([inspect.getsource(importlib.import_module(m)) for m in SOURCES], cfg.model.vocab_size)
    policy = build_model(cfg.model, tokenizer=tokenizer, seed=0)
    save_model(policy, tokenizer, out / "policy")
    for i, name in enumerate(("rm-helpfulness", "rm-safety")):
        save_reward_model(reward_model_from_policy(policy, seed=i), tokenizer, out / name)
    prompts = PromptSet.from_sft_table(default_sft_table(prompts_n)).subset(prompts_n)
    return cfg, tokenizer, policy, prompts


def run_ours(cfg, out: Path, prompts: PromptSet, workers: int, iterations: int, response_length: int, lr: float) -> dict:
    rl = cfg.rlhf.__class__(**{**cfg.rlhf.__dict__, "ppo_batch_size": BATCH, "ppo_minibatch_size": MINIBATCH,
                               "ppo_epochs": 1, "ppo_iterations": iterations, "max_new_tokens": response_length,
                               "ppo_learning_rate": lr, "ppo_eval_every": 10_000, "ppo_patience": 10_000})
    train, heldout = prompts.split(4)
    scorer = RewardModelFolders(str(out / "rm-helpfulness"), str(out / "rm-safety"))
    job = PPOJob(rl, str(out / "policy"), str(out / "policy"), train.dialogues, train.is_safety, heldout.dialogues,
                 heldout.is_safety, scorer, str(out / f"ppo-w{workers}"))
    t0 = time.perf_counter()
    result = train_ppo(job, LaunchOptions(use_ray=True, num_workers=workers, cpus_per_worker=2.0 / workers,
                                          storage_path=str(out / "ray"), name=f"ppo-w{workers}"))
    result["wall_s"] = time.perf_counter() - t0
    return result


def run_rollouts(out: Path, prompts: PromptSet, actors: int, k: int, response_length: int) -> dict:
    pool = RolloutPool(out / "policy", num_actors=actors, batch_size=16, cpus_per_actor=2.0 / actors)
    pool.sample(prompts.dialogues[:2], SamplingParams(4, 1.0, seed=0), 1)  # actors loaded and warm
    t0 = time.perf_counter()
    rows = pool.sample(prompts.dialogues, SamplingParams(response_length, 1.2, seed=0), k)
    dt = time.perf_counter() - t0
    pool.close()
    tokens = sum(len(r.tokens) for rs in rows for r in rs)
    return {"samples_per_s": len(prompts) * k / dt, "tokens_per_s": tokens / dt, "seconds": dt}


def run_trl(trl_path: str, out: Path, tokenizer, prompts: PromptSet, iterations: int, response_length: int,
            lr: float) -> dict | None:
    from alignline.services.models import encode_prompt

    ids = [encode_prompt(tokenizer, d) for d in prompts.dialogues]
    args = {"policy": str(out / "policy"), "prompts": ids, "batch": BATCH, "minibatch": MINIBATCH,
            "iterations": iterations, "response_length": response_length, "lr": lr, "out": str(out / "trl")}
    env = {**os.environ, "PYTHONPATH": trl_path, "HF_HUB_DISABLE_TELEMETRY": "1", "TRL_TELEMETRY": "0",
           "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", TRL_SCRIPT, json.dumps(args)], capture_output=True, text=True, env=env)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        print(proc.stderr[-3000:], file=sys.stderr)
        return None
    result = json.loads(line[7:])
    result["samples_per_s"] = result["samples"] / result["seconds"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="/tmp/ppo-bench")
    parser.add_argument("--trl-path", default="/tmp/trl112")
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--response-length", type=int, default=32)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    a = parser.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    lr = 1e-5
    cfg, tokenizer, policy, prompts = setup(out, a.prompts)
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    ours = {w: run_ours(cfg, out, prompts, w, a.iterations, a.response_length, lr) for w in (1, 2)}
    rollouts = {n: run_rollouts(out, prompts, n, 4, a.response_length) for n in (1, 2)}
    ray.shutdown()
    trl = run_trl(a.trl_path, out, tokenizer, prompts, a.iterations, a.response_length, lr) if Path(a.trl_path).is_dir() else None

    lines = ["", "## ppo", "",
             f"`benchmarks/ppo.py`, one run on {platform.machine()} with {os.cpu_count()} CPU cores (shared), "
             f"torch {torch.__version__}, preset `tiny` policy ({count_parameters(policy) / 1e6:.1f}M params), "
             f"two reward-model heads on it as helpfulness/safety RMs, {len(prompts)} prompts from the default SFT set. "
             f"PPO: batch {BATCH}, minibatch {MINIBATCH}, 1 epoch, {a.response_length}-token responses, "
             f"{a.iterations} iterations, LR {lr}. Samples/s = rollouts over generation + scoring + training time "
             "(start-up and held-out evaluation excluded).", "",
             "| run | samples/s | generation s/it | scoring s/it | training s/it | wall s (incl. start) |",
             "|---|---|---|---|---|---|"]
    for w, r in ours.items():
        n = r["iterations"]
        lines.append(f"| alignline PPO, Ray Train {w} worker{'s' if w > 1 else ''} (each samples its share) | "
                     f"{r['samples_per_s']:.1f} | {r['generation_s'] / n:.2f} | {r['scoring_s'] / n:.2f} | "
                     f"{r['training_s'] / n:.2f} | {r['wall_s']:.0f} |")
    if trl:
        lines.append(f"| TRL 1.12 `trl.experimental.ppo.PPOTrainer` (separate value + reward models, fp32) | "
                     f"{trl['samples_per_s']:.1f} | - | - | - | {trl['seconds']:.0f} (train() only) |")
    else:
        lines.append("| TRL 1.12 experimental PPO | not run (not installed or failed; see stderr) | | | | |")
    lines += ["", "Rejection-sampling rollouts (K=4 per prompt, temperature 1.2, KV cache, batch 16 per actor):", "",
              "| Ray actors | samples/s | tokens/s | seconds |", "|---|---|---|---|"]
    for n, r in rollouts.items():
        lines.append(f"| {n} | {r['samples_per_s']:.1f} | {r['tokens_per_s']:.0f} | {r['seconds']:.1f} |")
    lines += ["", "Per-iteration rewards (mean combined score) and KL, 1 worker: "
              + ", ".join(f"{x:.3f}" for x in ours[1]["reward"]) + " / "
              + ", ".join(f"{x:.3f}" for x in ours[1]["kl"]), ""]
    text = "\n".join(lines)
    print(text)
    with open(a.results, "a") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
