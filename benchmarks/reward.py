"""Reward-model training throughput and accuracy: this recipe under Ray Train against TRL's RewardTrainer.

One run, several seeds. Per seed both sides start from the same weights (the policy's backbone + the head this
recipe draws for the seed) and read the very same batches: the pairs are encoded once by this recipe and handed to
TRL pre-tokenized (`chosen_ids`/`rejected_ids`/`margin`, Table 27 'small' margins) in the order this recipe draws
them, with TRL's sampler set to `sequential`. Same batch size, optimizer settings and schedule (cosine to 10% after
the same warmup; TRL's warmup starts at LR 0). Pairs/s over training steps, with and without each side's first step
(start-up excluded). Held-out accuracy of both, overall and by rating level pooled over seeds, on the built-in
demo's comparisons split by prompt.

    PYTHONPATH=/tmp/trl112 .venv/bin/python benchmarks/reward.py [--policy DIR] [--seeds 5] [--stdlib-pairs 600]
(TRL 1.12 beside the venv: pip install --target /tmp/trl112 --no-deps trl==1.12.0; needs `datasets`.)
`--comparisons NAME[@VERSION]` (with `--home`) scores a catalog dataset instead, e.g. HH-RLHF pairs imported with
`alignline harvest --hh-rlhf FILE`. `--policy` takes an HF folder (e.g. the demo's SFT policy, `<home>/work/models/policy/2/model`); without it both
start from an untrained base of the preset. Appends the figures to benchmarks/RESULTS.md (section "reward").
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import json
import os
import platform
import shutil
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_DISABLE_TELEMETRY", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from alignline.config import load_config  # noqa: E402
from alignline.services.data import demo_comparisons_table  # noqa: E402
from alignline.services.evaluation import evaluate_reward_models  # noqa: E402
from alignline.services.evaluation.reward_eval import LEVEL_TITLES  # noqa: E402
from alignline.services.models import (RewardModel, build_model, load_model, load_tokenizer,  # noqa: E402
                                       reward_model_from_policy, save_model, train_bpe_tokenizer)
from alignline.services.rewards import RewardScorer  # noqa: E402
from alignline.storage.schemas import MARGIN_LEVELS, comparison_rows  # noqa: E402
from alignline.services.training.packing import step_rows  # noqa: E402
from alignline.services.training import (LaunchOptions, RewardJob, encode_pairs, read_pairs, reward_warmup_steps,  # noqa: E402
                                         split_heldout, total_reward_steps, train_reward, write_pairs)

TOKENIZER_SOURCES = ("json", "os", "re", "collections", "pathlib", "inspect", "argparse", "typing", "subprocess",
                     "logging", "email.message", "http.client", "unittest.case", "dataclasses", "functools")


def run_ours(rcfg, policy: Path, pairs_path: str, out: Path, workers: int) -> dict:
    job = RewardJob(rcfg, str(policy), pairs_path, str(out / f"rm-w{workers}"), str(out / f"ckpt-w{workers}"))
    opts = LaunchOptions(use_ray=True, num_workers=workers, cpus_per_worker=2.0 / workers,
                         storage_path=str(out / "ray"), name=f"rm-w{workers}-s{rcfg.seed}")
    t0 = time.perf_counter()
    result = train_reward(job, opts)
    result["wall_s"] = time.perf_counter() - t0
    return result


class StepClock(TrainerCallback):
    """perf_counter at train begin and at each optimizer step's end: TRL's step times."""

    def __init__(self):
        self.begin, self.ends = 0.0, []

    def on_train_begin(self, args, state, control, **kwargs):
        self.begin = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())


def run_trl(rcfg, tokenizer, policy: Path, pairs_path: str, out: Path, steps: int) -> tuple[dict, RewardModel]:
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForSequenceClassification
    from trl import RewardConfig as TRLConfig, RewardTrainer

    pairs = read_pairs(pairs_path)
    # The very batches our recipe reads for this seed, in its order (TRL's sampler set to sequential below): both
    # sides see the same pairs in the same batches, so padding widths and the data order match too.
    order = np.concatenate([step_rows(len(pairs), rcfg.batch_size, step, rcfg.seed) for step in range(steps)])
    records = [{"chosen_ids": pairs.chosen[i, : pairs.chosen_len[i]].tolist(),
                "rejected_ids": pairs.rejected[i, : pairs.rejected_len[i]].tolist(), "margin": float(pairs.margin[i])}
               for i in order]
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
                     use_cpu=True, dataloader_num_workers=0, seed=rcfg.seed, center_rewards_coefficient=None,
                     train_sampling_strategy="sequential")
    ends = StepClock()
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(records),
                            processing_class=tokenizer, callbacks=[ends])
    t0 = time.perf_counter()
    trainer.train()
    runtime = time.perf_counter() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    trained = RewardModel(model).eval()
    step_seconds = [b - a for a, b in zip([ends.begin, *ends.ends], ends.ends)]
    return {"pairs_per_s_mean": steps * rcfg.batch_size / runtime, "train_seconds": runtime, "losses": losses,
            "step": len(losses), "step_seconds": step_seconds}, trained


def steady_pairs_per_s(step_seconds: list[float], batch_size: int, warmup: int = 1) -> float:
    """Pairs/s over the steps after the first `warmup` ones: the first step carries one-off costs (allocator,
    oneDNN kernels, and under Ray Train the controller's helper actors starting beside the worker)."""
    timed = step_seconds[warmup:]
    return len(timed) * batch_size / sum(timed)


def append_results(path: Path, text: str) -> None:
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    path.write_text(old.rstrip("\n") + "\n\n" + text)


def pooled_levels(tables: list[dict], kind: str) -> dict[str, tuple[int, int]]:
    """Held-out pairs right and scored, by rating level (and 'avg'), summed over the seeds' tables."""
    out: dict[str, tuple[int, int]] = {}
    for table in tables:
        levels = table["by_kind"].get(kind, {}).get("by_level", {})
        for level, cell in levels.items():
            right, n = out.get(level, (0, 0))
            if cell.get("n"):
                out[level] = (right + round(cell["accuracy"] * cell["n"]), n + cell["n"])
    return out


def mean_std(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    return m, (sum((x - m) ** 2 for x in xs) / max(1, len(xs) - 1)) ** 0.5


def prepare_policy(args, cfg, out: Path):
    """-> (policy folder, tokenizer, description). A given folder (e.g. the demo's SFT policy) is used as is."""
    if args.policy:
        policy = Path(args.policy).resolve()  # Ray workers run in another directory
        return policy, load_tokenizer(policy), f"policy `{policy}`"
    texts = [inspect.getsource(importlib.import_module(m)) for m in TOKENIZER_SOURCES]
    tokenizer = train_bpe_tokenizer(texts, cfg.model.vocab_size)
    policy = out / "policy"
    save_model(build_model(cfg.model, tokenizer=tokenizer, seed=0), tokenizer, policy)
    return policy, tokenizer, f"preset `{args.preset}` untrained base"


def read_rows(args) -> tuple[list, str]:
    """(comparison rows, description): a catalog dataset (e.g. HH-RLHF pairs imported with `alignline harvest
    --hh-rlhf`) when --comparisons names one, else the built-in demo set."""
    if args.comparisons:
        from alignline.storage import Catalog, DataDir

        catalog = Catalog(DataDir(Path(args.home)).lake)
        ref = catalog.resolve(args.comparisons).ref
        rows = comparison_rows(catalog.read_ref(ref), ref)
        return rows, f"`{ref}` from `{args.home}` ({len(rows)} pairs)"
    rows = comparison_rows(demo_comparisons_table(args.stdlib_pairs), "comparisons-demo")
    return rows, f"built-in `comparisons-demo` ({args.stdlib_pairs} helpfulness + 90 safety pairs)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/alignline-reward-bench")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--policy", help="HF folder to start both RMs from (default: an untrained base of --preset)")
    parser.add_argument("--stdlib-pairs", type=int, default=600)
    parser.add_argument("--comparisons", help="catalog dataset NAME[@VERSION] to use instead of the built-in pairs "
                        "(e.g. HH-RLHF pairs imported with `alignline harvest --hh-rlhf`)")
    parser.add_argument("--home", default=os.environ.get("ALIGNLINE_HOME", ".alignline"),
                        help="data dir whose catalog holds --comparisons")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, help="default: the preset's reward.learning_rate")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (head init and data order) for both sides")
    parser.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    args = parser.parse_args()
    out = Path(args.out)
    if out.exists():  # a stale checkpoint dir would make "our" run resume instead of train
        shutil.rmtree(out)
    out.mkdir(parents=True)
    cfg = load_config(args.preset)
    rcfg = dataclasses.replace(cfg.reward, max_length=args.max_length, log_every=1, checkpoint_every=10_000,
                               learning_rate=args.learning_rate or cfg.reward.learning_rate)
    policy, tokenizer, policy_desc = prepare_policy(args, cfg, out)
    rows, data_desc = read_rows(args)
    train, heldout = split_heldout(rows, 0.2, seed=0)
    pairs = encode_pairs(tokenizer, train, rcfg.margin, rcfg.max_length)
    pairs_path = write_pairs(pairs, out / "pairs.npz")
    steps = total_reward_steps(len(pairs), rcfg)
    seeds = list(range(args.seeds))

    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    ours, trl, tables = {}, {}, {"alignline": [], "TRL": []}
    try:  # seed by seed, ours then TRL, Ray up for both: load drift and Ray's idle daemons hit both sides alike
        for s in seeds:
            ours[s] = run_ours(dataclasses.replace(rcfg, seed=s), policy, pairs_path, out / f"seed{s}", 1)
            trl[s], trl_model = run_trl(dataclasses.replace(rcfg, seed=s), tokenizer, policy, pairs_path,
                                        out / f"seed{s}", steps)
            scorers = {"alignline": RewardScorer.from_folder(ours[s]["output_dir"], max_length=rcfg.max_length),
                       "TRL": RewardScorer(trl_model, tokenizer, max_length=rcfg.max_length)}
            ev = evaluate_reward_models(scorers, heldout, rcfg.safety_threshold, safety_rm=None)
            for name in tables:
                tables[name].append(ev.tables[name])
            print(f"seed {s}: accuracy alignline {ev.tables['alignline']['overall']:.3f} TRL "
                  f"{ev.tables['TRL']['overall']:.3f}", flush=True)
        ours_w2 = run_ours(rcfg, policy, pairs_path, out / "seed0", 2)
    finally:
        ray.shutdown()
    keep = ("pairs_per_s_mean", "train_seconds", "wall_s", "step", "losses", "step_seconds")
    figures = {"ours": {s: {k: r[k] for k in keep} for s, r in ours.items()},
               "ours_2_workers": {k: ours_w2[k] for k in keep}, "trl": trl, "tables": tables,
               "train_pairs": len(pairs), "heldout_pairs": len(heldout)}
    (out / "figures.json").write_text(json.dumps(figures, indent=1, default=lambda o: None))

    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}"

    B = rcfg.batch_size
    acc = {name: [t["overall"] for t in tables[name]] for name in tables}
    speed = {"alignline": [steady_pairs_per_s(ours[s]["step_seconds"], B) for s in seeds],
             "TRL": [steady_pairs_per_s(trl[s]["step_seconds"], B) for s in seeds]}
    speed_all = {"alignline": [ours[s]["pairs_per_s_mean"] for s in seeds], "TRL": [trl[s]["pairs_per_s_mean"] for s in seeds]}
    st = {name: {"speed": mean_std(speed[name]), "all": mean_std(speed_all[name])[0], "acc": mean_std(acc[name])}
          for name in tables}
    wins = sum(a > b for a, b in zip(acc["alignline"], acc["TRL"]))
    ties = sum(a == b for a, b in zip(acc["alignline"], acc["TRL"]))
    trl_speed, trl_all = st["TRL"]["speed"][0], st["TRL"]["all"]
    w2_speed = steady_pairs_per_s(ours_w2["step_seconds"], B)

    def run_row(title: str, name: str) -> str:
        (m, sd), (am, asd) = st[name]["speed"], st[name]["acc"]
        return (f"| {title} | {m:.1f} ± {sd:.1f} | {m / trl_speed:.2f}x | {st[name]['all']:.1f} | "
                f"{st[name]['all'] / trl_all:.2f}x | {pct(am)} ± {pct(asd)} | {', '.join(pct(a) for a in acc[name])} |")

    def level_row(name, kind):
        lv = pooled_levels(tables[name], kind)
        if not lv:
            return f"| {name} | {kind} | " + " | ".join("-" for _ in range(6)) + " |"
        cells = [f"{pct(lv[x][0] / lv[x][1])} ({lv[x][1]})" if x in lv else "- (0)" for x in MARGIN_LEVELS]
        return f"| {name} | {kind} | " + " | ".join(cells) + f" | {pct(lv['avg'][0] / lv['avg'][1])} | {lv['avg'][1]} |"

    gap = max(abs(a - b) for a, b in zip(ours[0]["losses"], ours_w2["losses"]))
    n_params = sum(p.numel() for p in load_model(policy).parameters()) / 1e6
    load = os.getloadavg()
    lines = [
        "## reward", "",
        f"`benchmarks/reward.py --seeds {args.seeds}{' --policy ' + args.policy if args.policy else ''}"
        f"{' --comparisons ' + args.comparisons if args.comparisons else ''}`, one run on "
        f"{platform.machine()} with {os.cpu_count()} CPU cores shared with other engineers' jobs (load average "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end), torch {torch.__version__}, {policy_desc} "
        f"({n_params:.1f}M params), {data_desc}, "
        f"split by prompt: {len(pairs)} train / {len(heldout)} held-out pairs, max length {rcfg.max_length}, batch "
        f"{rcfg.batch_size}, margin `{rcfg.margin}`, LR {rcfg.learning_rate} cosine to 10% after "
        f"{reward_warmup_steps(steps, rcfg)} warmup steps, 1 epoch = {steps} steps. Both sides get identical token ids "
        "and margins (TRL pre-tokenized `chosen_ids`/`rejected_ids`/`margin`) and, per seed, the same initial weights "
        "(backbone + the head drawn for that seed) and the very same batches: TRL reads, with its sampler set to "
        "`sequential`, the pairs in the order this recipe draws for the seed. Pairs/s over training "
        "steps only.", "",
        "| run | pairs/s, steps 2..N (mean ± sd over seeds) | vs TRL | pairs/s, all steps | vs TRL | "
        "held-out accuracy %, mean ± sd | per seed |",
        "|---|---|---|---|---|---|---|",
        run_row("alignline RM, Ray Train 1 worker (gloo)", "alignline"),
        f"| alignline RM, Ray Train 2 workers (gloo), seed 0 | {w2_speed:.1f} | {w2_speed / trl_speed:.2f}x | "
        f"{ours_w2['pairs_per_s_mean']:.1f} | {ours_w2['pairs_per_s_mean'] / trl_all:.2f}x | "
        f"not scored (losses match 1 worker to {gap:.1e}) | |",
        run_row("TRL RewardTrainer (margin column, fp32)", "TRL"),
        "",
        "Steps 2..N leave out each side's first step (one-off costs; under Ray Train also the controller's helper "
        "actors starting beside the worker on this 2-core machine). Wall time with Ray Train start-up, seed 0: "
        f"{ours[0]['wall_s']:.0f} s for {ours[0]['train_seconds']:.1f} s of training.", "",
        f"Paired by seed, alignline is more accurate on {wins} of {len(seeds)} seeds, equal on {ties}.", "",
        f"Held-out accuracy by rating level, pooled over the {len(seeds)} seeds (%, pair-scorings in brackets; layout "
        "of Llama 2 Table 8):", "",
        "| RM | test set | " + " | ".join(LEVEL_TITLES[x] for x in MARGIN_LEVELS) + " | Avg | pairs |",
        "|---|---|" + "---|" * 6,
        *(level_row(name, kind) for name in ("alignline", "TRL") for kind in ("helpfulness", "safety")), "",
        "Losses (first, last; seed 0): alignline "
        f"{ours[0]['losses'][0]:.3f} -> {ours[0]['losses'][-1]:.3f}; TRL {trl[0]['losses'][0]:.3f} -> "
        f"{trl[0]['losses'][-1]:.3f}.", "",
    ]
    append_results(Path(args.results), "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
