"""Paired bootstrap intervals and the exact McNemar test (gccs_core/stats.py)."""

import math

import numpy as np
import pytest

from gccs_core import stats


def _pair(rng, n, seeds, pa, pb, rho=0.6):
    """Correlated correctness of two models on the same examples: shared example difficulty."""
    u = rng.random((1, n))  # example difficulty, shared by both models and all seeds
    noise_a, noise_b = rng.random((seeds, n)), rng.random((seeds, n))
    a = np.where(rng.random((seeds, n)) < rho, u, noise_a) < pa
    b = np.where(rng.random((seeds, n)) < rho, u, noise_b) < pb
    return a.astype(float), b.astype(float)


def test_paired_bootstrap_interval_covers_the_true_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    true = 0.70 - 0.60  # each marginal is exactly pa / pb: a mixture of two uniforms is uniform
    covered, widths = 0, []
    for r in range(120):
        a, b = _pair(rng, 300, 3, 0.70, 0.60)
        iv = stats.paired_bootstrap_diff(a, b, n_boot=400, seed=r)
        covered += iv.low <= true <= iv.high
        widths.append(iv.high - iv.low)
        assert iv.low <= iv.estimate <= iv.high
    assert 0.88 <= covered / 120 <= 1.0
    assert 0.02 < np.mean(widths) < 0.15  # paired: much narrower than the two unpaired binomial intervals summed


def test_bootstrap_mean_of_a_constant_has_zero_width_and_one_seed_works():
    iv = stats.bootstrap_mean(np.ones((1, 50)), n_boot=100)
    assert (iv.estimate, iv.low, iv.high, iv.seeds, iv.n) == (1.0, 1.0, 1.0, 1, 50)


def test_mcnemar_exact_p_value_matches_a_hand_computation():
    # 1 pair where only a is right, 6 where only b is right: n = 7, P(X <= 1) = (1 + 7) / 128, p = 16 / 128
    a = np.array([[1, 0, 0, 0, 0, 0, 0, 1, 1, 0]])
    b = np.array([[0, 1, 1, 1, 1, 1, 1, 1, 1, 0]])
    res = stats.mcnemar_exact(a, b)
    assert (res["a_only"], res["b_only"]) == (1, 6)
    assert res["p_value"] == pytest.approx(16 / 128)
    assert stats.mcnemar_p(0, 0) == 1.0
    assert stats.mcnemar_p(5, 5) == 1.0
    assert stats.mcnemar_p(0, 10) == pytest.approx(2 / 1024)
    assert math.isclose(stats.mcnemar_p(3, 0), 0.25)


@pytest.mark.parametrize("a,b,match", [
    (np.ones((2, 5)), np.ones((2, 4)), "same"),
    (np.full((1, 3), 0.5), np.ones((1, 3)), "only 0 and 1"),
    (np.ones((0, 3)), np.ones((0, 3)), "non-empty"),
])
def test_bad_inputs_are_one_line_errors(a, b, match):
    with pytest.raises(ValueError, match=match):
        stats.paired_bootstrap_diff(a, b, n_boot=20)
    with pytest.raises(ValueError, match="level"):
        stats.bootstrap_mean(np.ones((1, 3)), level=1.5)
    with pytest.raises(ValueError, match="count"):
        stats.mcnemar_p(-1, 2)
