import pytest
import torch

from alignline.config import load_config
from alignline.config.model import PRESETS, ModelConfig
from alignline.services.models import build_model, count_parameters, load_model, load_tokenizer, save_model


@pytest.mark.parametrize("preset, expected", [("llama2-7b", 6.74e9), ("llama2-13b", 13.0e9), ("llama2-70b", 69.0e9)])
def test_paper_presets_have_the_paper_parameter_counts(preset, expected):
    model = build_model(ModelConfig(**PRESETS[preset]), device="meta")  # shapes only, no memory
    assert count_parameters(model) == pytest.approx(expected, rel=0.005)


def test_70b_uses_grouped_query_attention_with_8_kv_heads():
    model = build_model(ModelConfig(**PRESETS["llama2-70b"]), device="meta")
    attn = model.model.layers[0].self_attn
    assert model.config.num_key_value_heads == 8
    assert attn.k_proj.weight.shape == (8 * 128, 8192)  # 8 KV heads of size 128


def test_tiny_preset_is_a_few_million_parameters_with_gqa_and_context_512():
    cfg = load_config("tiny").model
    model = build_model(cfg)
    # By hand: V=8192, H=256, I=688, 4 layers, 8 query heads / 2 KV heads of size 32 (k, v project to 64).
    # embeddings + untied lm_head 2 * 8192 * 256; per layer q, o 256 * 256, k, v 256 * 64, SwiGLU 3 * 256 * 688,
    # two RMSNorms 2 * 256; final norm 256. Tying the head, dropping GQA or a wrong width changes the count.
    per_layer = 2 * 256 * 256 + 2 * 256 * 64 + 3 * 256 * 688 + 2 * 256
    assert count_parameters(model) == 2 * 8192 * 256 + 4 * per_layer + 256 == 6_965_504
    assert cfg.num_key_value_heads < cfg.num_attention_heads and cfg.max_position_embeddings == 512


def test_saved_model_loads_back_through_the_factory(micro_config, tokenizer, tmp_path):
    model = build_model(micro_config, tokenizer=tokenizer, seed=3)
    save_model(model, tokenizer, tmp_path / "m")
    loaded, tok = load_model(tmp_path / "m"), load_tokenizer(tmp_path / "m")
    ids = torch.tensor([tokenizer("def f(x): return x", add_special_tokens=False)["input_ids"]])
    assert torch.equal(model(input_ids=ids).logits, loaded(input_ids=ids).logits)
    assert tok.pad_token_id == tokenizer.pad_token_id != tok.eos_token_id
    assert tok.chat_template == tokenizer.chat_template


def test_factory_refuses_hub_ids(tmp_path):
    with pytest.raises(FileNotFoundError, match="hub ids are not allowed"):
        load_model("meta-llama/Llama-2-7b-hf")
