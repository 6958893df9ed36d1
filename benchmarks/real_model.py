"""Real-model speed: SFT, reward models and generation on SmolLM2-135M-Instruct, this project against TRL / HF.

One run, one process, the same converted checkpoint, data, batch size, sequence length, optimizer settings and step
count on both sides; CPU float32 with the same thread count. Rates count the training steps only (model loading and
dataset preparation excluded on both sides), so a ratio is ours / reference within this one run.

- SFT tokens/s (non-pad input tokens): `train_sft` (full weights; LoRA r=16) vs TRL `SFTTrainer` (full; LoRA
  through `peft_config`, same r/alpha/targets) fed our packed rows pre-tokenized (input_ids + labels) in our batch
  order, so both train on the same token ids and loss mask (the first losses agree).
- RM pairs/s: `train_reward` with reward.trainable=all (full), model.lora_rank=16 (LoRA) and trainable=head (frozen
  trunk: one trunk forward per answer, cached, then head epochs; its rate counts the trunk forwards) vs TRL
  `RewardTrainer` full and LoRA on the same pre-tokenized pairs.
- Generation tokens/s: `services.generation.generate` (KV cache, left padding) vs transformers `model.generate`, at
  batch 1 and batch 16, the same prompts, EOS disabled so both produce exactly `--new-tokens` per prompt.

    .venv/bin/pip install trl                      # the `bench` extra; not needed by tests or CI
    .venv/bin/python -m alignline.flows.cli checkpoint smollm2-135m --dest /tmp/smollm2-135m
    .venv/bin/python benchmarks/real_model.py --checkpoint /tmp/smollm2-135m [--steps 2] [--out /tmp/real-bench]
Appends the figures to benchmarks/RESULTS.md (section "real model, <date>").
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from alignline.config.model import ModelConfig  # noqa: E402
from alignline.config.reward import RewardConfig  # noqa: E402
from alignline.config.training import SFTConfig  # noqa: E402
from alignline.services.data import default_sft_table, table_dialogues  # noqa: E402
from alignline.services.generation import SamplingParams, generate  # noqa: E402
from alignline.services.models import encode_prompt, load_model, load_tokenizer, reward_model_from_policy  # noqa: E402
from alignline.services.training import (LaunchOptions, RewardJob, SFTJob, encode_pairs, encode_sft_rows,  # noqa: E402
                                         read_pairs, train_reward, train_sft, write_pairs, write_sft_rows)
from alignline.services.training.packing import step_rows  # noqa: E402

LORA = ModelConfig(lora_rank=16, lora_alpha=32.0, lora_dropout=0.0)
UNHELPFUL = ("I don't know.", "No idea, sorry.", "Look it up yourself.", "That is not something I can answer.")


class StepClock(TrainerCallback):
    """Seconds of TRL's optimizer steps (train begin to last step end), excluding its set-up before train()."""

    def __init__(self):
        self.begin, self.end = 0.0, 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.begin = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.end = time.perf_counter()

    @property
    def seconds(self) -> float:
        return self.end - self.begin


def trl_lora(task_type: str | None = None):
    """peft config of the reference runs; task_type SEQ_CLS makes peft train the RM's `score` head in full
    (modules_to_save), as ours does."""
    from peft import LoraConfig

    return LoraConfig(r=LORA.lora_rank, lora_alpha=LORA.lora_alpha, lora_dropout=LORA.lora_dropout,
                      target_modules=list(LORA.lora_target_modules), bias="none", task_type=task_type)


def trl_common(s, steps: int, out: Path, name: str) -> dict:
    return dict(output_dir=str(out / name), max_steps=steps, learning_rate=s.learning_rate,
                lr_scheduler_type="constant", weight_decay=s.weight_decay, adam_beta1=s.adam_beta1,
                adam_beta2=s.adam_beta2, adam_epsilon=s.adam_eps, max_grad_norm=s.grad_clip, bf16=False, fp16=False,
                gradient_checkpointing=False, report_to=[], logging_steps=1, save_strategy="no", use_cpu=True,
                dataloader_num_workers=0, seed=s.seed)


# -- SFT -------------------------------------------------------------------------------------------------------------
def sft_ours(s: SFTConfig, ckpt: Path, rows: str, out: Path, model: ModelConfig, name: str) -> dict:
    job = SFTJob(s, str(ckpt), rows, str(out / name), str(out / f"{name}-ckpt"), model=model)
    r = train_sft(job, LaunchOptions())
    return {"tokens_per_s": r["train_tokens"] / r["train_seconds"], "seconds": r["train_seconds"],
            "losses": r["losses"], "tokens": r["train_tokens"]}


