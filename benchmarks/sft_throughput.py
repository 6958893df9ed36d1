"""SFT throughput of this recipe (Ray Train, 1 and 2 workers) against TRL's SFTTrainer, plus generation.

One run, same model (tiny preset), tokenizer, data, batch size, LR schedule and
sequence length on both sides. Tokens/s counts non-pad input tokens over the
training steps only (start-up excluded on both sides). Also: batched sampling
with the KV cache against one prompt at a time.

    .venv/bin/python benchmarks/sft_throughput.py --out /tmp/sft-bench [--stdlib-examples 400]
Appends the figures to benchmarks/RESULTS.md (section "sft").
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import torch  # noqa: E402

from alignline.config import load_config  # noqa: E402
from alignline.services.data import default_sft_table, table_dialogues  # noqa: E402
from alignline.services.generation import SamplingParams, generate  # noqa: E402
from alignline.services.models import build_model, encode_prompt, load_model, load_tokenizer, render_llama2, save_model, train_bpe_tokenizer  # noqa: E402
from alignline.services.models.chat import llama2_segments  # noqa: E402
from alignline.services.training import LaunchOptions, SFTJob, encode_sft_rows, train_sft, write_sft_rows  # noqa: E402

TOKENIZER_SOURCES = ("json", "os", "re", "collections", "pathlib", "inspect", "argparse", "typing", "subprocess",
                     "logging", "email.message", "http.client", "unittest.case", "dataclasses", "functools")


def setup(out: Path, stdlib_examples: int, preset: str):
    cfg = load_config(preset)
    texts = [inspect.getsource(importlib.import_module(m)) for m in TOKENIZER_SOURCES]
    tokenizer = train_bpe_tokenizer(texts, cfg.model.vocab_size)
    base = out / "base"
    save_model(build_model(cfg.model, tokenizer=tokenizer, seed=0), tokenizer, base)
    dialogues = table_dialogues(default_sft_table(stdlib_examples))
    return cfg, tokenizer, base, dialogues


def run_ours(cfg, base: Path, rows_path: str, out: Path, workers: int) -> dict:
    sft = cfg.sft.__class__(**{**cfg.sft.__dict__, "epochs": 1, "log_every": 1, "checkpoint_every": 10_000})
    job = SFTJob(sft, str(base), rows_path, str(out / f"policy-w{workers}"), str(out / f"ckpt-w{workers}"))
    opts = LaunchOptions(use_ray=True, num_workers=workers, cpus_per_worker=2.0 / workers,
                         storage_path=str(out / "ray"), name=f"sft-w{workers}")
    t0 = time.perf_counter()
    result = train_sft(job, opts)
    result["wall_s"] = time.perf_counter() - t0
    result["tokens_per_s_mean"] = result["train_tokens"] / result["train_seconds"]
    return result


def run_trl(cfg, tokenizer, base: Path, dialogues, out: Path, steps: int) -> dict:
    from datasets import Dataset
    from trl import SFTConfig as TRLConfig, SFTTrainer

    # The same Llama 2 text on both sides: prompt = everything up to [/INST], completion = " answer </s>".
    records = [{"prompt": segs[0][0], "completion": segs[1][0]}
               for segs in (llama2_segments(d) for d in dialogues)]
    torch.set_num_threads(2)
    s = cfg.sft
    args = TRLConfig(output_dir=str(out / "trl"), per_device_train_batch_size=s.batch_size, max_steps=steps,
                     learning_rate=s.learning_rate, lr_scheduler_type="cosine_with_min_lr",
                     lr_scheduler_kwargs={"min_lr_rate": s.min_lr_ratio}, warmup_steps=s.warmup_steps,
                     weight_decay=s.weight_decay, adam_beta1=s.adam_beta1, adam_beta2=s.adam_beta2,
                     adam_epsilon=s.adam_eps, max_grad_norm=s.grad_clip, max_length=s.seq_len, packing=True,
                     bf16=False, fp16=False, gradient_checkpointing=False, report_to=[], logging_steps=1,
                     save_strategy="no", use_cpu=True, dataloader_num_workers=0, seed=s.seed,
                     dataset_kwargs={"add_special_tokens": False}, completion_only_loss=True)
    model = load_model(base)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(records), processing_class=tokenizer)
    lengths = [len(x) for x in trainer.train_dataset["input_ids"]]
    t0 = time.perf_counter()
    trainer.train()
    runtime = time.perf_counter() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    tokens = min(sum(lengths), steps * s.batch_size * s.seq_len)
    return {"tokens_per_s_mean": tokens / runtime, "train_seconds": runtime, "losses": losses, "steps": len(losses),
            "rows": len(lengths)}


def bench_generation(policy_dir: str, dialogues, n_prompts: int = 32, max_new: int = 32) -> dict:
    model, tokenizer = load_model(policy_dir), load_tokenizer(policy_dir)
    torch.set_num_threads(2)
    prompts = [encode_prompt(tokenizer, d[:-1]) for d in dialogues[:n_prompts]]
    # min_new_tokens-like fairness: EOS disabled so both sides produce exactly max_new tokens per prompt.
    params = SamplingParams(max_new_tokens=max_new, temperature=0.8, top_p=0.95, seed=0)
    out = {}
    for name, batch in (("batched_16", 16), ("one_at_a_time", 1)):
        t0 = time.perf_counter()
        produced = 0
        for i in range(0, len(prompts), batch):
            gen = generate(model, prompts[i:i + batch], params, tokenizer.pad_token_id, eos_id=-1)
            produced += sum(len(t) for t in gen.tokens)
        out[name] = produced / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for p in prompts[:8]:
        model.generate(torch.tensor([p]), max_new_tokens=max_new, min_new_tokens=max_new, do_sample=True,
                       temperature=0.8, top_p=0.95, pad_token_id=tokenizer.pad_token_id)
    out["hf_generate_one_at_a_time"] = 8 * max_new / (time.perf_counter() - t0)
    return out


def append_results(path: Path, text: str) -> None:
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    path.write_text(old.rstrip("\n") + "\n\n" + text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/alignline-sft-bench")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--stdlib-examples", type=int, default=400)
    parser.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg, tokenizer, base, dialogues = setup(out, args.stdlib_examples, args.preset)
    packed = encode_sft_rows(tokenizer, dialogues, cfg.sft.seq_len)
    rows_path = write_sft_rows(packed, out / "rows.npz")

    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        ours = {w: run_ours(cfg, base, rows_path, out, w) for w in (1, 2)}
    finally:
        ray.shutdown()
    trl = run_trl(cfg, tokenizer, base, dialogues, out, steps=ours[1]["step"])
    gen = bench_generation(ours[1]["output_dir"], dialogues)
    figures = {"ours": {w: {k: r[k] for k in ("tokens_per_s_mean", "train_seconds", "wall_s", "step", "losses")}
                        for w, r in ours.items()},
               "trl": trl, "generation_tokens_per_s": gen, "rows": len(packed), "examples": len(dialogues),
               "pad_share": float((packed.input_ids == tokenizer.pad_token_id).mean())}
    (out / "figures.json").write_text(json.dumps(figures, indent=1))

    def curve(losses):  # every ~8th loss, so the curves stay readable
        stride = max(1, len(losses) // 8)
        return ", ".join(f"{x:.2f}" for x in losses[::stride] + ([losses[-1]] if (len(losses) - 1) % stride else []))

    s = cfg.sft
    lines = [
        "## sft", "",
        f"`benchmarks/sft_throughput.py`, one run on {platform.machine()} with {os.cpu_count()} CPU cores (shared), "
        f"torch {torch.__version__}, preset `{args.preset}` ({sum(p.numel() for p in load_model(base).parameters())/1e6:.1f}M params), "
        f"{len(dialogues)} default SFT dialogues packed into {len(packed)} rows of {s.seq_len} tokens "
        f"(pad share {figures['pad_share']:.0%}), batch {s.batch_size}, LR {s.learning_rate} cosine, 1 epoch "
        f"= {ours[1]['step']} steps. Tokens/s = non-pad input tokens per second of training steps (start-up excluded).", "",
        "| run | tokens/s | train s | vs TRL |", "|---|---|---|---|",
        *(f"| alignline SFT, Ray Train {w} worker{'s' if w > 1 else ''} (gloo) | {r['tokens_per_s_mean']:.0f} | "
          f"{r['train_seconds']:.1f} (wall {r['wall_s']:.0f} incl. Ray start) | "
          f"{r['tokens_per_s_mean'] / trl['tokens_per_s_mean']:.2f}x |" for w, r in ours.items()),
        f"| TRL SFTTrainer (packing, completion-only loss, fp32) | {trl['tokens_per_s_mean']:.0f} | {trl['train_seconds']:.1f} | 1.00x |", "",
        "Loss curves (every few steps; alignline normalises by answer tokens of the global batch, TRL by answer tokens of its batch):", "",
        f"- alignline 1 worker: {curve(ours[1]['losses'])}",
        f"- alignline 2 workers: {curve(ours[2]['losses'])}",
        f"- TRL: {curve(trl['losses'])}", "",
        "Generation (32 prompts, 32 new tokens each, temperature 0.8, top-p 0.95, KV cache):", "",
        "| mode | tokens/s |", "|---|---|",
        f"| `generate`, batch 16, left padding | {gen['batched_16']:.0f} |",
        f"| `generate`, one prompt at a time | {gen['one_at_a_time']:.0f} |",
        f"| transformers `model.generate`, one at a time (reference) | {gen['hf_generate_one_at_a_time']:.0f} |", "",
    ]
    append_results(Path(args.results), "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
