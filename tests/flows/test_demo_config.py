"""The chat-model demo's config: `make demo` is not run by CI, so its settings are checked here.

Its overrides must stay valid config (a typo would only show on a user's machine), every RLHF stage is on, and the
config the demo writes for the commands that carry the line on loads back to the same settings.
"""
from __future__ import annotations

import pytest

from alignline.config import ConfigError, load_config
from alignline.config.dump import dump_toml
from alignline.flows.demo import CHAT_DEMO_OVERRIDES, chat_model_config, line_config, with_every_stage


@pytest.mark.parametrize("model", sorted(CHAT_DEMO_OVERRIDES))
def test_chat_demo_config_resolves_with_every_stage_and_round_trips(model, tmp_path):
    base = load_config(home=tmp_path)
    cfg = with_every_stage(chat_model_config(base, model, str(tmp_path / "checkpoint")))
    assert str(cfg.model.checkpoint) == str(tmp_path / "checkpoint")
    assert (cfg.rlhf.ppo_enabled, cfg.rlhf.gatt_enabled, cfg.rlhf.context_distillation_enabled) == (True, True, True)
    assert cfg.rlhf.ppo_reference == "sft"  # KL to pi_0 in every iteration (Llama 2 §3.2.3)
    assert cfg.model.lora_rank > 0 and cfg.reward.trainable == "head"  # sized for 2 CPU cores
    path = line_config(cfg, model)
    path.write_text(dump_toml(cfg))
    again = load_config(file=path, home=tmp_path)
    assert again.to_dict() == cfg.to_dict()


def test_user_settings_win_over_the_demo_sizing(tmp_path):
    model = sorted(CHAT_DEMO_OVERRIDES)[0]
    cfg = chat_model_config(load_config(home=tmp_path), model, str(tmp_path), ("rlhf.rs_samples=7",))
    assert cfg.rlhf.rs_samples == 7


def test_an_unknown_demo_model_is_refused_with_the_allowed_ones(tmp_path):
    with pytest.raises(ConfigError, match="smollm2-135m"):
        chat_model_config(load_config(home=tmp_path), "gpt-17", str(tmp_path))
