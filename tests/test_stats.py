"""The statistics module against independent computations and simulations."""
import math
from fractions import Fraction
from itertools import product

import numpy as np
import pytest
from scipy import integrate, stats as sps

from wmkit import stats


def exact_binomial_tail(k, n, p=Fraction(1, 2)):
    return sum(Fraction(math.comb(n, i)) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


@pytest.mark.parametrize("n", [1, 8, 32, 48, 256])
def test_binomial_tail_matches_exact_rational_arithmetic(n):
    ks = sorted({0, 1, n // 2, (3 * n) // 4, n - 1, n, n + 1})
    got = stats.log_binomial_sf(ks, n)
    for k, log_p in zip(ks, got):
        exact = exact_binomial_tail(k, n)
        if exact == 0:
            assert log_p == -np.inf
        else:
            # compare in log space: relative error of the probability below 1e-12
            assert log_p == pytest.approx(math.log(exact.numerator) - math.log(exact.denominator), abs=1e-12)


def test_binomial_tail_is_exact_at_two_to_the_minus_256():
    assert stats.binomial_p_value(256, 256) == pytest.approx(2.0**-256, rel=1e-12)
    assert stats.binomial_p_value(255, 256) == pytest.approx(257 * 2.0**-256, rel=1e-12)
    # tiny but nonzero p is not rounded to 1: P(X >= 1) = 1 - 2^-256 rounds to 1 in float64 legitimately,
    # whereas P(X >= n) for a biased p stays tiny
    assert 0 < stats.binomial_p_value(200, 256, 0.3) < 1e-40


def test_binomial_tail_with_bias_matches_scipy():
    k = np.arange(0, 41)
    np.testing.assert_allclose(stats.binomial_p_value(k, 40, 0.3), sps.binom.sf(k - 1, 40, 0.3), rtol=1e-9)


def test_poisson_binomial_matches_brute_force_enumeration():
    rng = np.random.default_rng(0)
    probs = rng.uniform(0.05, 0.95, size=10)
    pmf = np.zeros(11)
    for outcome in product([0, 1], repeat=10):
        o = np.array(outcome)
        pmf[o.sum()] += np.prod(np.where(o == 1, probs, 1 - probs))
    np.testing.assert_allclose(np.exp(stats.log_poisson_binomial_pmf(probs)), pmf, rtol=1e-10, atol=1e-15)
    tail = np.exp(stats.log_tail_from_log_pmf(stats.log_poisson_binomial_pmf(probs), np.arange(12)))
    np.testing.assert_allclose(tail[:11], pmf[::-1].cumsum()[::-1], rtol=1e-10)
    assert tail[11] == 0.0


def test_poisson_binomial_reduces_to_binomial():
    log_pmf = stats.log_poisson_binomial_pmf(np.full(48, 0.5))
    k = np.arange(49)
    np.testing.assert_allclose(stats.log_tail_from_log_pmf(log_pmf, k), stats.log_binomial_sf(k, 48), atol=1e-9)


@pytest.mark.parametrize("dim", [2, 3, 16, 256])
def test_hypercone_matches_numerical_integration(dim):
    # density of the cosine between an isotropic vector and a fixed axis: c_d (1 - t^2)^((d - 3) / 2)
    density = lambda t: (1 - t * t) ** ((dim - 3) / 2)
    norm = integrate.quad(density, -1, 1)[0]
    for c in [-0.5, 0.0, 0.2, 0.6]:
        expected = integrate.quad(density, c, 1)[0] / norm
        assert stats.hypercone_p_value(c, dim) == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_hypercone_tiny_p_values_do_not_underflow():
    p = stats.log_hypercone_p_value(0.9, 2048)
    assert np.isfinite(p) and p < math.log(1e-300)


def test_noncentral_chi2_matches_simulation():
    rng = np.random.default_rng(1)
    dof, nc = 20, 7.5
    samples = rng.noncentral_chisquare(dof, nc, size=20000)
    for x in [10.0, 20.0, 35.0]:
        assert stats.noncentral_chi2_p_value(x, dof, nc) == pytest.approx(np.mean(samples <= x), abs=0.015)


def test_multi_key_correction():
    assert stats.multi_key_correction(1e-12, 1000) == pytest.approx(1e-9, rel=1e-6)  # no cancellation at tiny p
    assert stats.multi_key_correction(0.5, 2) == pytest.approx(0.75)
    assert stats.multi_key_correction(0.2, 10, method="bonferroni") == 1.0
    with pytest.raises(ValueError):
        stats.multi_key_correction(0.1, 0)


# -- uniformity under the null, by simulation ---------------------------------------------
def _assert_super_uniform(p_values, alphas=(0.001, 0.01, 0.05, 0.1, 0.3, 0.5)):
    """Discrete tests: P(p <= a) <= a for every a, within sampling error (99.9% binomial bound)."""
    n = len(p_values)
    for a in alphas:
        bound = sps.binom.ppf(0.999, n, a) / n
        assert np.mean(p_values <= a) <= bound, a


def test_binomial_p_values_are_valid_under_the_null():
    rng = np.random.default_rng(2)
    message = rng.integers(0, 2, 32)
    decoded = rng.integers(0, 2, (20000, 32))
    p = stats.binomial_p_value((decoded == message).sum(1), 32)
    _assert_super_uniform(p)
    # and close to the nominal level where the discrete test can attain it
    assert np.mean(p <= stats.binomial_p_value(24, 32)) == pytest.approx(stats.binomial_p_value(24, 32), rel=0.2)


def test_poisson_binomial_p_values_are_valid_under_their_null():
    rng = np.random.default_rng(3)
    q = rng.uniform(0.1, 0.9, 32)
    matches = (rng.random((20000, 32)) < q).sum(1)
    p = np.exp(stats.log_tail_from_log_pmf(stats.log_poisson_binomial_pmf(q), matches))
    _assert_super_uniform(p)


def test_hypercone_p_values_are_uniform_under_the_null():
    rng = np.random.default_rng(4)
    dim = 64
    u = rng.standard_normal(dim)
    u /= np.linalg.norm(u)
    x = rng.standard_normal((20000, dim))
    cos = x @ u / np.linalg.norm(x, axis=1)
    assert sps.kstest(stats.hypercone_p_value(cos, dim), "uniform").pvalue > 0.001
    dual = np.exp(stats.log_dual_hypercone_p_value(cos, dim))  # the SSL zero-bit test: |cos|
    assert sps.kstest(dual, "uniform").pvalue > 0.001
    assert np.mean(dual < 0.01) == pytest.approx(np.mean(np.abs(cos) >= np.quantile(np.abs(cos), 0.99)), abs=2e-3)


def test_noncentral_chi2_p_values_are_uniform_under_the_null():
    # Tree-Ring's null: y ~ N(0, sigma^2) per real component, key fixed, score = sum (key - y)^2 / sigma^2
    rng = np.random.default_rng(5)
    m, sigma = 40, 2.0
    key = rng.standard_normal(m) * 3
    y = rng.standard_normal((20000, m)) * sigma
    score = ((key - y) ** 2).sum(1) / sigma**2
    p = stats.noncentral_chi2_p_value(score, m, (key**2).sum() / sigma**2)
    assert sps.kstest(p, "uniform").pvalue > 0.001


def test_multi_key_correction_is_uniform_for_independent_keys():
    rng = np.random.default_rng(6)
    p_min = rng.random((20000, 50)).min(axis=1)
    assert sps.kstest(stats.multi_key_correction(p_min, 50), "uniform").pvalue > 0.001


@pytest.mark.parametrize("dim,c", [(2048, 0.5), (2048, 0.9), (512, 0.7), (64, 0.99)])
def test_hypercone_log_tail_matches_arbitrary_precision(dim, c):
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    a = mpmath.mpf(dim - 1) / 2
    exact = mpmath.betainc(a, mpmath.mpf(1) / 2, 0, 1 - mpmath.mpf(c) ** 2, regularized=True) / 2
    assert stats.log_hypercone_p_value(c, dim) == pytest.approx(float(mpmath.log(exact)), rel=1e-9)


def test_noncentral_chi2_log_tail_below_float_range():
    from scipy import stats as scipy_stats

    # where scipy's log cdf is finite, the log-space Poisson-mixture series agrees with it
    for x, dof, nc in [(10.0, 100, 50.0), (20.0, 60, 30.0), (50.0, 100, 50.0)]:
        series = stats._log_ncx2_cdf_series(np.array([x]), dof, np.array([nc]))[0]
        assert series == pytest.approx(scipy_stats.ncx2.logcdf(x, dof, nc), rel=1e-8)
    # and below 1e-308, where scipy underflows to -inf, it stays finite and monotone
    tails = stats.log_noncentral_chi2_p_value([0.5, 1.0, 2.0], 200, 400.0)
    assert np.all(np.isfinite(tails)) and tails[0] < tails[1] < tails[2] < np.log(1e-240)
    assert scipy_stats.ncx2.logcdf(0.5, 200, 400.0) == -np.inf  # what the fallback is for


@pytest.mark.parametrize("images", [3, 400])  # a few images: Hermite nodes; many: the density grid
def test_bit_null_matches_simulation_of_its_own_model(images):
    """BitNullModel's null pmf is what its mixture generates: draw a calibration image, theta
    around it, bits from the logistic model; strong loadings (7, as DwtDct's) included."""
    from wmkit.calibration import BitNullModel

    rng = np.random.default_rng(images)
    n = 24
    model = BitNullModel("test", {}, rng.normal(0, 1, n), rng.normal(0, 3, n).clip(-7, 7),
                         rng.normal(0, 1, images), rng.uniform(0.03, 0.2, images))
    message = rng.integers(0, 2, n).astype(np.uint8)
    draws = 200_000
    owner = rng.integers(0, images, draws)
    theta = model.theta_means[owner] + np.sqrt(model.theta_vars[owner]) * rng.standard_normal(draws)
    bits = rng.random((draws, n)) < 1 / (1 + np.exp(-(model.intercepts + model.loadings * theta[:, None])))
    counts = np.bincount((bits == message).sum(1), minlength=n + 1) / draws
    pmf = np.exp(model.log_null_pmf(message))
    assert pmf.sum() == pytest.approx(1.0, abs=1e-9)
    assert np.max(np.abs(pmf - counts)) < 0.005
    tail = np.exp(model.log_p_value(message, np.arange(n + 1)))
    simulated = counts[::-1].cumsum()[::-1]
    well_sampled = simulated * draws > 400
    np.testing.assert_allclose(tail[well_sampled], simulated[well_sampled], rtol=0.15)
