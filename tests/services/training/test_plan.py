"""`alignline plan`: the memory arithmetic, checked against numbers computed by hand and against the released
Llama 2 parameter counts; the llama2 presets fit 80 GB GPUs, and plans that cannot fit are refused."""
import json

import pytest

from alignline.config import load_config
from alignline.flows.cli import main
from alignline.services.training.plan import GIB, Shape, memory_plan, plan_for

# vocab 10, hidden 4, SwiGLU 8, 2 layers, 2 query heads / 1 KV head (head dim 2, kv width 2)
TINY = Shape(vocab=10, hidden=4, intermediate=8, layers=2, heads=2, kv_heads=1)


def b(gib: float) -> float:
    return gib * GIB  # back to bytes


def test_parameter_counts_match_the_released_llama2_checkpoints():
    assert TINY.layer_params() == 2 * 16 + 2 * 4 * 2 + 3 * 4 * 8 + 2 * 4 == 152
    assert TINY.params() == 10 * 4 + 2 * 152 + 4 + 10 * 4 == 388
    assert TINY.params(head=False) == 40 + 304 + 4 + 4 == 352  # a reward model: scalar head instead of the LM head
    # Hugging Face model cards of meta-llama/Llama-2-{7,13,70}b-hf
    assert Shape(32000, 4096, 11008, 32, 32, 32).params() == 6_738_415_616
    assert Shape(32000, 5120, 13824, 40, 40, 40).params() == 13_015_864_320
    assert Shape(32000, 8192, 28672, 80, 64, 8).params() == 68_976_648_192


def test_full_training_bytes_per_parameter_and_sharding_by_hand():
    plan = memory_plan(TINY, gpus=1, dtype="bfloat16", micro_batch=3, seq_len=5, batch=3)
    assert b(plan.weights_gib) == pytest.approx(388 * 2)
    assert b(plan.grads_gib) == pytest.approx(388 * 2)
    assert b(plan.optimizer_gib) == pytest.approx(388 * 12)  # fp32 master + two fp32 moments
    # activations: (7h + 2kv + 4I) x 2 B = (28 + 4 + 32) x 2 = 128 B per token and layer, 2 layers; logits 10 x 6 B
    assert b(plan.activations_gib) == pytest.approx(15 * (2 * 128 + 60))
    assert b(plan.total_gib) == pytest.approx(388 * 16 + 15 * 316)
    assert plan.tokens_per_step == 15 and plan.accumulation == 1
    fp32 = memory_plan(TINY, dtype="float32", micro_batch=3, seq_len=5, batch=3)
    assert b(fp32.weights_gib + fp32.grads_gib + fp32.optimizer_gib) == pytest.approx(388 * 16)  # 4 + 4 + 8, no master
    sharded = memory_plan(TINY, gpus=4, sharding="fsdp", micro_batch=3, seq_len=5, batch=12)
    assert b(sharded.weights_gib + sharded.grads_gib + sharded.optimizer_gib) == pytest.approx(388 * 16 / 4)
    # two layers and the root unit (embeddings, final norm, LM head: 388 - 2 x 152) unsharded, as stored: fp32 masters
    assert b(sharded.gathered_gib) == pytest.approx((2 * 152 + 84) * 4)
    lora_fsdp = memory_plan(TINY, gpus=4, sharding="fsdp", lora_rank=2, lora_targets=("q_proj",), micro_batch=3,
                            seq_len=5, batch=12)
    assert b(lora_fsdp.gathered_gib) == pytest.approx((2 * 152 + 84) * 2)  # LoRA's frozen base is stored in bf16
    assert b(sharded.activations_gib) == b(plan.activations_gib)  # FSDP does not shard activations
    ddp = memory_plan(TINY, gpus=4, sharding="none", micro_batch=3, seq_len=5, batch=12)
    assert b(ddp.weights_gib) == pytest.approx(388 * 2) and ddp.gathered_gib == 0  # every GPU a whole copy