def sft_trl(s: SFTConfig, ckpt: Path, tokenizer, rows: str, out: Path, steps: int, lora: bool) -> dict:
    from datasets import Dataset
    from trl import SFTConfig as TRLConfig, SFTTrainer

    # The very rows and batches our recipe reads, in its order: pre-tokenized input_ids + labels (-100 off the
    # answers), trailing pad dropped (TRL's collator pads each batch to its longest row), so both sides see the same
    # token ids and loss mask and the first losses match.
    data = np.load(rows)
    order = np.concatenate([step_rows(len(data["input_ids"]), s.batch_size, step, s.seed) for step in range(steps)])
    records = []
    for i in order:
        n = int((data["input_ids"][i] != tokenizer.pad_token_id).sum())
        records.append({"input_ids": data["input_ids"][i, :n].tolist(), "labels": data["labels"][i, :n].tolist()})
    args = TRLConfig(per_device_train_batch_size=s.batch_size, max_length=s.seq_len, packing=False,
                     train_sampling_strategy="sequential", dataset_kwargs={"add_special_tokens": False},
                     **trl_common(s, steps, out, "trl-sft-lora" if lora else "trl-sft"))
    clock = StepClock()
    trainer = SFTTrainer(model=load_model(ckpt), args=args, train_dataset=Dataset.from_list(records),
                         processing_class=tokenizer, callbacks=[clock], peft_config=trl_lora() if lora else None)
    trainer.train()
    tokens = sum(len(r["input_ids"]) for r in records)  # non-pad tokens, as ours counts them
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    return {"tokens_per_s": tokens / clock.seconds, "seconds": clock.seconds, "losses": losses, "tokens": tokens,
            "trainable": trainable}


# -- reward models ---------------------------------------------------------------------------------------------------
def rm_ours(rc: RewardConfig, ckpt: Path, pairs: str, out: Path, model: ModelConfig, name: str) -> dict:
    job = RewardJob(rc, str(ckpt), pairs, str(out / name), str(out / f"{name}-ckpt"), model=model)
    r = train_reward(job, LaunchOptions())
    return {"pairs_per_s": r["pairs_per_s_mean"], "seconds": r["train_seconds"] + r.get("feature_seconds", 0.0),
            "losses": r["losses"], "trainable": r["trainable_params"]}


def rm_trl(rc: RewardConfig, ckpt: Path, tokenizer, pairs_path: str, out: Path, steps: int, lora: bool) -> dict:
    from datasets import Dataset
    from trl import RewardConfig as TRLConfig, RewardTrainer

    pairs = read_pairs(pairs_path)
    order = np.concatenate([step_rows(len(pairs), rc.batch_size, step, rc.seed) for step in range(steps)])
    records = [{"chosen_ids": pairs.chosen[i, : pairs.chosen_len[i]].tolist(),
                "rejected_ids": pairs.rejected[i, : pairs.rejected_len[i]].tolist(), "margin": float(pairs.margin[i])}
               for i in order]  # the very batches our recipe reads, in its order
    ours = reward_model_from_policy(load_model(ckpt), seed=rc.seed)  # the same start: trunk + the same head
    args = TRLConfig(per_device_train_batch_size=rc.batch_size, max_length=rc.max_length,
                     center_rewards_coefficient=None, train_sampling_strategy="sequential",
                     **trl_common(rc, steps, out, "trl-rm-lora" if lora else "trl-rm"))
    clock = StepClock()
    trainer = RewardTrainer(model=ours.classifier, args=args, train_dataset=Dataset.from_list(records),
                            processing_class=tokenizer, callbacks=[clock],
                            peft_config=trl_lora("SEQ_CLS") if lora else None)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    return {"pairs_per_s": steps * rc.batch_size / clock.seconds, "seconds": clock.seconds, "losses": losses,
            "trainable": trainable}


# -- generation ------------------------------------------------------------------------------------------------------
def bench_generation(ckpt: Path, dialogues, n_prompts: int, new_tokens: int) -> dict:
    model, tokenizer = load_model(ckpt).eval(), load_tokenizer(ckpt)
    prompts = [encode_prompt(tokenizer, d[:-1]) for d in dialogues[:n_prompts]]
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0.8, top_p=0.95, seed=0)
    out = {}
    for batch in (1, 16):
        t0 = time.perf_counter()
        produced = 0
        for i in range(0, len(prompts), batch):
            produced += sum(len(t) for t in generate(model, prompts[i:i + batch], params, tokenizer.pad_token_id,
                                                     eos_id=-1).tokens)
        out[f"ours_b{batch}"] = produced / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        produced = 0
        for i in range(0, len(prompts), batch):
            chunk = prompts[i:i + batch]
            enc = tokenizer.pad({"input_ids": chunk}, padding=True, return_tensors="pt")  # left padding
            with torch.no_grad():
                ids = model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=True,
                                     temperature=0.8, top_p=0.95, pad_token_id=tokenizer.pad_token_id)
            produced += (ids.shape[1] - enc["input_ids"].shape[1]) * len(chunk)
        out[f"hf_b{batch}"] = produced / (time.perf_counter() - t0)
    return out


