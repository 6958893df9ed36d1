"""Reward-model folders are Hugging Face `LlamaForSequenceClassification` folders: HF scores what `RewardScorer`
scores, older folders (LlamaModel trunk + reward_head.pt) still load, and new ones hold safetensors only."""
import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, LlamaModel

from alignline.services.models import build_model, load_reward_model, reward_model_from_policy, save_reward_model
from alignline.services.models.reward_model import LEGACY_HEAD_FILE, MARKER_FILE, RewardModel
from alignline.services.rewards import RewardScorer, encode_response, pad_batch

# Different lengths, so a batch is right-padded (a system turn, a one-word prompt, a long answer).
PROMPTS = [[{"role": "user", "content": "How do I read a file in Python?"}],
           [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is a dict?"}],
           [{"role": "user", "content": "Hi"}]]
RESPONSES = ["Use open(path) in a with block and call read().",
             "A mapping from keys to values.",
             "Hello! I can answer questions about the standard library, for example json, os, re and pathlib."]
MAX_LENGTH = 256


@pytest.fixture(scope="module")
def rm(micro_config, tokenizer) -> RewardModel:
    policy = build_model(micro_config, tokenizer=tokenizer, seed=0)
    return reward_model_from_policy(policy, seed=0, init_std=1.0).eval()  # std 1: scores of order 1, not 1e-2


def hf_scores(folder) -> torch.Tensor:
    """Scores as an outside consumer (TRL, OpenRLHF) gets them: Auto classes, the folder's tokenizer padding."""
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    tok = AutoTokenizer.from_pretrained(str(folder))
    ids = [encode_response(tok, p, r, MAX_LENGTH) for p, r in zip(PROMPTS, RESPONSES)]
    batch = tok.pad({"input_ids": ids}, return_tensors="pt")                                  # (3, T)
    assert (batch["attention_mask"] == 0).any() and (batch["attention_mask"][:, 0] == 1).all()  # right-padded
    with torch.no_grad():
        return model(**batch).logits.squeeze(-1)                                              # (3,)


def test_auto_model_for_sequence_classification_scores_what_the_scorer_scores(rm, tokenizer, tmp_path):
    save_reward_model(rm, tokenizer, tmp_path / "rm")
    ours = RewardScorer.from_folder(tmp_path / "rm", max_length=MAX_LENGTH).raw_scores(PROMPTS, RESPONSES)
    theirs = hf_scores(tmp_path / "rm")
    assert ours.abs().max() > 0.1  # not a trivially small head
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)
    # and what the in-memory model scores before saving
    torch.testing.assert_close(RewardScorer(rm, tokenizer, max_length=MAX_LENGTH).raw_scores(PROMPTS, RESPONSES),
                               ours, rtol=0, atol=1e-6)


def test_folder_holds_safetensors_and_a_sequence_classification_config(rm, tokenizer, tmp_path):
    folder = save_reward_model(rm, tokenizer, tmp_path / "rm")
    files = {p.name for p in folder.iterdir()}
    assert "model.safetensors" in files and MARKER_FILE in files
    assert not [f for f in files if f.endswith((".pt", ".bin", ".pth"))]
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"] and len(config["id2label"]) == 1
    # HF pools at the last token that is not the pad: the pad must be set, and not be eos (which ends every answer)
    assert config["pad_token_id"] == tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.padding_side == "left"  # the caller's tokenizer is left as it was


def write_legacy_folder(rm: RewardModel, tokenizer, folder):
    """A folder as `save_reward_model` wrote it before the HF format: LlamaModel trunk + reward_head.pt."""
    rm.backbone.save_pretrained(str(folder))
    torch.save(rm.head.state_dict(), folder / LEGACY_HEAD_FILE)
    tokenizer.save_pretrained(str(folder))
    (folder / MARKER_FILE).write_text(json.dumps({"kind": "reward_model", "head": LEGACY_HEAD_FILE,
                                                  "hidden_size": rm.config.hidden_size}))


def legacy_scores(folder, tokenizer) -> torch.Tensor:
    """The old RewardModel's computation, from the old folder's files: trunk, last real token, head."""
    trunk = LlamaModel.from_pretrained(str(folder)).eval()
    head = torch.load(folder / LEGACY_HEAD_FILE, weights_only=True)["weight"]                  # (1, H)
    ids, mask = pad_batch([encode_response(tokenizer, p, r, MAX_LENGTH) for p, r in zip(PROMPTS, RESPONSES)],
                          tokenizer.pad_token_id)                                               # (3, T) each
    with torch.no_grad():
        hidden = trunk(input_ids=ids, attention_mask=mask).last_hidden_state                   # (3, T, H)
    return hidden[torch.arange(3), mask.sum(-1) - 1] @ head[0]                                   # (3,)


def test_legacy_folder_loads_and_scores_as_before(rm, tokenizer, tmp_path):
    write_legacy_folder(rm, tokenizer, tmp_path / "old")
    before = legacy_scores(tmp_path / "old", tokenizer)
    loaded, tok = load_reward_model(tmp_path / "old")
    torch.testing.assert_close(RewardScorer(loaded, tok, max_length=MAX_LENGTH).raw_scores(PROMPTS, RESPONSES),
                               before, rtol=0, atol=1e-5)
    torch.testing.assert_close(RewardScorer.from_folder(tmp_path / "old", max_length=MAX_LENGTH)
                               .raw_scores(PROMPTS, RESPONSES), before, rtol=0, atol=1e-5)
    # saving it again converts the folder in place: HF loads it, the old head file is gone
    save_reward_model(loaded, tok, tmp_path / "old")
    assert not (tmp_path / "old" / LEGACY_HEAD_FILE).exists()
    torch.testing.assert_close(hf_scores(tmp_path / "old"), before, rtol=0, atol=1e-5)


def test_training_checkpoints_with_the_old_weight_names_still_load(rm, micro_config, tokenizer):
    old = {**{f"backbone.{k}": v for k, v in rm.backbone.state_dict().items()}, "head.weight": rm.head.weight}
    fresh = reward_model_from_policy(build_model(micro_config, tokenizer=tokenizer, seed=1), seed=1)
    fresh.load_state_dict(old)  # strict: every weight found under its new name
    for name, w in rm.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[name], w, msg=name)
