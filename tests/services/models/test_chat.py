import pytest
import torch

from alignline.services.models import (IGNORE_INDEX, ChatFormatError, encode_dialogue, encode_prompt,
                                       render_llama2, train_bpe_tokenizer)
from alignline.services.training import token_loss_sum

SYS = [{"role": "system", "content": "Be brief."}]
TURN1 = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."}]
TURN2 = [{"role": "user", "content": "And 3+3?"}, {"role": "assistant", "content": "6."}]
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def test_llama2_template_matches_hand_written_strings():
    assert render_llama2(TURN1) == "<s>[INST] What is 2+2? [/INST] 4. </s>"
    assert render_llama2(SYS + TURN1) == "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nWhat is 2+2? [/INST] 4. </s>"
    assert render_llama2(SYS + TURN1 + TURN2) == (
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nWhat is 2+2? [/INST] 4. </s>"
        "<s>[INST] And 3+3? [/INST] 6. </s>")
    assert render_llama2(SYS + TURN1 + TURN2[:1]) == (
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nWhat is 2+2? [/INST] 4. </s><s>[INST] And 3+3? [/INST]")


def test_tokenizer_chat_template_renders_the_same_text(tokenizer):
    for dialogue in (TURN1, SYS + TURN1, SYS + TURN1 + TURN2):
        assert tokenizer.apply_chat_template(dialogue, tokenize=False) == render_llama2(dialogue)


def test_segment_encoding_equals_encoding_the_whole_string(tokenizer):
    dialogue = SYS + TURN1 + TURN2
    encoded = encode_dialogue(tokenizer, dialogue)
    assert encoded.input_ids == tokenizer(render_llama2(dialogue), add_special_tokens=False)["input_ids"]
    assert encoded.input_ids[0] == tokenizer.bos_token_id


def test_loss_mask_keeps_only_answer_tokens_multi_turn(tokenizer):
    encoded = encode_dialogue(tokenizer, SYS + TURN1 + TURN2)
    trained = [t for t in encoded.labels if t != IGNORE_INDEX]
    assert tokenizer.decode(trained) == " 4. </s> 6. </s>"
    last_only = encode_dialogue(tokenizer, SYS + TURN1 + TURN2, train_on="last")
    assert tokenizer.decode([t for t in last_only.labels if t != IGNORE_INDEX]) == " 6. </s>"


def test_prompt_tokens_contribute_nothing_to_the_loss(tokenizer):
    encoded = encode_dialogue(tokenizer, SYS + TURN1)
    labels = torch.tensor([encoded.labels])
    logits = torch.randn(1, len(encoded.labels), len(tokenizer), requires_grad=True)
    loss, count = token_loss_sum(logits, labels)
    loss.backward()
    prompt_rows = (labels[0, 1:] == IGNORE_INDEX)  # logits at t predict label t+1
    assert count == int((~prompt_rows).sum())
    assert logits.grad[0, :-1][prompt_rows].abs().sum() == 0
    assert logits.grad[0, :-1][~prompt_rows].abs().sum() > 0


def test_checkpoint_chat_template_is_used_and_masked(real_texts):
    tok = train_bpe_tokenizer(real_texts[:2], vocab_size=400)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    dialogue = SYS + TURN1 + TURN2
    encoded = encode_dialogue(tok, dialogue)
    assert tok.decode(encoded.input_ids) == tok.apply_chat_template(dialogue, tokenize=False)
    assert tok.decode([t for t in encoded.labels if t != IGNORE_INDEX]) == "4.<|im_end|>\n6.<|im_end|>\n"
    prompt = tok.decode(encode_prompt(tok, SYS + TURN1 + TURN2[:1]))
    assert prompt.endswith("<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("dialogue, message", [
    ([], "at least one"),
    ([{"role": "assistant", "content": "hi"}], "role 'assistant'; allowed: 'user'"),
    ([{"role": "user", "content": "hi"}], "must end with a 'assistant'"),
    (TURN1 + TURN1[:1] + TURN1[:1], "role 'user'; allowed: 'assistant'"),
])
def test_bad_dialogues_fail_with_clear_errors(tokenizer, dialogue, message):
    with pytest.raises(ChatFormatError, match=message):
        encode_dialogue(tokenizer, dialogue)
