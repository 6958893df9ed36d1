"""Ghost Attention with and without repairing the sampled answers (Llama 2 Table 30 layout), from one policy:

    python benchmarks/gatt_adherence.py --policy DIR [--dialogues 64] [--turns 3] [--epochs 2] [--eval-dialogues 16]

DIR is a policy folder (a registered SFT model's `model/` folder, or `alignline checkpoint smollm2-135m`'s output).
Both arms sample the same GAtt dialogues (instruction on every user turn) from DIR, then run the SFT recipe with the
instruction only in the system message and loss on the last turn; one trains on the answers as sampled, the other on
them after `repair_answers` (`rlhf.gatt_repair`). Adherence: share of greedy answers that follow the system
instruction at turns 2/4/6/8 of held dialogues (another seed), before GAtt and after each arm. In-process (no Ray,
no servers); the prompts are the built-in helpfulness prompts.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from alignline.config.model import ModelConfig
from alignline.config.training import SFTConfig
from alignline.services.data.default_prompts import default_prompts_table
from alignline.services.generation import SamplingParams
from alignline.services.generation.rollouts import RolloutPool
from alignline.services.models.factory import load_tokenizer
from alignline.services.training import (LaunchOptions, SFTJob, gatt_training_dialogues, ghost_attention_dialogues,
                                         instruction_adherence, repair_answers, sample_gatt_answers, train_sft)
from alignline.services.training.sft import encode_sft_rows, write_sft_rows


def answer_fn(pool: RolloutPool, params: SamplingParams):
    return lambda dialogues: [rows[0] for rows in pool.sample_texts(dialogues, params, 1)]


def adherence(folder: str, evals, turns, max_new_tokens: int) -> dict[int, float]:
    pool = RolloutPool(folder, 0, 16)
    try:
        return instruction_adherence(answer_fn(pool, SamplingParams(max_new_tokens, 0)), evals, turns)
    finally:
        pool.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", required=True)
    ap.add_argument("--dialogues", type=int, default=64)
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--eval-dialogues", type=int, default=16)
    ap.add_argument("--eval-turns", default="2,4,6,8")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--learning-rate", type=float, default=None, help="default: sft.learning_rate")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--lora-rank", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    turns = tuple(int(t) for t in args.eval_turns.split(","))
    users = [r["messages"][-1]["content"] for r in default_prompts_table().to_pylist() if not r["is_safety"]]
    dialogues = ghost_attention_dialogues(users, args.dialogues, args.turns, seed=args.seed)
    evals = ghost_attention_dialogues(users, args.eval_dialogues, args.turns, seed=args.seed + 1)
    sft = replace(SFTConfig(), epochs=args.epochs, use_ray=False,
                  **({"learning_rate": args.learning_rate} if args.learning_rate else {}))
    model = ModelConfig(lora_rank=args.lora_rank, lora_alpha=2 * args.lora_rank) if args.lora_rank else ModelConfig()
    t0 = time.monotonic()
    pool = RolloutPool(args.policy, 0, 16)
    try:
        sampled = sample_gatt_answers(answer_fn(pool, SamplingParams(args.max_new_tokens, 1.0, 0.9, args.seed)), dialogues)
    finally:
        pool.close()
    followed = sum(d.instruction.followed(a) for d, row in zip(dialogues, sampled) for a in row)
    total = sum(len(row) for row in sampled)
    print(f"sampled {total} answers with the instruction on every turn: {followed} follow it ({followed / total:.0%}); "
          f"{time.monotonic() - t0:.0f} s")
    rows = {"before GAtt": adherence(args.policy, evals, turns, args.max_new_tokens)}
    tokenizer = load_tokenizer(args.policy)
    with tempfile.TemporaryDirectory(prefix="gatt-bench-") as tmp:
        for arm in ("GAtt, answers as sampled", "GAtt, answers repaired"):
            answers = sampled
            if arm.endswith("repaired"):
                fixed = [repair_answers(d, a) for d, a in zip(dialogues, sampled)]
                answers = [a for a, _ in fixed]
                print(f"repaired {sum(n for _, n in fixed)} of {total} answers")
            samples = [s for d, a in zip(dialogues, answers) for s in gatt_training_dialogues(d, a)]
            work = Path(tmp) / arm.split(",")[-1].strip().replace(" ", "-")
            work.mkdir(parents=True)
            rows_path = str(work / "rows.npz")
            write_sft_rows(encode_sft_rows(tokenizer, samples, sft.seq_len, "last"), rows_path)
            t1 = time.monotonic()
            result = train_sft(SFTJob(sft, args.policy, rows_path, str(work / "model"), str(work / "ckpt"), model=model),
                               LaunchOptions(use_ray=False, name="gatt-bench"))
            rows[arm] = adherence(result["output_dir"], evals, turns, args.max_new_tokens)
            print(f"{arm}: {len(samples)} samples, trained in {time.monotonic() - t1:.0f} s")
    print(f"\ninstruction adherence, {args.eval_dialogues} held dialogues, greedy ({args.policy})")
    print("| policy | " + " | ".join(f"turn {t}" for t in turns) + " |")
    print("|---|" + "---|" * len(turns))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[t]:.0%}" for t in turns) + " |")


if __name__ == "__main__":
    main()