def append_results(path: Path, text: str) -> None:
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    path.write_text(old.rstrip("\n") + "\n\n" + text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="converted SmolLM2 folder (`alignline checkpoint smollm2-135m`)")
    parser.add_argument("--out", default="/tmp/alignline-real-bench")
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps per training run (2: ~17 min for all parts at load ~15 on 2 cores)")
    parser.add_argument("--batch", type=int, default=4, help="sequences (SFT) or pairs (RM) per step")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--prompts", type=int, default=16, help="generation prompts")
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="sft,sft-lora,rm,rm-lora,rm-head,generation",
                        help="comma-separated parts to measure (default all): sft, sft-lora, rm, rm-lora, rm-head, generation")
    parser.add_argument("--reference-first", action="store_true",
                        help="run TRL before ours in each pair (to see whether the order within a pair matters)")
    parser.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    args = parser.parse_args()
    only = set(args.only.split(","))
    torch.set_num_threads(args.threads)
    ckpt, out = Path(args.checkpoint), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start, load_start = time.perf_counter(), os.getloadavg()
    tokenizer = load_tokenizer(ckpt)
    dialogues = table_dialogues(default_sft_table(stdlib_limit=200))
    sft_cfg = SFTConfig(batch_size=args.batch, seq_len=args.seq_len, epochs=1, learning_rate=2e-5, warmup_steps=0,
                        min_lr_ratio=1.0, checkpoint_every=10_000, log_every=1, use_ray=False)
    packed = encode_sft_rows(tokenizer, dialogues, args.seq_len)
    rows = write_sft_rows(type(packed)(packed.input_ids[: args.steps * args.batch], packed.labels[: args.steps * args.batch]),
                          out / "rows.npz")
    rm_cfg = RewardConfig(batch_size=args.batch, max_length=args.seq_len, learning_rate=1e-5, warmup_ratio=0.0,
                          min_warmup_steps=0, min_lr_ratio=1.0, checkpoint_every=10_000, log_every=1, use_ray=False,
                          head_epochs=1, eval_batch_size=8)
    comparisons = [{"prompt": d[:-1], "chosen": d[-1]["content"][:400], "rejected": UNHELPFUL[i % 4],
                    "margin_level": "better", "safety_category": None, "is_safety": False, "source": "bench"}
                   for i, d in enumerate(dialogues[: args.steps * args.batch])]
    pairs = write_pairs(encode_pairs(tokenizer, comparisons, rm_cfg.margin, args.seq_len), out / "pairs.npz")

    fig: dict = {"sft": {}, "rm": {}, "generation": {}}
    head_cfg = RewardConfig(**{**rm_cfg.__dict__, "trainable": "head"})
    runs = [("sft", "ours_full", "sft", lambda: sft_ours(sft_cfg, ckpt, rows, out, ModelConfig(), "sft-full")),
            ("sft", "trl_full", "sft", lambda: sft_trl(sft_cfg, ckpt, tokenizer, rows, out, args.steps, lora=False)),
            ("sft", "ours_lora", "sft-lora", lambda: sft_ours(sft_cfg, ckpt, rows, out, LORA, "sft-lora")),
            ("sft", "trl_lora", "sft-lora", lambda: sft_trl(sft_cfg, ckpt, tokenizer, rows, out, args.steps, lora=True)),
            ("rm", "ours_full", "rm", lambda: rm_ours(rm_cfg, ckpt, pairs, out, ModelConfig(), "rm-full")),
            ("rm", "trl_full", "rm", lambda: rm_trl(rm_cfg, ckpt, tokenizer, pairs, out, args.steps, lora=False)),
            ("rm", "ours_lora", "rm-lora", lambda: rm_ours(rm_cfg, ckpt, pairs, out, LORA, "rm-lora")),
            ("rm", "trl_lora", "rm-lora", lambda: rm_trl(rm_cfg, ckpt, tokenizer, pairs, out, args.steps, lora=True)),
            ("rm", "ours_head", "rm-head", lambda: rm_ours(head_cfg, ckpt, pairs, out, ModelConfig(), "rm-head"))]
    if args.reference_first:  # the 8 paired runs are (ours, reference) neighbours
        runs[:8] = [r for i in range(0, 8, 2) for r in (runs[i + 1], runs[i])]
    for part, key, name, run in runs:  # one failing run is recorded and the others still measured
        if name not in only:
            continue
        try:
            fig[part][key] = run()
        except Exception as e:
            fig[part][key] = {"error": f"{type(e).__name__}: {e}"}
        print(part, key, json.dumps({k: v for k, v in fig[part][key].items() if k != "losses"}), flush=True)
        (out / "figures.json").write_text(json.dumps(fig, indent=1))
    if "generation" in only:
        fig["generation"] = bench_generation(ckpt, dialogues, args.prompts, args.new_tokens)
    fig["wall_s"] = time.perf_counter() - t_start
    (out / "figures.json").write_text(json.dumps(fig, indent=1))

    s, r, g = fig["sft"], fig["rm"], fig["generation"]
    rows_md = []

    def row(label: str, ours: float | None, ref_label: str, ref: float | None, fmt: str) -> None:
        if ours is None or ref is None:  # a part not measured (--only) or failed: no row
            return
        rows_md.append(f"| {label} | {ours:{fmt}} | {ref_label} {ref:{fmt}} | {ours / ref:.2f}x |")

    def rate(part: dict, key: str, unit: str) -> float | None:
        return part.get(key, {}).get(unit)

    row("SFT tokens/s, full", rate(s, "ours_full", "tokens_per_s"), "TRL SFTTrainer", rate(s, "trl_full", "tokens_per_s"), ".1f")
    row("SFT tokens/s, LoRA", rate(s, "ours_lora", "tokens_per_s"), "TRL SFTTrainer + peft", rate(s, "trl_lora", "tokens_per_s"), ".1f")
    row("RM pairs/s, full", rate(r, "ours_full", "pairs_per_s"), "TRL RewardTrainer", rate(r, "trl_full", "pairs_per_s"), ".3f")
    row("RM pairs/s, LoRA", rate(r, "ours_lora", "pairs_per_s"), "TRL RewardTrainer + peft", rate(r, "trl_lora", "pairs_per_s"), ".3f")
    row("RM pairs/s, frozen trunk (head)", rate(r, "ours_head", "pairs_per_s"), "TRL RewardTrainer + peft (LoRA)",
        rate(r, "trl_lora", "pairs_per_s"), ".3f")
    for b in (1, 16):
        row(f"generation tokens/s, batch {b}", g.get(f"ours_b{b}"), "HF `generate`", g.get(f"hf_b{b}"), ".1f")
    errors = [f"{part}.{k}: {v['error']}" for part in ("sft", "rm") for k, v in fig[part].items() if "error" in v]
    n_params = sum(p.numel() for p in load_model(ckpt).parameters()) / 1e6
    lines = [
        f"## real model, {time.strftime('%Y-%m-%d')}: SmolLM2-135M-Instruct, this project vs TRL / HF generate", "",
        f"`.venv/bin/python benchmarks/real_model.py --checkpoint {ckpt} --steps {args.steps} --batch {args.batch} "
        f"--seq-len {args.seq_len} --prompts {args.prompts} --new-tokens {args.new_tokens} --only {args.only}"
        f"{' --reference-first' if args.reference_first else ''}` on "
        f"{platform.machine()}, {os.cpu_count()} CPU cores shared with other sessions, {args.threads} torch threads, "
        f"torch {torch.__version__}, float32, {n_params:.1f}M parameters; {args.steps} optimizer steps of {args.batch} "
        f"per run, constant LR; LoRA r={LORA.lora_rank}, alpha {LORA.lora_alpha:g}, all 7 linear layers on both sides. "
        f"Wall {fig['wall_s'] / 60:.1f} min; load average (1/5/15 min) "
        f"{'/'.join(f'{x:.1f}' for x in load_start)} at start, {'/'.join(f'{x:.1f}' for x in os.getloadavg())} at end. Rates over training steps only; ratio = ours / reference in this run.", "",
        "| measure | alignline | reference | ratio |", "|---|---|---|---|", *rows_md, "",
        "Trainable parameters and first/last losses: "
        + "; ".join(f"{part}.{k} {v.get('trainable', '-')} params, loss {v['losses'][0]:.3f}/{v['losses'][-1]:.3f}"
                    for part in ("sft", "rm") for k, v in fig[part].items() if v.get("losses")) + ".",
        *([f"Failed: {'; '.join(errors)}."] if errors else []), "",
    ]
    append_results(Path(args.results), "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
