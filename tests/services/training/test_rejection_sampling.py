"""Rejection sampling keeps the argmax of K per prompt and pools the best-ever answer across iterations."""
import pytest
import torch

from alignline.services.data import table_dialogues
from alignline.services.training import PromptSet, best_of_k, rejection_sampling_round, training_dialogues


class LookupScorer:
    """Scores an answer by a fixed table (the answers name their own quality)."""

    def __init__(self, table):
        self.table = table

    def score(self, prompts, responses, is_safety):
        combined = torch.tensor([self.table[r] for r in responses])
        return {"helpful": combined, "safety": combined, "combined": combined, "reward": combined}


def fixed_sampler(answers_by_prompt):
    def sample(dialogues, k):
        return [list(answers_by_prompt[d[-1]["content"]][:k]) for d in dialogues]
    return sample


PROMPTS = PromptSet(["p1", "p2"], [[{"role": "user", "content": "q1"}], [{"role": "user", "content": "q2"}]],
                    [False, True])


def test_best_of_k_picks_the_argmax_and_reports_the_median():
    index, best, median = best_of_k(torch.tensor([[0.1, 0.9, 0.3, 0.2], [0.5, 0.4, 0.6, 0.7]]))
    assert index.tolist() == [1, 3]
    assert best.tolist() == pytest.approx([0.9, 0.7])
    assert median.tolist() == pytest.approx([0.25, 0.55])  # mean of the middle two of K=4


def test_round_keeps_argmax_and_pools_the_best_ever_answer_across_iterations():
    scores = {"a-low": 0.1, "a-best": 0.8, "a-mid": 0.4, "b-low": 0.2, "b-best": 0.5, "b-mid": 0.3,
              "a-it2": 0.6, "a-it2-low": 0.05, "b-it2": 0.9, "b-it2-low": 0.1}
    scorer = LookupScorer(scores)
    first = rejection_sampling_round(fixed_sampler({"q1": ["a-low", "a-best", "a-mid"], "q2": ["b-low", "b-mid", "b-best"]}),
                                     scorer, PROMPTS, k=3, iteration=1)
    rows = {r["id"]: r for r in first.pool.to_pylist()}
    assert rows["p1"]["messages"][-1]["content"] == "a-best" and rows["p2"]["messages"][-1]["content"] == "b-best"
    assert rows["p2"]["is_safety"] and rows["p1"]["iteration"] == 1
    assert first.gain == pytest.approx(((0.8 - 0.4) + (0.5 - 0.3)) / 2)  # best of K minus median (Fig. 7)

    # Iteration 2: p1's new best (0.6) loses to its pooled answer (0.8); p2's new best (0.9) replaces the pool's.
    second = rejection_sampling_round(fixed_sampler({"q1": ["a-it2", "a-it2-low"], "q2": ["b-it2-low", "b-it2"]}),
                                      scorer, PROMPTS, k=2, iteration=2, pool=first.pool)
    rows = {r["id"]: r for r in second.pool.to_pylist()}
    assert rows["p1"]["messages"][-1]["content"] == "a-best" and rows["p1"]["iteration"] == 1
    assert rows["p2"]["messages"][-1]["content"] == "b-it2" and rows["p2"]["iteration"] == 2
    assert (second.kept_from_pool, second.replaced) == (1, 1)

    # Prompts not sampled this round keep their pooled row; the pool reads as SFT dialogues.
    third = rejection_sampling_round(fixed_sampler({"q1": ["a-low"]}), scorer, PROMPTS.take([0]), k=1, iteration=3,
                                     pool=second.pool)
    assert third.pool.num_rows == 2
    dialogues = training_dialogues(third.pool)
    assert [d[-1]["content"] for d in dialogues] == ["a-best", "b-it2"]
    assert table_dialogues(third.pool) == dialogues


def test_best_of_k_curve_matches_every_subset_by_brute_force():
    """Llama 2 Fig. 7 from one round: E[max] and E[median] of k of the K answers, exact against enumeration."""
    import itertools
    import statistics

    from alignline.services.training.rejection_sampling import best_of_k_curve

    scores = torch.tensor([[0.1, 0.9, 0.4, 0.3, 0.7], [0.5, 0.2, 0.8, 0.6, 0.0]])
    curve = best_of_k_curve(scores)
    assert [k for k, _, _ in curve] == [1, 2, 3, 4, 5]
    for k, mean_max, mean_median in curve:
        maxes, medians = [], []
        for row in scores.tolist():
            subsets = list(itertools.combinations(row, k))
            maxes.append(sum(max(s) for s in subsets) / len(subsets))
            medians.append(sum(statistics.median(s) for s in subsets) / len(subsets))
        assert mean_max == pytest.approx(sum(maxes) / 2) and mean_median == pytest.approx(sum(medians) / 2)
    assert curve[0][1] == pytest.approx(curve[0][2]) == pytest.approx(scores.mean().item())  # k=1: one sample
    assert curve[-1][1] == pytest.approx((0.9 + 0.8) / 2)  # k=K: the best of all


def test_prompt_sets_add_without_repeating_an_id():
    from alignline.services.training import PromptSet

    a = PromptSet(["p1", "p2"], [[{"role": "user", "content": "x"}]] * 2, [True, False], ["unqualified_advice", None])
    b = PromptSet(["p2", "p3"], [[{"role": "user", "content": "y"}]] * 2, [True, True])
    both = a + b
    assert both.ids == ["p1", "p2", "p3"] and both.is_safety == [True, False, True]
    assert both.categories == ["unqualified_advice", None, None] and both.safety().ids == ["p1", "p3"]
