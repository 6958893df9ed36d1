"""Rollouts: K samples per prompt in input order, in-process and on two Ray actors (the one Ray test here)."""

import pytest
import torch

from alignline.services.generation import RolloutPool, SamplingParams, generate_chat, sample_rollouts
from alignline.services.models import build_model, save_model

DIALOGUES = [[{"role": "user", "content": q}] for q in ("What does json.dumps do?", "Hi", "Explain re.sub.",
                                                          "How do I use os.path.join?", "x")]


@pytest.fixture(scope="module")
def policy_dir(micro_config, tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("rollout-policy")
    save_model(build_model(micro_config, tokenizer=tokenizer, seed=5), tokenizer, path)
    return path


def test_k_samples_per_prompt_in_input_order(micro_config, tokenizer):
    model = build_model(micro_config, tokenizer=tokenizer, seed=5)
    out = sample_rollouts(model, tokenizer, DIALOGUES, SamplingParams(8, 1.2, seed=0), k=3, batch_size=4)
    assert [len(rows) for rows in out] == [3] * len(DIALOGUES)
    for dialogue, rows in zip(DIALOGUES, out):
        assert all(len(r.tokens) == len(r.logprobs) <= 8 for r in rows)
        assert len({r.text for r in rows}) > 1  # K distinct samples at temperature 1.2
    greedy = sample_rollouts(model, tokenizer, DIALOGUES, SamplingParams(8, 0), k=1, batch_size=4)
    assert [rows[0].text for rows in greedy] == generate_chat(model, tokenizer, DIALOGUES, SamplingParams(8, 0))
    again = sample_rollouts(model, tokenizer, DIALOGUES, SamplingParams(8, 1.2, seed=0), k=3, batch_size=4)
    assert [[r.tokens for r in rows] for rows in again] == [[r.tokens for r in rows] for rows in out]


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore")
def test_two_ray_actors_sample_in_order_and_take_new_weights(policy_dir, micro_config, tokenizer, ray_cluster):
    local = RolloutPool(policy_dir, num_actors=0, batch_size=4)
    greedy = SamplingParams(8, 0)
    want = local.sample_texts(DIALOGUES, greedy)
    pool = RolloutPool(policy_dir, num_actors=2, batch_size=4, cpus_per_actor=0.5)
    try:
        assert pool.sample_texts(DIALOGUES, greedy) == want           # shards put back in input order
        sampled = pool.sample(DIALOGUES, SamplingParams(8, 1.0, seed=1), k=2)
        assert [len(rows) for rows in sampled] == [2] * len(DIALOGUES)
        new = build_model(micro_config, tokenizer=tokenizer, seed=6)  # a new policy version
        pool.set_weights(new.state_dict(), "v2")
        local.set_weights(new.state_dict(), "v2")
        after = pool.sample_texts(DIALOGUES, greedy)
        assert after == local.sample_texts(DIALOGUES, greedy) and after != want
    finally:
        pool.close()