def test_checkpointing_lora_reward_and_ppo_by_hand():
    ckpt = memory_plan(TINY, checkpointing=True, micro_batch=1, seq_len=1, batch=1)
    assert b(ckpt.activations_gib) == pytest.approx(2 * 4 * 2 + 128 + 60)  # layer inputs + one layer recomputed + logits
    lora = memory_plan(TINY, lora_rank=2, lora_targets=("q_proj", "v_proj"), micro_batch=1, seq_len=1, batch=1)
    assert lora.trainable == 2 * (2 * (4 + 4) + 2 * (4 + 2)) == 56
    assert b(lora.weights_gib) == pytest.approx(388 * 2 + 56 * 4)  # frozen bf16 base + fp32 adapters
    assert b(lora.grads_gib) == pytest.approx(56 * 4) and b(lora.optimizer_gib) == pytest.approx(56 * 8)
    rm = memory_plan(TINY, stage="reward", micro_batch=1, seq_len=5, batch=4)
    assert rm.params == 352 and b(rm.activations_gib) == pytest.approx(2 * 5 * 256)  # 2 sequences a pair, no logits
    assert rm.tokens_per_step == 4 * 2 * 5
    ppo = memory_plan(TINY, stage="ppo", micro_batch=1, seq_len=1, batch=1)
    assert b(ppo.frozen_gib) == pytest.approx((388 + 2 * 352) * 2)  # reference policy + two reward models in bf16


def test_plans_that_cannot_fit_are_refused_with_the_reason():
    seven = Shape(32000, 4096, 11008, 32, 32, 32)
    replicated = memory_plan(seven, gpus=8, sharding="none", checkpointing=True)  # the "112 GB per worker"
    assert b(replicated.weights_gib + replicated.grads_gib + replicated.optimizer_gib) == pytest.approx(6_738_415_616 * 16)
    assert not replicated.fits and "more than the 72.0 GiB usable of 80 GiB" in replicated.problems[0]
    assert memory_plan(seven, gpus=8, sharding="fsdp", checkpointing=True).fits
    odd = memory_plan(TINY, gpus=4, micro_batch=1, batch=6, seq_len=4)
    assert odd.problems == ("batch 6 is not a multiple of gpus x micro-batch = 4 x 1",)
    with pytest.raises(ValueError, match="sharding = 'zero3'"):
        memory_plan(TINY, sharding="zero3")


@pytest.mark.parametrize("preset", ["llama2-7b", "llama2-13b", "llama2-70b"])
def test_llama2_presets_fit_80gb_gpus_in_every_stage(preset):
    cfg = load_config(preset=preset)
    sft = plan_for(cfg, "sft")
    assert sft.fits and sft.sharding == "fsdp" and sft.dtype == "bfloat16" and sft.checkpointing
    assert sft.total_gib < 72
    for stage in ("reward", "ppo"):  # reward.sharding / rlhf.sharding: FSDP, as SFT
        plan = plan_for(cfg, stage)
        assert plan.fits and plan.sharding == "fsdp" and plan.shard_group == plan.gpus, (stage, plan.problems)
        assert plan.total_gib < 72


def test_cli_prints_the_plan_and_refuses_one_that_does_not_fit(capsys):
    assert main(["plan", "--preset", "llama2-70b", "--gpus", "64", "--stage", "sft"]) == 0
    out = capsys.readouterr().out
    assert "64 GPU(s), sharding fsdp" in out and "262,144 tokens per optimizer step" in out and out.strip().endswith("fits")
    for line in ("weights", "gradients", "optimizer (AdamW)", "activations", "total per GPU"):
        assert line in out
    assert main(["plan", "--preset", "llama2-70b", "--gpus", "8", "--stage", "sft"]) == 1
    captured = capsys.readouterr()
    assert "DOES NOT FIT" in captured.out and "plan refused for sft" in captured.err
    assert main(["plan", "--preset", "llama2-7b", "--stage", "sft", "--json", "--set", "model.lora_rank=16"]) == 0
    (plan,) = json.loads(capsys.readouterr().out)
    assert plan["lora_rank"] == 16 and plan["trainable"] == 32 * 16 * (4 * 8192 + 3 * (4096 + 11008))


def test_cli_plans_llama2_reward_and_ppo_sharded_and_refuses_them_replicated(capsys):
    for stage in ("reward", "ppo"):
        assert main(["plan", "--preset", "llama2-70b", "--gpus", "64", "--stage", stage]) == 0
        out = capsys.readouterr().out
        assert f"{stage}: " in out and "64 GPU(s), sharding fsdp (group 64)" in out and out.strip().endswith("fits")
    assert "frozen ref + 2 RMs" in out  # PPO: reference policy and both reward models, sharded over the 64 GPUs
    section = {"reward": "reward", "ppo": "rlhf"}
    for stage in ("reward", "ppo"):  # replicated, a 70B model with AdamW state is far past 80 GB
        assert main(["plan", "--preset", "llama2-70b", "--stage", stage, "--set", f"{section[stage]}.sharding='none'"]) == 1
        assert "DOES NOT FIT" in capsys.readouterr().out
