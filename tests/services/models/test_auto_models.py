"""Any Llama-family checkpoint loads through the factory: tiny Qwen2 and Mistral folders (built here, no downloads)
with a ChatML tokenizer load as their own classes, keep their chat template for the answer-only masks, become reward
models of their own family, and train through the SFT recipe."""
import copy

import numpy as np
import pytest
import torch
from transformers import (AutoModelForSequenceClassification, MistralConfig, MistralForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)

from alignline.config.model import ModelConfig
from alignline.config.training import SFTConfig
from alignline.services.models import (IGNORE_INDEX, encode_dialogue, load_model, load_reward_model, load_tokenizer,
                                       reward_model_from_policy, save_reward_model)
from alignline.services.models.chat import uses_llama2_format
from alignline.services.training import LaunchOptions, SFTJob, encode_sft_rows, train_sft, write_sft_rows

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
SHAPE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=256)
FAMILIES = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "mistral": (MistralConfig, MistralForCausalLM)}
DIALOGUE = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What does len do?"},
            {"role": "assistant", "content": "It counts items."}]


@pytest.fixture(scope="module")
def chatml_tokenizer(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.eos_token = "<|im_end|>"
    tok.chat_template = CHATML
    return tok


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_dir(request, chatml_tokenizer, tmp_path_factory):
    config_cls, model_cls = FAMILIES[request.param]
    tok = chatml_tokenizer
    config = config_cls(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                        eos_token_id=tok.eos_token_id, tie_word_embeddings=False, **SHAPE)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp(request.param)
    model_cls(config).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return request.param, model_cls, folder


def test_a_checkpoint_loads_as_its_own_family_with_its_own_template(family_dir):
    _, model_cls, folder = family_dir
    model, tok = load_model(folder), load_tokenizer(folder)
    assert type(model) is model_cls and next(model.parameters()).dtype == torch.float32
    assert tok.chat_template == CHATML and not uses_llama2_format(tok)
    encoded = encode_dialogue(tok, DIALOGUE)
    text = tok.decode(encoded.input_ids)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>") and "[INST]" not in text
    answer = [t for t, y in zip(encoded.input_ids, encoded.labels) if y != IGNORE_INDEX]
    assert tok.decode(answer).startswith("It counts items.<|im_end|>")  # loss on the answer (and its end) only
    assert load_model(folder, dtype="bfloat16").dtype == torch.bfloat16


def test_reward_model_of_another_family_is_that_familys_classifier(family_dir, tmp_path):
    name, model_cls, folder = family_dir
    rm = reward_model_from_policy(load_model(folder), seed=0, init_std=1.0).eval()
    assert type(rm.classifier).__name__ == model_cls.__name__.replace("ForCausalLM", "ForSequenceClassification")
    tok = load_tokenizer(folder)
    save_reward_model(rm, tok, tmp_path / "rm")
    hf = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "rm"), local_files_only=True).eval()
    loaded, _ = load_reward_model(tmp_path / "rm")
    ids = torch.tensor([tok(t, add_special_tokens=False)["input_ids"][:6] for t in ("one two three four five six",
                                                                                     "seven eight nine ten eleven twelve")])
    ids = ids[:, : min(len(r) for r in ids)]
    with torch.no_grad():
        expected = rm(ids, torch.ones_like(ids))
        torch.testing.assert_close(loaded(ids, torch.ones_like(ids)), expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(hf(input_ids=ids).logits[:, 0], expected, rtol=1e-4, atol=1e-5)


def test_sft_trains_another_family_with_lora(family_dir, tmp_path):
    _, model_cls, folder = family_dir
    tok = load_tokenizer(folder)
    rows = write_sft_rows(encode_sft_rows(tok, [DIALOGUE] * 16, seq_len=48), tmp_path / "rows.npz")
    cfg = SFTConfig(batch_size=4, seq_len=48, epochs=1, learning_rate=3e-2, warmup_steps=1, checkpoint_every=100,
                    log_every=1, use_ray=False)
    job = SFTJob(cfg, str(folder), rows, str(tmp_path / "out"), str(tmp_path / "ckpt"),
                 model=ModelConfig(lora_rank=4, lora_dropout=0.0))
    result = train_sft(job, LaunchOptions())
    assert np.isfinite(result["losses"]).all() and result["losses"][-1] < result["losses"][0]
    assert type(load_model(result["output_dir"])) is model_cls
