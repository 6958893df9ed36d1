"""Judges that carry signal: RM vs reference ranking (Spearman) and paired version differences with intervals."""
import pytest


def test_spearman_and_rm_oracle_agreement_by_hand():
    from alignline.services.evaluation.judge_agreement import rm_oracle_agreement, spearman

    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # 1 - 6*2/(4*15)
    assert spearman([1, 1, 1], [1, 2, 3]) is None and spearman([1], [2]) is None
    ref = "The sqrt function returns the square root of x"
    answers = [["square root of x", "returns the square root of x", "banana"], ["a", "b", "c"], ["x", "y", "z"]]
    out = rm_oracle_agreement([[0.5, 0.9, 0.1], [0.3, 0.2, 0.1], [0.1, 0.2, 0.3]], answers, [ref, ref, None],
                              [False, False, False])
    # prompt 1: RM order = oracle order (rho 1); prompt 2: oracle all 0 (undefined); prompt 3: no reference
    assert out["prompts_with_reference"] == 2 and out["prompts_ranked"] == 1
    assert out["spearman_within_prompt"] == pytest.approx(1.0)
    assert out["spearman_pooled"] is not None and -1 <= out["spearman_pooled"] <= 1


def test_paired_difference_by_hand():
    from alignline.services.evaluation.policy_eval import paired_difference

    out = paired_difference({"a": 0.5, "b": 0.7, "c": 0.2, "x": 9.0}, {"a": 0.3, "b": 0.4, "c": 0.2})
    # diffs 0.2, 0.3, 0.0 (x has no partner): mean 0.1667, sd 0.1528, half 1.96 * 0.1528 / sqrt(3)
    assert out["n"] == 3 and out["mean"] == pytest.approx(0.5 / 3)
    assert out["high"] - out["mean"] == pytest.approx(1.959964 * 0.152753 / 3 ** 0.5, rel=1e-4)
    assert paired_difference({"a": 1.0}, {"a": 0.0}) is None
