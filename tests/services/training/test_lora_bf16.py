"""Precision, memory and LoRA settings of the recipes (model.dtype, model.gradient_checkpointing, model.lora_*).

bf16 runs on CPU too (autocast), so the mixed-precision path is exercised here; LoRA folders must come out as plain
Hugging Face folders that the rest of the line loads without peft.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForSequenceClassification

from alignline.config import ConfigError, load_config
from alignline.config.model import ModelConfig
from alignline.config.reward import RewardConfig
from alignline.config.training import SFTConfig
from alignline.services.data import default_sft_table, table_dialogues
from alignline.services.models import load_model, load_reward_model, save_model
from alignline.services.models.factory import (compute_dtype_of, load_for_training, prepare_for_training,
                                               resolve_dtype)
from alignline.services.models.lora import add_lora, has_lora, merge_lora, merged_state_dict
from alignline.services.models.reward_model import reward_model_for_training
from alignline.services.training import (LaunchOptions, RewardJob, SFTJob, encode_pairs, encode_sft_rows, train_reward,
                                         train_sft, write_pairs, write_sft_rows)

UNHELPFUL = ("I don't know.", "No idea, sorry.", "Look it up yourself.")


@pytest.fixture(scope="module")
def sft_rows(tokenizer, tmp_path_factory):
    rows = encode_sft_rows(tokenizer, table_dialogues(default_sft_table(stdlib_limit=40)), seq_len=128)
    return write_sft_rows(rows, tmp_path_factory.mktemp("sft") / "rows.npz")


@pytest.fixture(scope="module")
def pairs_path(tokenizer, tmp_path_factory):
    rows = [{"prompt": d[:-1], "chosen": d[-1]["content"][:200], "rejected": UNHELPFUL[i % 3], "margin_level": "better",
             "safety_category": None, "is_safety": False, "source": "test"}
            for i, d in enumerate(table_dialogues(default_sft_table(stdlib_limit=24))[:24])]
    return write_pairs(encode_pairs(tokenizer, rows, "small", 64), tmp_path_factory.mktemp("pairs") / "pairs.npz")


def tensors(folder) -> dict[str, torch.Tensor]:
    with safe_open(str(Path(folder) / "model.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def sft(base_dir, rows, out, model: ModelConfig, **train) -> dict:
    cfg = SFTConfig(**{"batch_size": 8, "seq_len": 128, "epochs": 1, "learning_rate": 3e-3, "warmup_steps": 1,
                       "checkpoint_every": 100, "log_every": 1, "use_ray": False, **train})
    return train_sft(SFTJob(cfg, str(base_dir), rows, str(out / "policy"), str(out / "ckpt"), model=model),
                     LaunchOptions())


# -- config and dtype ------------------------------------------------------------------------------------------------
def test_dtype_auto_is_float32_on_cpu_bfloat16_on_cuda_and_fields_are_validated():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "cuda") == torch.bfloat16 == resolve_dtype(None, torch.device("cuda", 0))
    assert resolve_dtype("float16", "cpu") == torch.float16
    with pytest.raises(ConfigError, match="model.dtype = 'fp8' is not allowed"):
        load_config(overrides=["model.dtype=fp8"])
    with pytest.raises(ConfigError, match="model.lora_rank = -1 is not allowed"):
        load_config(overrides=["model.lora_rank=-1"])
    with pytest.raises(ConfigError, match="lora_target_modules"):
        load_config(overrides=["model.lora_rank=8", "model.lora_target_modules=[]"])


def test_bf16_autocast_keeps_float32_master_weights(base_dir):
    model = load_for_training(base_dir, ModelConfig(dtype="bfloat16"))
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # master weights (and so grads, AdamW state)
    assert compute_dtype_of(model) == torch.bfloat16
    logits = model(input_ids=torch.tensor([[1, 5, 9, 14]])).logits
    assert logits.dtype == torch.bfloat16  # the matmuls ran in bf16
    logits.float().sum().backward()
    assert all(p.grad.dtype == torch.float32 for p in model.parameters() if p.grad is not None)


def test_gradient_checkpointing_gives_the_same_gradients(base_dir):
    x = torch.tensor([[1, 5, 9, 14, 22, 7, 3, 2]])
    grads = []
    for checkpointing in (False, True):
        model = load_for_training(base_dir, ModelConfig(gradient_checkpointing=checkpointing)).train()
        assert model.model.gradient_checkpointing is checkpointing
        model(input_ids=x).logits.float().pow(2).mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-5, atol=1e-6, msg=name)


# -- SFT ------------------------------------------------------------------------------------------------------------
def test_bf16_sft_on_cpu_tracks_float32(base_dir, sft_rows, tmp_path):
    fp32 = sft(base_dir, sft_rows, tmp_path / "fp32", ModelConfig())
    bf16 = sft(base_dir, sft_rows, tmp_path / "bf16", ModelConfig(dtype="bfloat16", gradient_checkpointing=True))
    assert len(bf16["losses"]) == len(fp32["losses"]) >= 4
    assert all(np.isfinite(bf16["losses"]))
    # bf16 matmuls round to 8 mantissa bits: same trajectory to about a percent, not bit-identical
    np.testing.assert_allclose(bf16["losses"], fp32["losses"], rtol=0.03)
    assert bf16["losses"] != fp32["losses"]
    assert np.mean(bf16["losses"][-2:]) < np.mean(bf16["losses"][:2])
    saved = load_model(bf16["output_dir"])
    assert json.loads((Path(bf16["output_dir"]) / "config.json").read_text()).get("use_cache", True) is True
    assert next(saved.parameters()).dtype == torch.float32


def test_lora_sft_trains_adapters_only_and_saves_a_plain_merged_folder(base_dir, sft_rows, tmp_path):
    model_cfg = ModelConfig(lora_rank=4, lora_alpha=8, lora_dropout=0.0, lora_target_modules=("q_proj", "v_proj"))
    result = sft(base_dir, sft_rows, tmp_path, model_cfg, learning_rate=2e-2)
    assert np.mean(result["losses"][-2:]) < np.mean(result["losses"][:2])
    out = Path(result["output_dir"])
    assert not (out / "adapter_config.json").exists()
    before, after = tensors(base_dir), tensors(out)
    assert set(after) == set(before)  # the same plain names: no lora_A/B, no base_layer
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)
    assert any(k.endswith("q_proj.weight") for k in changed) and any(k.endswith("v_proj.weight") for k in changed)
    loaded = load_model(out)  # loads with no peft involved
    assert not has_lora(loaded)


def test_merged_save_equals_the_adapted_model_and_training_continues(base_dir, tmp_path):
    cfg = ModelConfig(lora_rank=4, lora_alpha=16, lora_dropout=0.0)
    model = load_for_training(base_dir, cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    c = model.config  # r (in + out) per targeted matrix and layer
    kv = c.hidden_size // c.num_attention_heads * c.num_key_value_heads
    per_layer = 4 * ((c.hidden_size + c.hidden_size) * 2 + (c.hidden_size + kv) * 2
                     + (c.hidden_size + c.intermediate_size) * 2 + (c.intermediate_size + c.hidden_size))
    assert trainable == per_layer * c.num_hidden_layers
    for name, p in model.named_parameters():
        if "lora_B" in name:  # B starts at zero (the adapted model starts as the base); make the adapters do something
            torch.nn.init.normal_(p, std=0.05)
    model.eval()
    x = torch.tensor([[1, 5, 9, 14, 22, 7]])
    with torch.no_grad():
        adapted = model(input_ids=x).logits
    save_model(model, load_for_training.__globals__["load_tokenizer"](base_dir), tmp_path / "merged")
    assert has_lora(model)  # a mid-run save (PPO keeps its best policy) leaves the adapters in place
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path / "merged")(input_ids=x).logits, adapted, rtol=1e-4, atol=1e-5)
        merged = merge_lora(model)(input_ids=x).logits
    assert not has_lora(model)
    torch.testing.assert_close(merged, adapted, rtol=1e-4, atol=1e-5)


def test_lora_names_must_exist_in_the_model(base_dir):
    with pytest.raises(ValueError, match="c_attn.*allowed: .*q_proj"):
        load_for_training(base_dir, ModelConfig(lora_rank=4, lora_target_modules=("c_attn",)))


# -- reward models --------------------------------------------------------------------------------------------------
def test_lora_bf16_reward_model_trains_adapters_and_head_and_saves_a_plain_classifier(base_dir, pairs_path, tmp_path):
    cfg = RewardConfig(batch_size=8, max_length=64, learning_rate=5e-3, checkpoint_every=100, log_every=1,
                       use_ray=False, epochs=2, min_warmup_steps=1)
    model_cfg = ModelConfig(lora_rank=4, lora_alpha=8, lora_dropout=0.0, dtype="bfloat16")
    rm = reward_model_for_training(base_dir, model_cfg)
    head = rm.head.weight.numel()
    lora = sum(p.numel() for n, p in rm.named_parameters() if ".lora_" in n)
    assert sum(p.numel() for p in rm.parameters() if p.requires_grad) == head + lora
    assert rm.head.weight.dtype == torch.float32 and rm.backbone.embed_tokens.weight.dtype == torch.bfloat16
    job = RewardJob(cfg, str(base_dir), pairs_path, str(tmp_path / "rm"), str(tmp_path / "ckpt"), model=model_cfg)
    result = train_reward(job, LaunchOptions())
    assert result["trainable_params"] == head + lora
    assert all(np.isfinite(result["losses"])) and np.mean(result["losses"][-2:]) < np.mean(result["losses"][:2])
    out = Path(result["output_dir"])
    keys = set(tensors(out))
    assert "score.weight" in keys and not any("lora" in k or "base_layer" in k for k in keys)
    plain = AutoModelForSequenceClassification.from_pretrained(str(out), dtype=torch.float32, local_files_only=True)
    loaded, tok = load_reward_model(out)
    assert type(plain).__name__ == "LlamaForSequenceClassification"
    ids = torch.tensor([[1, 5, 9, 14, 22, 7]])
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids=ids).logits[:, 0], loaded(ids, torch.ones_like(ids)),
                                   rtol=1e-4, atol=1e-5)


def test_head_mode_ignores_lora(base_dir):
    rm = reward_model_for_training(base_dir, ModelConfig(lora_rank=4), lora=False)
    assert not has_lora(rm.classifier)


def test_prepare_for_training_wraps_a_policy_with_value_head(base_dir):
    from alignline.services.training.ppo import PolicyWithValue

    cfg = ModelConfig(lora_rank=2, dtype="bfloat16", gradient_checkpointing=True)
    model = prepare_for_training(PolicyWithValue(load_for_training(base_dir, cfg)), cfg)
    x = torch.tensor([[1, 5, 9, 14]])
    logits, values = model(x, torch.ones_like(x), torch.arange(4)[None])
    assert logits.dtype == torch.bfloat16
    (logits.float().mean() + values.float().mean()).backward()
    trained = {n for n, p in model.named_parameters() if p.grad is not None}
    assert "value_head.weight" in trained and all(".lora_" in n or n.startswith("value_head") for n in trained)
    assert merged_state_dict(model.policy).keys() == load_model(base_dir).state_dict().keys()
