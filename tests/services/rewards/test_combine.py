"""The combined reward of Llama 2 §3.2.2 against hand-computed values."""
import math

import pytest
import torch

from alignline.services.rewards import CombinedScorer, Scorer, combine_rewards, combined_reward, logit, whiten


def test_combine_rewards_picks_safety_for_safety_prompts_or_low_safety_scores():
    r_h = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.3])
    r_s = torch.tensor([0.5, 0.1, 0.9, 0.14, 0.15])
    is_safety = torch.tensor([False, False, True, False, False])
    # row 0: helpful (safe, not a safety prompt); 1, 3: safety < 0.15; 2: safety prompt; 4: 0.15 is not < 0.15
    expected = torch.tensor([0.9, 0.1, 0.9, 0.14, 0.3])
    torch.testing.assert_close(combine_rewards(r_h, r_s, is_safety, threshold=0.15), expected)


def test_logit_and_whiten_hand_computed():
    torch.testing.assert_close(logit(torch.tensor([0.5, 0.9])), torch.tensor([0.0, math.log(9)]))
    assert torch.isfinite(logit(torch.tensor([0.0, 1.0]))).all()
    # mean 2, population std sqrt(2/3)
    x = torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(whiten(x), torch.tensor([-1.0, 0.0, 1.0]) / math.sqrt(2 / 3))
    torch.testing.assert_close(whiten(x, shift_mean=False), torch.tensor([-1.0, 0.0, 1.0]) / math.sqrt(2 / 3) + 2.0)
    assert whiten(torch.tensor([4.0])).item() == 0.0


def test_combined_reward_is_whitened_logit_of_the_gated_score():
    r_h = torch.tensor([0.9, 0.8, 0.7, 0.6])
    r_s = torch.tensor([0.5, 0.1, 0.9, 0.14])
    is_safety = torch.tensor([False, False, True, False])
    # logit([0.9, 0.1, 0.9, 0.14]) = [2.19722, -2.19722, 2.19722, -1.81529]; mean 0.09548, var 4.43555
    expected = torch.tensor([0.99794, -1.08862, 0.99794, -0.90727])
    torch.testing.assert_close(combined_reward(r_h, r_s, is_safety, 0.15), expected, atol=1e-4, rtol=0)


class _Fixed:
    """A rule-based stand-in for one RM: destructive commands score 0.05, anything else 0.9."""

    def score(self, prompts, responses):
        return torch.tensor([0.05 if "rm -rf" in r else 0.9 for r in responses])


def test_combined_scorer_satisfies_the_scorer_protocol():
    scorer: Scorer = CombinedScorer(_Fixed(), _Fixed(), threshold=0.15)
    prompts = [[{"role": "user", "content": "clean up"}]] * 2
    out = scorer.score(prompts, ["rm -rf /", "use a trash folder"], [False, False])
    assert set(out) == {"helpful", "safety", "combined", "reward"}
    assert out["combined"][0].item() == pytest.approx(0.05)  # unsafe: the safety score wins
    assert out["reward"][0] < out["reward"][1]
