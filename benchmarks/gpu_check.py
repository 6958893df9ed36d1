"""GPU check: SFT, RM and PPO steps on SmolLM2-135M in bf16 on CUDA, tokens/s and model FLOPs utilisation, and one
FSDP step across the GPUs. Run it when a GPU machine is available; tests and CI never need it.

    .venv/bin/python -m alignline.flows.cli checkpoint smollm2-135m --dest /tmp/smollm2-135m   # once, CPU is fine
    .venv/bin/python benchmarks/gpu_check.py --checkpoint /tmp/smollm2-135m [--steps 8] [--out /tmp/gpu-check]

MFU = 6 x N x tokens/s / peak dense bf16 FLOP/s of the GPU found (N = parameters without the embedding table; the
6 N rule of Kaplan et al. 2020 counts forward + backward matmuls and ignores attention's T^2 term, so it slightly
understates the work at long sequences). The peak comes from the table below by device name, or `--peak-tflops`.
The recipes run exactly as in the line (`train_sft`, `train_reward`, `train_ppo` in-process on `cuda:0`) with
`model.dtype = bfloat16`: float32 master weights and bf16 autocast. The FSDP step spawns one process per GPU (NCCL),
shards every decoder layer (torch FSDP2 `fully_shard`, bf16 parameters / fp32 gradient reduction) and takes one
AdamW step. Prints a table and writes `<out>/gpu_check.json`; exit 2 when there is no CUDA device.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, from the vendors' data sheets; matched by substring of the name.
PEAK_BF16 = (("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("H800", 989e12), ("GH200", 989e12),
             ("B200", 2250e12), ("A100", 312e12), ("A800", 312e12), ("L40S", 362e12), ("L40", 181e12),
             ("L4", 121e12), ("A10G", 70e12), ("A10", 125e12), ("RTX 4090", 165e12), ("RTX 3090", 71e12),
             ("A6000", 155e12), ("V100", 125e12), ("T4", 65e12))


def peak_flops(name: str, override_tflops: float | None) -> tuple[float, str]:
    if override_tflops:
        return override_tflops * 1e12, "--peak-tflops"
    for key, flops in PEAK_BF16:
        if key.lower() in name.lower():
            return flops, f"data sheet ({key})"
    raise SystemExit(f"gpu_check: no bf16 peak known for {name!r}; pass --peak-tflops (dense bf16 TFLOP/s)")


def matmul_params(model: torch.nn.Module) -> int:
    """N of the 6N rule: parameters that take part in matmuls (everything but the input embedding table)."""
    embed = model.get_input_embeddings().weight
    return sum(p.numel() for p in model.parameters() if p is not embed) + (
        embed.numel() if model.config.tie_word_embeddings else 0)  # a tied table is also the LM head matmul


def require_cuda() -> None:
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible (torch.cuda.is_available() is False; torch "
              f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}). Run it on a GPU machine with a CUDA "
              "build of torch; tests and CI do not need it.", file=sys.stderr)
        raise SystemExit(2)


# -- the three recipes on cuda:0 ---------------------------------------------------------------------------------------
def sft_check(ckpt: Path, out: Path, steps: int, batch: int, seq_len: int, n_params: int, peak: float) -> dict:
    from alignline.config.model import ModelConfig
    from alignline.config.training import SFTConfig
    from alignline.services.data import default_sft_table, table_dialogues
    from alignline.services.models import load_tokenizer
    from alignline.services.training import LaunchOptions, SFTJob, encode_sft_rows, train_sft, write_sft_rows

    tok = load_tokenizer(ckpt)
    packed = encode_sft_rows(tok, table_dialogues(default_sft_table(stdlib_limit=0)), seq_len)
    need = steps * batch
    reps = -(-need // len(packed))
    rows = type(packed)(packed.input_ids.repeat(reps, 0)[:need], packed.labels.repeat(reps, 0)[:need])
    cfg = SFTConfig(batch_size=batch, seq_len=seq_len, epochs=1, learning_rate=2e-5, warmup_steps=0, min_lr_ratio=1.0,
                    checkpoint_every=10**6, log_every=10**6, use_ray=False, use_gpu=True)
    job = SFTJob(cfg, str(ckpt), write_sft_rows(rows, out / "sft-rows.npz"), str(out / "sft"), str(out / "sft-ckpt"),
                 model=ModelConfig(dtype="bfloat16"))
    torch.cuda.reset_peak_memory_stats()
    r = train_sft(job, LaunchOptions(use_gpu=True))
    tps = r["train_tokens"] / r["train_seconds"]
    return {"tokens_per_s": tps, "mfu": 6 * n_params * tps / peak, "steps": r["step"], "loss_first_last": [r["losses"][0], r["losses"][-1]],
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30}


def rm_check(ckpt: Path, out: Path, steps: int, batch: int, seq_len: int, n_params: int, peak: float) -> dict:
    from alignline.config.model import ModelConfig
    from alignline.config.reward import RewardConfig
    from alignline.services.data import default_sft_table, table_dialogues
    from alignline.services.models import load_tokenizer
    from alignline.services.training import LaunchOptions, RewardJob, encode_pairs, train_reward, write_pairs

    tok = load_tokenizer(ckpt)
    dialogues = table_dialogues(default_sft_table(stdlib_limit=0))
    rows = [{"prompt": d[:-1], "chosen": d[-1]["content"], "rejected": "I don't know.", "margin_level": "better",
             "safety_category": None, "is_safety": False, "source": "gpu-check"}
            for d in (dialogues * (steps * batch // len(dialogues) + 1))[: steps * batch]]
    pairs = encode_pairs(tok, rows, "small", seq_len)
    cfg = RewardConfig(batch_size=batch, max_length=seq_len, learning_rate=1e-5, warmup_ratio=0.0, min_warmup_steps=0,
                       min_lr_ratio=1.0, checkpoint_every=10**6, log_every=10**6, use_ray=False, use_gpu=True)
    job = RewardJob(cfg, str(ckpt), write_pairs(pairs, out / "pairs.npz"), str(out / "rm"), str(out / "rm-ckpt"),
                    model=ModelConfig(dtype="bfloat16"))
    torch.cuda.reset_peak_memory_stats()
    r = train_reward(job, LaunchOptions(use_gpu=True))
    # real tokens through the trunk per second: both answers of every pair (dynamic padding adds a little work)
    tokens = float(pairs.chosen_len.sum() + pairs.rejected_len.sum())
    tps = tokens / r["train_seconds"]
    return {"pairs_per_s": r["pairs_per_s_mean"], "tokens_per_s": tps, "mfu": 6 * n_params * tps / peak,
            "steps": r["step"], "loss_first_last": [r["losses"][0], r["losses"][-1]],
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30}


def ppo_check(ckpt: Path, out: Path, iterations: int, batch: int, new_tokens: int, n_params: int, peak: float) -> dict:
    from alignline.config.model import ModelConfig
    from alignline.config.rlhf import RLHFConfig
    from alignline.services.data import default_sft_table, table_dialogues
    from alignline.services.models import load_model, load_tokenizer, reward_model_from_policy, save_reward_model
    from alignline.services.training import LaunchOptions, PPOJob, RewardModelFolders, train_ppo

    tok = load_tokenizer(ckpt)
    for i, name in enumerate(("rm-helpful", "rm-safety")):  # untrained heads: PPO's speed does not depend on them
        if not (out / name / "config.json").is_file():
            save_reward_model(reward_model_from_policy(load_model(ckpt), seed=i), tok, out / name)
    prompts = [d[:-1] for d in table_dialogues(default_sft_table(stdlib_limit=64))][:64]
    cfg = RLHFConfig(ppo_batch_size=batch, ppo_minibatch_size=max(1, batch // 2), ppo_iterations=iterations,
                     max_new_tokens=new_tokens, rollout_batch_size=batch, ppo_eval_every=10**6,
                     ppo_checkpoint_every=10**6, use_ray=False, use_gpu=True, heldout_prompts=4)
    job = PPOJob(cfg, str(ckpt), str(ckpt), prompts[4:], [False] * (len(prompts) - 4), prompts[:4], [False] * 4,
                 RewardModelFolders(str(out / "rm-helpful"), str(out / "rm-safety"), device="cuda"),
                 str(out / "ppo"), model=ModelConfig(dtype="bfloat16"))
    torch.cuda.reset_peak_memory_stats()
    r = train_ppo(job, LaunchOptions(use_gpu=True))
    # training share only: forward+backward over (prompt + answer) rows; generation and scoring reported apart
    return {"samples_per_s": r["samples_per_s"], "generation_s": r["generation_s"], "scoring_s": r["scoring_s"],
            "training_s": r["training_s"], "iterations": r["iterations"],
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30}


# -- one FSDP step across the GPUs -------------------------------------------------------------------------------------
def _fsdp_worker(rank: int, world: int, ckpt: str, seq_len: int, port: int, result_path: str) -> None:
    import torch.distributed as dist
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from alignline.services.models import load_model

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=world)
    try:
        model = load_model(ckpt, device=f"cuda:{rank}", dtype=torch.float32)
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        for module in model.modules():  # one FSDP unit per decoder layer, then the root (as services/training/sharding)
            if type(module).__name__.endswith("DecoderLayer"):
                fully_shard(module, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        g = torch.Generator().manual_seed(rank)
        x = torch.randint(0, model.config.vocab_size, (2, seq_len), generator=g).to(f"cuda:{rank}")
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        loss_t = loss.detach().float().clone()
        dist.all_reduce(loss_t)
        local = sum(p.to_local().numel() for p in model.parameters())  # DTensor shards
        if rank == 0:
            Path(result_path).write_text(json.dumps({
                "world_size": world, "loss_mean": float(loss_t) / world, "step_seconds": seconds,
                "local_param_share": local / sum(p.numel() for p in model.parameters()),
                "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30}))
    finally:
        dist.destroy_process_group()


def fsdp_check(ckpt: Path, out: Path, seq_len: int) -> dict:
    import torch.multiprocessing as mp

    world = torch.cuda.device_count()
    result = out / "fsdp.json"
    result.unlink(missing_ok=True)
    mp.spawn(_fsdp_worker, args=(world, str(ckpt), seq_len, 29500 + os.getpid() % 1000, str(result)), nprocs=world,
             join=True)
    return json.loads(result.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="converted SmolLM2 folder (default: convert into <out>/smollm2-135m)")
    parser.add_argument("--out", default="/tmp/alignline-gpu-check")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--ppo-iterations", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--peak-tflops", type=float, help="dense bf16 peak of the GPU when its name is not in the table")
    parser.add_argument("--skip", action="append", default=[], choices=["sft", "rm", "ppo", "fsdp"])
    args = parser.parse_args()
    require_cuda()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.checkpoint:
        ckpt = Path(args.checkpoint)
    else:
        from alignline.services.models.checkpoints import convert_smollm2

        ckpt = convert_smollm2(out / "smollm2-135m")
    from alignline.services.models import load_model

    name = torch.cuda.get_device_name(0)
    peak, peak_source = peak_flops(name, args.peak_tflops)
    n_params = matmul_params(load_model(ckpt, dtype=torch.float32))
    report = {"device": name, "devices": torch.cuda.device_count(), "torch": torch.__version__, "cuda": torch.version.cuda,
              "peak_bf16_tflops": peak / 1e12, "peak_source": peak_source, "matmul_params": n_params}
    checks = {"sft": lambda: sft_check(ckpt, out, args.steps, args.batch, args.seq_len, n_params, peak),
              "rm": lambda: rm_check(ckpt, out, args.steps, args.batch, args.seq_len, n_params, peak),
              "ppo": lambda: ppo_check(ckpt, out, args.ppo_iterations, args.batch, args.new_tokens, n_params, peak),
              "fsdp": lambda: fsdp_check(ckpt, out, args.seq_len)}
    failed = []
    for key, check in checks.items():
        if key in args.skip:
            continue
        t0 = time.perf_counter()
        try:
            report[key] = {**check(), "wall_s": time.perf_counter() - t0}
        except Exception as e:  # report every check; one failing does not hide the others
            report[key] = {"error": f"{type(e).__name__}: {e}"}
            failed.append(key)
        print(f"{key:<5} {json.dumps(report[key], default=float)}", flush=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=float))
    print(f"\n{name} x{report['devices']}, peak {peak / 1e12:.0f} TFLOP/s bf16 ({peak_source}), N = {n_params / 1e6:.1f}M")
    for key in ("sft", "rm"):
        if "mfu" in report.get(key, {}):
            print(f"  {key:<4} {report[key]['tokens_per_s']:>10,.0f} tokens/s   MFU {report[key]['mfu']:.1%}")
    if "samples_per_s" in report.get("ppo", {}):
        print(f"  ppo  {report['ppo']['samples_per_s']:>10.1f} samples/s (generation {report['ppo']['generation_s']:.1f} s, "
              f"training {report['ppo']['training_s']:.1f} s)")
    if "world_size" in report.get("fsdp", {}):
        f = report["fsdp"]
        print(f"  fsdp {f['world_size']} GPU(s): one step {f['step_seconds']:.2f} s, loss {f['loss_mean']:.3f}, "
              f"each rank holds {f['local_param_share']:.0%} of the parameters")
    if failed:
        raise SystemExit(f"gpu_check: {', '.join(failed)} failed (see {out / 'gpu_check.json'})")


if __name__ == "__main__":
    main()
