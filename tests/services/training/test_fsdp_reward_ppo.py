"""FSDP2 on CPU (gloo) for the reward-model and PPO recipes: 2 sharded ranks compute what the unsharded run computes
(RM: one process; PPO: 2 DDP ranks, which sample the same rollouts), write sharded DCP checkpoints, and a run killed
after a checkpoint resumes to the same losses and weights as one never killed.

Ranks are plain processes with a gloo process group (what Ray Train sets up for each worker); one module fixture
starts them once and runs every plan in turn, the tests then read their results."""
import os
from dataclasses import replace
from pathlib import Path

import gloo_ranks
from gloo_ranks import KilledAt, kill_after
import pytest
import torch

from alignline.config.fields import ConfigError
from alignline.config.model import ModelConfig
from alignline.config.reward import RewardConfig
from alignline.config.rlhf import RLHFConfig
from alignline.services.data import default_sft_table, table_dialogues
from alignline.services.models import (build_model, load_model, load_reward_model, reward_model_from_policy,
                                       save_model, save_reward_model)
from alignline.services.training import (LaunchOptions, PPOJob, RewardJob, RewardModelFolders, encode_pairs,
                                         train_ppo, train_reward, write_pairs)
from alignline.services.training.launch import WorkerContext
from alignline.services.training.ppo import ppo_loop
from alignline.services.training.reward import reward_loop
from alignline.services.training.sharding import is_sharded_checkpoint, verified

UNHELPFUL = ("I don't know.", "No idea, sorry.", "Look it up yourself.", "That is not something I can answer.")
LEVELS = ("significantly_better", "better", "slightly_better", "negligibly_better")




def _run(job, kill_at: int, ctx: WorkerContext) -> dict:
    if isinstance(job, RewardJob):
        job = replace(job, on_step=kill_after(kill_at)) if kill_at else job
        return reward_loop(job, ctx)
    job = replace(job, on_iteration=kill_after(kill_at)) if kill_at else job
    return ppo_loop(job, ctx)


