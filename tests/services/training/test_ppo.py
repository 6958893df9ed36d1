"""PPO arithmetic against hand-computed values, the batch layout against generation, and a tiny run that learns."""
import threading

import pytest
import torch

from alignline.config.rlhf import RLHFConfig
from alignline.services.generation import SamplingParams, sample_rollouts
from alignline.services.models import build_model, load_model, save_model
from alignline.services.rewards import logit, whiten
from alignline.services.training import LaunchOptions, PPOJob, gae, per_token_kl, ppo_losses, shape_rewards, train_ppo
from alignline.services.training.launch import WorkerContext
from alignline.services.training.ppo import answer_outputs, global_whiten, heldout_reward, rollout_batch, token_logprobs


class TargetTokenScorer:
    """A reward model with a clear, learnable signal: the share of answer tokens whose id is a multiple of 4."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def score(self, prompts, responses, is_safety):
        shares = []
        for text in responses:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            shares.append(sum(i % 4 == 0 for i in ids) / max(1, len(ids)))
        combined = 0.02 + 0.96 * torch.tensor(shares)
        return {"helpful": combined, "safety": combined, "combined": combined, "reward": whiten(logit(combined))}


def test_per_token_kl_and_reward_shaping_match_hand_computed_values():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.2, -3.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-0.7, -2.0, -9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])   # row 2 answered 2 tokens
    kl = per_token_kl(logp, ref, mask)
    assert kl.tolist() == [[0.5, -1.0, 0.0], [0.5, -1.0, 0.0]]  # padded position contributes nothing
    rewards = shape_rewards(torch.tensor([2.0, -1.0]), kl, mask, beta=0.1)
    # -beta * kl on every answer token; the sequence score added on the last real token only
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, 0.1, 2.0], [-0.05, 0.1 - 1.0, 0.0]]))


def reference_gae(rewards, values, length, gamma, lam):
    """Textbook GAE on one un-padded episode."""
    adv, last = [0.0] * length, 0.0
    for t in reversed(range(length)):
        next_v = values[t + 1] if t + 1 < length else 0.0
        delta = rewards[t] + gamma * next_v - values[t]
        last = delta + gamma * lam * last
        adv[t] = last
    return adv, [a + v for a, v in zip(adv, values[:length])]


def test_gae_matches_a_reference_computation_on_padded_rows():
    torch.manual_seed(0)
    rewards, values = torch.randn(3, 5), torch.randn(3, 5)
    lengths = [5, 3, 1]
    mask = torch.tensor([[1.0] * n + [0.0] * (5 - n) for n in lengths])
    adv, ret = gae(rewards * mask, values, mask, gamma=0.9, lam=0.8)
    for b, n in enumerate(lengths):
        want_adv, want_ret = reference_gae(rewards[b].tolist(), values[b].tolist(), n, 0.9, 0.8)
        torch.testing.assert_close(adv[b, :n], torch.tensor(want_adv))
        torch.testing.assert_close(ret[b, :n], torch.tensor(want_ret))
        assert adv[b, n:].abs().sum() == 0 and ret[b, n:].abs().sum() == 0
    white = global_whiten(adv, mask, WorkerContext())
    assert abs(float(white[mask.bool()].mean())) < 1e-6 and white[~mask.bool()].abs().sum() == 0


def test_clipped_objective_and_clip_fraction():
    mask = torch.ones(1, 2)
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[1.5, 1.1]]))   # ratios 1.5 (clipped at 1.2) and 1.1
    adv = torch.tensor([[1.0, 1.0]])
    out = ppo_losses(new, old, adv, torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2), mask, clip=0.2)
    assert float(out["policy_loss"]) == pytest.approx(-(1.2 + 1.1) / 2)
    assert float(out["clip_fraction"]) == pytest.approx(0.5)
    assert float(out["value_loss"]) == pytest.approx(0.5)


@pytest.fixture(scope="module")
def policy_dir(micro_config, tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("policy")
    save_model(build_model(micro_config, tokenizer=tokenizer, seed=0), tokenizer, path)
    return str(path)


class ThreadRank(WorkerContext):
    """A rank of an in-memory process group: all_reduce_sum sums what every rank passes at the same call."""

    def __init__(self, rank: int, world_size: int, barrier: threading.Barrier, slots: list):
        super().__init__(rank=rank, world_size=world_size)
        self.barrier, self.slots = barrier, slots

    def all_reduce_sum(self, value: float) -> float:
        self.slots[self.rank] = value
        self.barrier.wait()
        total = sum(self.slots)
        self.barrier.wait()
        return total


def test_global_whiten_over_two_ranks_equals_whitening_the_whole_batch():
    torch.manual_seed(0)
    x = torch.randn(6, 5) * 3 + 1
    mask = (torch.arange(5)[None, :] < torch.tensor([5, 3, 1, 4, 2, 5])[:, None]).float()
    real = x[mask.bool()]
    whole = (x - real.mean()) / real.std(unbiased=False) * mask  # by hand, over the real entries of the whole batch
    assert torch.allclose(global_whiten(x, mask, WorkerContext()), whole, atol=1e-5)  # one rank
    barrier, slots, out = threading.Barrier(2), [0.0, 0.0], {}
    shares = {0: slice(0, 2), 1: slice(2, 6)}  # unequal shares and padding: local statistics would differ

    def rank(r):
        out[r] = global_whiten(x[shares[r]], mask[shares[r]], ThreadRank(r, 2, barrier, slots))

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert torch.allclose(torch.cat([out[0], out[1]]), whole, atol=1e-5)
    alone = global_whiten(x[shares[0]], mask[shares[0]], WorkerContext())  # rank 0's share on its own
    assert not torch.allclose(alone, whole[shares[0]], atol=1e-3)


def test_batch_layout_reproduces_the_sampling_log_probs(micro_config, tokenizer):
    model = build_model(micro_config, tokenizer=tokenizer, seed=4)
    prompts = [[{"role": "user", "content": "What does json.dumps do?"}], [{"role": "user", "content": "Hi"}]]
    rollouts = [r for rows in sample_rollouts(model, tokenizer, prompts, SamplingParams(10, 1.0, seed=0), k=2)
                for r in rows]
    batch = rollout_batch(rollouts, tokenizer.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        logp = token_logprobs(answer_outputs(model, batch)[0], batch.tokens)  # (B, R)
    for b, r in enumerate(rollouts):
        n = len(r.tokens)
        assert batch.mask[b].sum() == n
        torch.testing.assert_close(logp[b, :n], torch.tensor(r.logprobs), atol=1e-4, rtol=0)


def test_tiny_ppo_run_raises_the_reward(policy_dir, tokenizer, tmp_path):
    prompts = [[{"role": "user", "content": f"Question {i}: what does function f{i} return?"}] for i in range(24)]
    cfg = RLHFConfig(ppo_batch_size=16, ppo_minibatch_size=4, ppo_epochs=2, ppo_iterations=10, ppo_learning_rate=3e-3,
                     ppo_weight_decay=0.0, max_new_tokens=12, ppo_eval_every=5, ppo_patience=5, use_ray=False)
    job = PPOJob(cfg, policy_dir, policy_dir, prompts[:16], [False] * 16, prompts[16:], [False] * 8,
                 lambda: TargetTokenScorer(tokenizer), str(tmp_path / "ppo"))
    result = train_ppo(job, LaunchOptions())
    rewards = result["reward"]
    assert result["iterations"] == 10 and len(rewards) == 10
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.05
    assert result["heldout_best"] > result["heldout_initial"]
    assert result["kl"][-1] > 0  # the policy moved away from pi_0 and pays for it
    for key in ("clip_fraction", "value_loss", "entropy", "response_length"):
        assert len(result[key]) == 10
    # The policy on disk is the one that scored heldout_best (here the iteration-10 one, 0.29 vs 0.15 at the start),
    # not the starting policy saved before training: scored again with the recipe's held-out sampling (ppo_loop's
    # eval_params) it gives heldout_best.
    eval_params = SamplingParams(cfg.max_new_tokens, cfg.ppo_temperature, cfg.top_p, seed=cfg.seed + 7919)
    saved = heldout_reward(load_model(result["output_dir"]), tokenizer, TargetTokenScorer(tokenizer), job,
                           WorkerContext(), eval_params)
    assert saved == pytest.approx(result["heldout_best"], abs=1e-6)
    assert result["heldout_best"] == max(result["heldout"])


def test_killed_ppo_run_resumes_where_it_stopped(policy_dir, tokenizer, tmp_path):
    """A PPO run killed after iteration 3 restarts from its iteration-2 checkpoint (weights, value head, optimizer,
    early-stopping state) and ends exactly where an uninterrupted run ends."""
    prompts = [[{"role": "user", "content": f"Question {i}: what does function f{i} return?"}] for i in range(16)]
    cfg = RLHFConfig(ppo_batch_size=8, ppo_minibatch_size=4, ppo_epochs=1, ppo_iterations=4, ppo_learning_rate=3e-3,
                     ppo_weight_decay=0.0, max_new_tokens=8, ppo_eval_every=2, ppo_patience=5, ppo_checkpoint_every=2,
                     use_ray=False)

    def job(folder, on_iteration=None):
        return PPOJob(cfg, policy_dir, policy_dir, prompts[:12], [False] * 12, prompts[12:], [False] * 4,
                      lambda: TargetTokenScorer(tokenizer), str(folder / "model"), checkpoint_dir=str(folder / "ckpt"),
                      on_iteration=on_iteration)

    def killed_after_3(iteration):
        if iteration == 3:
            raise RuntimeError("worker killed")

    whole = train_ppo(job(tmp_path / "whole"), LaunchOptions())
    with pytest.raises(RuntimeError, match="worker killed"):
        train_ppo(job(tmp_path / "resumed", killed_after_3), LaunchOptions())
    resumed = train_ppo(job(tmp_path / "resumed"), LaunchOptions())
    assert whole["resumed_from_iteration"] == 0 and resumed["resumed_from_iteration"] == 2
    for key in ("reward", "kl", "value_loss", "response_length"):
        assert resumed[key] == whole[key] and len(whole[key]) == 4, key
    assert resumed["heldout"] == whole["heldout"] and resumed["heldout_best"] == whole["heldout_best"]
    a, b = (load_model(tmp_path / name / "model").state_dict() for name in ("whole", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    again = train_ppo(job(tmp_path / "resumed"), LaunchOptions())  # a finished run reports, trains nothing
    assert again["resumed_from_iteration"] == 4 and again["reward"] == whole["reward"]
