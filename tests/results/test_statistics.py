"""IQM, hierarchical bootstrap CIs and ratio CIs against hand-computed answers, scipy and closed forms."""

import numpy as np
import pytest
from scipy.stats import trim_mean

from flow_mbpo_pwm.statistics import hierarchical_bootstrap, iqm, percentile_interval, ratio_estimate


def test_iqm_hand_examples():
    # n=8: cut int(0.25*8)=2 from each end -> mean(3, 4, 5, 6)
    assert iqm([100, 1, 7, 2, 6, 3, 5, 4]) == pytest.approx(4.5)
    # n=5: cut int(1.25)=1 from each end -> mean(2, 3, 4)
    assert iqm([1, 2, 3, 4, 100]) == pytest.approx(3.0)
    # n < 4: nothing is cut
    assert iqm([1.0, 2.0, 6.0]) == pytest.approx(3.0)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 10, 33, 100, 101])
def test_iqm_equals_scipy_trim_mean(n):
    x = np.random.default_rng(n).standard_cauchy(n)
    assert iqm(x) == pytest.approx(trim_mean(x, 0.25))


def test_bootstrap_iqm_matches_scipy_trim_mean_per_resample():
    # One value per group: a resample is the multiset of the drawn groups' values, drawn first from the same
    # generator, so the vectorised IQM can be checked against trim_mean resample by resample.
    groups = [[3.0], [1.0], [8.0], [2.0], [5.0]]
    rng = np.random.default_rng(0)
    draws = hierarchical_bootstrap(groups, "iqm", 200, rng)
    rng = np.random.default_rng(0)
    index = rng.integers(0, 5, size=(200, 5))
    values = np.array([g[0] for g in groups])[index]
    expected = np.array([trim_mean(v, 0.25) for v in values])
    np.testing.assert_allclose(draws, expected)


def test_bootstrap_variance_of_the_mean_matches_the_closed_form():
    # Equal group sizes n: each drawn group's resampled mean has variance Var_s(m_s) + mean_s(v_s)/n (v_s the
    # group's ddof=0 variance); the statistic averages S independent such draws.
    rng = np.random.default_rng(1)
    groups = [rng.normal(rng.normal(0, 2), 1.0, size=40) for _ in range(6)]
    means = np.array([g.mean() for g in groups])
    variances = np.array([g.var() for g in groups])
    closed_form = (np.mean((means - means.mean()) ** 2) + variances.mean() / 40) / 6
    draws = hierarchical_bootstrap(groups, "mean", 20_000, rng)
    assert draws.var() == pytest.approx(closed_form, rel=0.05)
    assert draws.mean() == pytest.approx(means.mean(), abs=0.05)


def test_groups_of_different_sizes_pool_their_values():
    # A drawn group contributes all of its (resampled) values: with constant groups the statistic is the pooled
    # mean of the drawn groups, so (1 value of 0, 3 values of 4) drawn once each gives 3.
    draws = hierarchical_bootstrap([[0.0], [4.0, 4.0, 4.0]], "mean", 2000, np.random.default_rng(2))
    assert set(np.round(draws, 9)) == {0.0, 3.0, 4.0}


def test_ci_covers_the_true_mean_at_about_the_nominal_rate():
    rng = np.random.default_rng(3)
    true_mean, trials, hits = 3.0, 300, 0
    for _ in range(trials):
        groups = [rng.normal(true_mean + rng.normal(0, 0.5), 1.0, size=10) for _ in range(20)]
        low, high = percentile_interval(hierarchical_bootstrap(groups, "mean", 400, rng))
        hits += low <= true_mean <= high
    assert 0.88 <= hits / trials <= 0.99


def test_ci_shrinks_with_more_data():
    rng = np.random.default_rng(4)

    def width(seeds, episodes):
        groups = [rng.normal(rng.normal(0, 1), 1.0, size=episodes) for _ in range(seeds)]
        low, high = percentile_interval(hierarchical_bootstrap(groups, "mean", 1000, rng))
        return high - low

    assert width(40, 20) < 0.6 * width(5, 20)
    assert width(5, 400) < width(5, 4)


def test_bootstrap_is_reproducible_with_the_same_seed():
    groups = [[1.0, 2.0, 3.0], [4.0, 5.0]]
    a = hierarchical_bootstrap(groups, "iqm", 100, np.random.default_rng(7))
    b = hierarchical_bootstrap(groups, "iqm", 100, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)


def test_bootstrap_rejects_empty_groups():
    with pytest.raises(ValueError, match="at least one value"):
        hierarchical_bootstrap([[1.0], []], "mean", 10, np.random.default_rng(0))


def test_ratio_ci_brackets_the_true_ratio():
    rng = np.random.default_rng(5)
    hits, trials = 0, 100
    for _ in range(trials):
        flow = [rng.normal(150 + rng.normal(0, 5), 20, size=20) for _ in range(10)]
        det = [rng.normal(100 + rng.normal(0, 5), 20, size=20) for _ in range(10)]
        flow_draws = hierarchical_bootstrap(flow, "mean", 400, rng)
        det_draws = hierarchical_bootstrap(det, "mean", 400, rng)
        ratio, low, high, note = ratio_estimate(
            np.concatenate(flow).mean(), np.concatenate(det).mean(), flow_draws, det_draws
        )
        assert note == "" and low < ratio < high
        hits += low <= 1.5 <= high
    assert 0.85 <= hits / trials <= 1.0


def test_ratio_is_nan_with_a_reason_for_a_non_positive_reference():
    draws = np.ones(10)
    ratio, low, high, note = ratio_estimate(5.0, -2.0, draws, -draws)
    assert np.isnan([ratio, low, high]).all() and "not positive" in note
    ratio, low, high, note = ratio_estimate(5.0, 1.0, draws, np.array([1.0, -1.0]))
    assert ratio == 5.0 and np.isnan([low, high]).all() and "50.0%" in note