def _rank(rank: int, world: int, port: int, plan: list, out) -> None:
    """Runs every (job, kill_at, sharding) of the plan in turn on this rank: one process start for all the runs."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    results = []
    for job, kill_at, sharding in plan:
        try:
            results.append(_run(job, kill_at, WorkerContext(rank=rank, world_size=world, sharding=sharding)))
        except KilledAt:
            results.append("killed")
        except Exception as exc:  # handed to the test
            results.append(f"error: {type(exc).__name__}: {exc}")
    out.put((rank, results))
    torch.distributed.destroy_process_group()


def run_ranks(plan: list, world: int = 2) -> list:
    """Each (job, kill_at, sharding) on `world` local gloo ranks, in order; rank 0's summaries ('killed' when the
    hook stopped it, 'error: ...' when it raised)."""
    return gloo_ranks.run_ranks(_rank, plan, world)


# -- jobs ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def start_dir(micro_config, tokenizer, tmp_path_factory):
    """A micro Llama policy (seed 0) and two reward models started from it (heads seeded 1 and 2)."""
    root = tmp_path_factory.mktemp("fsdp-rm-ppo")
    policy = build_model(micro_config, tokenizer=tokenizer, seed=0)
    save_model(policy, tokenizer, root / "policy")
    for name, seed in (("helpful", 1), ("safety", 2)):
        save_reward_model(reward_model_from_policy(policy, seed=seed, init_std=0.5), tokenizer, root / name)
    return root


def reward_job(root: Path, tokenizer, out: Path, **train) -> RewardJob:
    cfg = RewardConfig(**{"batch_size": 16, "max_length": 96, "learning_rate": 2e-3, "checkpoint_every": 3,
                          "log_every": 1, "micro_batch_size": 4, "use_ray": False, **train})
    pairs_path = root / "pairs.npz"
    if not pairs_path.exists():
        rows = [{"prompt": d[:-1], "chosen": d[-1]["content"][:200], "rejected": UNHELPFUL[i % 4],
                 "margin_level": LEVELS[i % 4]}
                for i, d in enumerate(table_dialogues(default_sft_table(stdlib_limit=120))[:96])]
        write_pairs(encode_pairs(tokenizer, rows, cfg.margin, cfg.max_length), pairs_path)  # 96 pairs: 6 steps
    return RewardJob(cfg, str(root / "policy"), str(pairs_path), str(out / "rm"), str(out / "ckpt"))


PROMPTS = [[{"role": "user", "content": f"Question {i}: what does function f{i} return?"}] for i in range(20)]


def ppo_job(root: Path, out: Path, heldout: int = 4, **rl) -> PPOJob:
    cfg = RLHFConfig(**{"ppo_batch_size": 8, "ppo_minibatch_size": 4, "ppo_epochs": 1, "ppo_iterations": 4,
                        "ppo_learning_rate": 3e-3, "ppo_weight_decay": 0.0, "max_new_tokens": 8, "ppo_eval_every": 2,
                        "ppo_patience": 5, "ppo_checkpoint_every": 2, "rollout_batch_size": 4, "use_ray": False, **rl})
    scorer = RewardModelFolders(str(root / "helpful"), str(root / "safety"))  # real RMs: sharded under FSDP too
    return PPOJob(cfg, str(root / "policy"), str(root / "policy"), PROMPTS[:16], [i % 3 == 0 for i in range(16)],
                  PROMPTS[16:16 + heldout], [i == 1 for i in range(heldout)], scorer, str(out / "model"),
                  checkpoint_dir=str(out / "ckpt"))


@pytest.fixture(scope="module")
def runs(start_dir, tokenizer, tmp_path_factory):
    """Every multi-rank run of this module in one start of 2 gloo ranks."""
    out = tmp_path_factory.mktemp("runs")
    one = train_reward(reward_job(start_dir, tokenizer, out / "rm-one", checkpoint_every=100), LaunchOptions())
    top = dict(trainable="top_layers", checkpoint_every=100)
    one_top = train_reward(reward_job(start_dir, tokenizer, out / "rm-one-top", **top), LaunchOptions())
    rm_resumed, ppo_resumed = reward_job(start_dir, tokenizer, out / "rm-resumed"), ppo_job(start_dir, out / "ppo-resumed")
    names = ["rm_fsdp", "rm_killed", "rm_resumed", "rm_fsdp_top", "ppo_ddp", "ppo_fsdp", "ppo_killed", "ppo_resumed",
             "ppo_odd_heldout"]
    results = run_ranks([
        (reward_job(start_dir, tokenizer, out / "rm-fsdp"), 0, "fsdp"),
        (rm_resumed, 4, "fsdp"),     # killed after step 4; the last checkpoint is step 3
        (rm_resumed, 0, "fsdp"),     # the rerun resumes from it
        (reward_job(start_dir, tokenizer, out / "rm-fsdp-top", **top), 0, "fsdp"),  # frozen trunk below the top block
        (ppo_job(start_dir, out / "ppo-ddp"), 0, "none"),
        (ppo_job(start_dir, out / "ppo-fsdp"), 0, "fsdp"),
        (ppo_resumed, 3, "fsdp"),    # killed after iteration 3; the last checkpoint is iteration 2
        (ppo_resumed, 0, "fsdp"),
        # 3 held-out prompts on 2 ranks: rank 1 samples and scores a repeat too (no rank may skip a collective)
        (ppo_job(start_dir, out / "ppo-odd", heldout=3, ppo_iterations=1, max_new_tokens=4), 0, "fsdp"),
    ])
    return {"rm_one": one, "rm_one_top": one_top, "out": out, **dict(zip(names, results))}


def _ok(result):
    assert isinstance(result, dict), result  # an 'error: ...' string names what the rank raised
    return result


def rm_weights(folder) -> dict[str, torch.Tensor]:
    return load_reward_model(folder)[0].state_dict()


def test_sharded_reward_model_matches_one_process_and_resumes_exactly(runs, start_dir):
    one, whole = runs["rm_one"], _ok(runs["rm_fsdp"])
    # Same global batch, gradients averaged over ranks: the run one process computes (up to float reduction order).
    assert whole["step"] == one["step"] == 6
    assert whole["losses"] == pytest.approx(one["losses"], rel=1e-4)
    a, b = rm_weights(one["output_dir"]), rm_weights(whole["output_dir"])
    for name in a:  # the saved RM is gathered whole from the shards, a plain HF classifier folder
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5, msg=name)

    ckpt = sorted((runs["out"] / "rm-fsdp" / "ckpt").glob("step_*"))[-1]
    assert is_sharded_checkpoint(ckpt) and verified(ckpt)
    assert {"__0_0.distcp", "__1_0.distcp", "rank_0.pt", "rank_1.pt"} <= {p.name for p in ckpt.iterdir()}

    assert runs["rm_killed"] == "killed"
    resumed = _ok(runs["rm_resumed"])
    assert resumed["resumed_from_step"] == 3
    assert resumed["losses"] == pytest.approx(whole["losses"][3:], rel=1e-6)
    c = rm_weights(resumed["output_dir"])
    for name in b:
        torch.testing.assert_close(c[name], b[name], rtol=0, atol=1e-7, msg=name)

    # reward.trainable = 'top_layers': frozen blocks inside the sharded model, the same run as one process
    one_top, top = runs["rm_one_top"], _ok(runs["rm_fsdp_top"])
    assert top["trainable_params"] == one_top["trainable_params"] < one["trainable_params"]
    assert top["losses"] == pytest.approx(one_top["losses"], rel=1e-4)
    a, d = rm_weights(one_top["output_dir"]), rm_weights(top["output_dir"])
    for name in a:
        torch.testing.assert_close(d[name], a[name], rtol=1e-4, atol=1e-5, msg=name)
    frozen = "model.layers.0.mlp.up_proj.weight"  # the bottom block kept its starting weights
    assert torch.equal(d[f"classifier.{frozen}"], load_model(start_dir / "policy").state_dict()[frozen])


def test_sharded_ppo_matches_the_unsharded_run_and_resumes_exactly(runs):
    ddp, fsdp = _ok(runs["ppo_ddp"]), _ok(runs["ppo_fsdp"])
    # Same rollouts on each rank (sharded sampling runs every step, then cuts at EOS), same sharded RMs' scores:
    # rewards, KL and the losses of the DDP run, up to float reduction order.
    assert fsdp["iterations"] == ddp["iterations"] == 4
    assert fsdp["response_length"] == ddp["response_length"]
    for key in ("reward", "kl", "value_loss", "clip_fraction", "entropy"):
        assert fsdp[key] == pytest.approx(ddp[key], rel=1e-4, abs=1e-6), key
    assert fsdp["heldout"] == pytest.approx(ddp["heldout"], rel=1e-5)
    assert ddp["kl"][-1] > 0  # the policy moved away from pi_0 and pays for it
    a, b = (load_model(runs["out"] / name / "model").state_dict() for name in ("ppo-ddp", "ppo-fsdp"))
    for name in a:  # the best policy, gathered whole from the shards, without the value head
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5, msg=name)

    ckpt = sorted((runs["out"] / "ppo-fsdp" / "ckpt").glob("step_*"))[-1]
    assert is_sharded_checkpoint(ckpt) and verified(ckpt)

    assert runs["ppo_killed"] == "killed"
    resumed = _ok(runs["ppo_resumed"])
    assert resumed["resumed_from_iteration"] == 2
    for key in ("reward", "kl", "value_loss", "response_length"):
        assert resumed[key] == pytest.approx(fsdp[key], rel=1e-6), key
    assert resumed["heldout_best"] == pytest.approx(fsdp["heldout_best"], rel=1e-6)
    c = load_model(runs["out"] / "ppo-resumed" / "model").state_dict()
    for name in b:
        torch.testing.assert_close(c[name], b[name], rtol=0, atol=1e-7, msg=name)

    odd = _ok(runs["ppo_odd_heldout"])  # unequal held-out shares finish (no rank waits on a collective forever)
    assert odd["iterations"] == 1 and len(odd["heldout"]) == 2 and all(0 < h < 1 for h in odd["heldout"])


def test_fsdp_refuses_lora_and_head_only_reward_models(start_dir, tokenizer, tmp_path):
    fsdp = LaunchOptions(num_workers=2, sharding="fsdp")
    lora = ModelConfig(lora_rank=4)
    job = reward_job(start_dir, tokenizer, tmp_path)
    with pytest.raises(ConfigError, match="reward.sharding = 'fsdp' is not allowed with model.lora_rank = 4"):
        train_reward(replace(job, model=lora), fsdp)
    with pytest.raises(ConfigError, match="reward.trainable = 'head'"):
        train_reward(replace(job, train=replace(job.train, trainable="head")), fsdp)
    with pytest.raises(ConfigError, match="rlhf.sharding = 'fsdp' is not allowed with model.lora_rank = 4"):
        train_ppo(replace(ppo_job(start_dir, tmp_path), model=lora), fsdp)


def test_sft_refuses_lora_under_fsdp():
    from alignline.services.training.sharding import refuse_lora

    refuse_lora("sft", 8, "none")
    refuse_lora("sft", 0, "fsdp")
    with pytest.raises(ConfigError, match="sft.sharding = 'fsdp' is not allowed with model.lora_rank = 8"):
        refuse_lora("sft", 8, "fsdp")
