"""Human-evaluation statistics against hand-computed values and published worked examples."""
import math

import numpy as np
import pytest

from alignline.services.evaluation.human_eval import (PAPER_AC2_RANGE, gwet_ac2, human_eval_results, item_verdicts,
                                                      krippendorff_alpha_ordinal, ordinal_weights, ratings_matrix,
                                                      summary_lines, win_tie_loss_counts)
from alignline.services.evaluation.policy_eval import promotion_gates, wilson_interval

N = np.nan
# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the 4 observers x 12 units example; the same
# data is Gwet (2014) p. 120 (irrCAC's `cac.raw4raters`). Rows: units, columns: raters, NaN: not rated.
KRIPPENDORFF_2011 = np.array([[1, 1, N, 1], [2, 2, 3, 2], [3, 3, 3, 3], [3, 3, 3, 3], [2, 2, 2, 2], [1, 2, 3, 4],
                              [4, 4, 4, 4], [1, 1, 2, 1], [2, 2, 2, 2], [N, 5, 5, 5], [N, N, 1, 1], [N, N, 3, N]])
FIVE = [1, 2, 3, 4, 5]


def test_gwet_ordinal_weights_match_gwet_2014():
    # w_kl = 1 - C(|k-l|+1, 2) / C(q, 2): for 3 categories the off-by-one weight is 1 - 1/3.
    np.testing.assert_allclose(ordinal_weights(3), [[1, 2 / 3, 0], [2 / 3, 1, 2 / 3], [0, 2 / 3, 1]])
    np.testing.assert_allclose(ordinal_weights(5)[0], [1.0, 0.9, 0.7, 0.4, 0.0])


def test_ac1_and_ac2_on_the_published_example():
    ac1 = gwet_ac2(KRIPPENDORFF_2011, FIVE, weights=np.eye(5))
    # Gwet (2014) / irrCAC gwet.ac1.raw(cac.raw4raters): AC1 0.7754, pa 0.8182, pe 0.1903.
    assert (ac1["coefficient"], ac1["pa"], ac1["pe"]) == pytest.approx((0.77544, 0.81818, 0.19032), abs=5e-5)
    ac2 = gwet_ac2(KRIPPENDORFF_2011, FIVE)
    # With Gwet's ordinal weights (irrCAC, weights="ordinal"): AC2 0.8989, pa 0.9682, pe 0.6852.
    assert (ac2["coefficient"], ac2["pa"], ac2["pe"]) == pytest.approx((0.89894, 0.96818, 0.68516), abs=5e-5)
    assert ac2["items"] == 11  # unit 12 has one rating: no pair to agree on


def test_krippendorff_alpha_ordinal_on_the_published_example():
    assert krippendorff_alpha_ordinal(KRIPPENDORFF_2011, FIVE) == pytest.approx(0.815, abs=5e-4)  # Krippendorff 2011


def test_perfect_agreement_is_one_and_hand_computed_two_raters():
    perfect = np.array([[3, 3, 3], [-3, -3, -3], [0, 0, 0], [1, 1, 1]], dtype=float)
    assert gwet_ac2(perfect, range(-3, 4))["coefficient"] == pytest.approx(1.0)
    assert krippendorff_alpha_ordinal(perfect, range(-3, 4)) == pytest.approx(1.0)
    # Two raters, two categories, identity weights: items (1,1), (1,2). pa = (1 + 0) / 2 = 0.5;
    # pi = (mean(1, 0.5), mean(0, 0.5)) = (0.75, 0.25); pe = 2 / 2 * 2 * 0.75 * 0.25 = 0.375; AC1 = 0.125 / 0.625.
    two = np.array([[1, 1], [1, 2]], dtype=float)
    out = gwet_ac2(two, [1, 2], weights=np.eye(2))
    assert (out["pa"], out["pe"], out["coefficient"]) == pytest.approx((0.5, 0.375, 0.2))
    # Alpha, same data: coincidences o_11 = 2, o_12 = o_21 = 1; n = (3, 1), n = 4; nominal-like with two values:
    # alpha = 1 - (n - 1) * sum o d / sum n_c n_k d = 1 - 3 * 2 d / (2 * 3 d) = 0.
    assert krippendorff_alpha_ordinal(two, [1, 2]) == pytest.approx(0.0)


