import torch

from alignline.services.generation import SamplingParams, generate, generate_chat, sample_next
from alignline.services.models import build_model


def prompts_of(tokenizer):
    texts = ["def main():", "import os\nimport re\n\nclass", "x"]
    return [[tokenizer.bos_token_id] + tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_batched_greedy_with_left_padding_equals_one_prompt_at_a_time(micro_config, tokenizer):
    model = build_model(micro_config, tokenizer=tokenizer, seed=1)
    prompts = prompts_of(tokenizer)
    params = SamplingParams(max_new_tokens=12, temperature=0)
    batched = generate(model, prompts, params, tokenizer.pad_token_id, tokenizer.eos_token_id)
    for prompt, tokens, logprobs in zip(prompts, batched.tokens, batched.logprobs):
        single = generate(model, [prompt], params, tokenizer.pad_token_id, tokenizer.eos_token_id)
        assert single.tokens[0] == tokens
        torch.testing.assert_close(torch.tensor(single.logprobs[0]), torch.tensor(logprobs), atol=1e-4, rtol=0)


def test_kv_cache_decoding_matches_full_recomputation(micro_config, tokenizer):
    model = build_model(micro_config, tokenizer=tokenizer, seed=2)
    prompt = prompts_of(tokenizer)[1]
    out = generate(model, [prompt], SamplingParams(max_new_tokens=8, temperature=0), tokenizer.pad_token_id, -1)
    ids = list(prompt)
    for _ in range(8):  # no cache: the whole sequence every step
        with torch.no_grad():
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    assert out.tokens[0] == ids[len(prompt):]


def test_rows_stop_at_eos(micro_config, tokenizer):
    model = build_model(micro_config, tokenizer=tokenizer, seed=3)
    with torch.no_grad():  # make EOS the model's favourite token
        model.lm_head.weight[tokenizer.eos_token_id] *= 0
        model.lm_head.weight[tokenizer.eos_token_id] += 5 * model.model.norm.weight.sign()
    out = generate(model, prompts_of(tokenizer), SamplingParams(max_new_tokens=10, temperature=0),
                   tokenizer.pad_token_id, tokenizer.eos_token_id)
    assert all(t[-1] == tokenizer.eos_token_id and tokenizer.eos_token_id not in t[:-1] for t in out.tokens)


def test_top_p_keeps_only_the_nucleus_and_seed_is_reproducible():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.05, 0.05]])).repeat(500, 1)
    g = torch.Generator().manual_seed(0)
    picks = sample_next(logits, SamplingParams(temperature=1.0, top_p=0.8), g)
    assert set(picks.tolist()) == {0, 1}
    assert sample_next(logits, SamplingParams(temperature=1.0, top_p=0.5), g).unique().tolist() == [0]
    a = sample_next(logits, SamplingParams(), torch.Generator().manual_seed(7))
    assert torch.equal(a, sample_next(logits, SamplingParams(), torch.Generator().manual_seed(7)))


def test_generate_chat_returns_one_answer_per_dialogue_in_order(micro_config, tokenizer):
    model = build_model(micro_config, tokenizer=tokenizer, seed=4)
    dialogues = [[{"role": "user", "content": q}] for q in ("hi", "what does os.path.join do?", "x" * 50)]
    answers = generate_chat(model, tokenizer, dialogues, SamplingParams(max_new_tokens=5, temperature=0), batch_size=2)
    single = [generate_chat(model, tokenizer, [d], SamplingParams(max_new_tokens=5, temperature=0))[0] for d in dialogues]
    assert answers == single