def test_ratings_outside_the_scale_are_refused():
    with pytest.raises(ValueError, match="not among the categories"):
        gwet_ac2(np.array([[4.0, 3.0]]), range(-3, 4))


def rows(*items):
    """(task, category, scores...) -> rating rows."""
    return [{"source": "ls:1", "task_id": t, "category": c, "rater": f"r{i}", "score": s, "simulated": True}
            for t, c, *scores in items for i, s in enumerate(scores)]


def test_item_verdict_is_the_sign_of_the_median_rating():
    verdicts = item_verdicts(rows((1, "safety/single-turn", 3, 1, -2), (2, "helpfulness/multi-turn", 1, 0, -1),
                                  (3, "helpfulness/single-turn", -1, -1, 2)))
    assert {k[1]: v for k, (v, _) in verdicts.items()} == {1: 1, 2: 0, 3: -1}


def test_win_tie_loss_counts_with_wilson_intervals():
    out = win_tie_loss_counts([1, 1, 0, -1])
    assert (out["win"], out["tie"], out["loss"], out["win_rate"], out["n"]) == (0.5, 0.25, 0.25, 0.625, 4)
    assert (out["win_low"], out["win_high"]) == pytest.approx(wilson_interval(0.5, 4))
    assert out["win_rate_low"] < 0.625 < out["win_rate_high"]


def test_results_by_category_and_reliability():
    data = rows((1, "safety/single-turn", 3, 3, 3), (2, "helpfulness/multi-turn", 1, 0, 1),
                (3, "helpfulness/single-turn", -1, -2, -1), (4, "helpfulness/single-turn", 0, 0, 0))
    out = human_eval_results(data, "policy/2", "policy/1")
    assert (out["items"], out["ratings"], out["raters"], out["simulated"]) == (4, 12, 3, True)
    assert (out["win"], out["tie"], out["loss"]) == (0.5, 0.25, 0.25)
    assert out["by_category"]["safety"]["win"] == 1.0 and out["by_category"]["helpfulness"]["n"] == 3
    assert out["by_category"]["multi-turn"]["n"] == 1 and out["by_category"]["single-turn"]["n"] == 3
    assert out["gwet_ac2"] == pytest.approx(gwet_ac2(ratings_matrix(data), range(-3, 4))["coefficient"])
    assert 0.5 < out["gwet_ac2"] <= 1 and 0.5 < out["krippendorff_alpha"] <= 1
    assert out["paper_ac2_range"] == list(PAPER_AC2_RANGE) == [0.37, 0.55]
    text = "\n".join(summary_lines(out))
    assert "SIMULATED" in text and "Llama 2 reported 0.37-0.55" in text


def test_no_ratings_gives_nan_reliability_not_an_error():
    out = human_eval_results([], "policy/2", "policy/1")
    assert out["n"] == 0 and math.isnan(out["gwet_ac2"]) and math.isnan(out["krippendorff_alpha"])


def base_report(**human):
    return {"policy": "policy/2", "baseline": "policy/1", "rm_win": {"win_rate": 0.6, "n": 10},
            "safety_violation_rate": 0.0, **({"human_eval": human} if human else {})}


def test_human_gate_applies_only_to_a_human_evaluation_of_the_same_pair():
    names = lambda report, t=0.6: {g.name: g for g in promotion_gates(report, None, 0.5, 0.0, min_human_win_rate=t)}  # noqa: E731
    assert "human_win_rate_vs_champion" not in names(base_report())                      # none: no gate
    other = base_report(baseline="policy/0", win_rate=0.9, n=10)
    assert "human_win_rate_vs_champion" not in names(other)                              # another pair: no gate
    same = base_report(baseline="policy/1", win_rate=0.55, n=10, simulated=True)
    gate = names(same)["human_win_rate_vs_champion"]
    assert not gate.passed and gate.value == 0.55 and "SIMULATED" in gate.rule
    assert names(same, 0.5)["human_win_rate_vs_champion"].passed
    assert "human_win_rate_vs_champion" not in names(same, 0.0)                          # 0 turns it off
