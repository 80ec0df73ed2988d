"""Every p-value in wmkit is computed here.

All functions are vectorised over numpy arrays and work in log space, so a
p-value of 2**-256 comes out as 2**-256 rather than 0, and a tiny p-value is
never rounded up to 1. Each returns natural-log p-values (``log_*``) and a
plain wrapper exponentiates them; keep the log form when ranking or comparing
very strong detections.
"""
from __future__ import annotations

import numpy as np
from scipy import special  # scipy.stats (a second to import) only where it is used

__all__ = [
    "log_binomial_sf",
    "binomial_p_value",
    "log_poisson_binomial_pmf",
    "log_tail_from_log_pmf",
    "log_hypercone_p_value",
    "hypercone_p_value",
    "log_noncentral_chi2_p_value",
    "noncentral_chi2_p_value",
    "multi_key_correction",
    "log_multi_key_correction",
]


def _logsumexp_rows(log_terms: np.ndarray, mask: np.ndarray) -> np.ndarray:
    masked = np.where(mask, log_terms, -np.inf)
    return special.logsumexp(masked, axis=-1)


def log_binomial_sf(k, n, p=0.5) -> np.ndarray:
    """log P(X >= k) for X ~ Binomial(n, p), exact up to float rounding.

    Sums the pmf terms i = k..n in log space (log-sum-exp of
    log C(n, i) + i log p + (n - i) log(1 - p)), so the result is exact at
    every scale; k <= 0 gives log 1 = 0 and k > n gives -inf.
    """
    k = np.asarray(k, dtype=np.int64)
    n = np.asarray(n, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    k, n, p = np.broadcast_arrays(k, n, p)
    if np.any((p < 0) | (p > 1)):
        raise ValueError("p must lie in [0, 1]")
    n_max = int(n.max()) if n.size else 0
    i = np.arange(n_max + 1)
    shape = k.shape + (n_max + 1,)
    n_b = n[..., None]
    p_b = p[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_choose = special.gammaln(n_b + 1) - special.gammaln(i + 1) - special.gammaln(n_b - i + 1)
        log_terms = log_choose + special.xlogy(i, p_b) + special.xlog1py(n_b - i, -p_b)
    mask = (i >= k[..., None]) & (i <= n_b)
    out = _logsumexp_rows(np.broadcast_to(log_terms, shape), mask)
    return np.minimum(out, 0.0)


def binomial_p_value(matches, n, p=0.5) -> np.ndarray:
    """P(at least ``matches`` of ``n`` bits agree) when each agrees with probability p."""
    return np.exp(log_binomial_sf(matches, n, p))


def log_poisson_binomial_pmf(probs) -> np.ndarray:
    """log pmf of S = sum of independent Bernoulli(probs[..., j]).

    ``probs`` has shape (..., n); the result has shape (..., n + 1). A dynamic
    programme over bits in log space: exact, O(n^2), batched over leading dims.
    """
    probs = np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)
    n = probs.shape[-1]
    lead = probs.shape[:-1]
    with np.errstate(divide="ignore"):
        log_p = np.log(probs)
        log_q = np.log1p(-probs)
    log_pmf = np.full(lead + (n + 1,), -np.inf)
    log_pmf[..., 0] = 0.0
    for j in range(n):
        shifted = np.full_like(log_pmf, -np.inf)
        shifted[..., 1:] = log_pmf[..., :-1] + log_p[..., j : j + 1]
        stay = log_pmf + log_q[..., j : j + 1]
        log_pmf = np.logaddexp(stay, shifted)
    return log_pmf


def log_tail_from_log_pmf(log_pmf, k) -> np.ndarray:
    """log P(S >= k) for integer k (any shape), from one log pmf over 0..n."""
    log_pmf = np.asarray(log_pmf, dtype=np.float64)
    if log_pmf.ndim != 1:
        raise ValueError("log_pmf must be one distribution over 0..n")
    # tail[k] = logsumexp(pmf[k:]); tail[n + 1] = log 0
    tail = np.append(np.flip(np.logaddexp.accumulate(np.flip(log_pmf))), -np.inf)
    k = np.clip(np.asarray(k, dtype=np.int64), 0, log_pmf.size)
    return np.minimum(tail[k], 0.0)


def log_hypercone_p_value(cosine, dim: int) -> np.ndarray:
    """log P(cos(X, u) >= c) for X isotropic in R^dim and a fixed unit vector u.

    Under the null cos^2 ~ Beta(1/2, (d-1)/2) and the sign is symmetric, so for
    c >= 0 the tail is 0.5 * I_{1-c^2}((d-1)/2, 1/2) (regularised incomplete
    beta), and for c < 0 it is 1 minus the mirrored tail.
    """
    if dim < 2:
        raise ValueError("the hypercone test needs dim >= 2")
    c = np.clip(np.asarray(cosine, dtype=np.float64), -1.0, 1.0)
    # log of 0.5 * P(cos^2 >= c^2) = 0.5 * I_{1 - c^2}((d - 1) / 2, 1 / 2)
    log_half_tail = np.log(0.5) + _log_betainc(1.0 - c**2, (dim - 1) / 2.0, 0.5)
    upper = log_half_tail
    lower = np.log1p(-np.exp(log_half_tail))
    return np.where(c >= 0, upper, lower)


def log_dual_hypercone_p_value(cosine, dim: int) -> np.ndarray:
    """log P(|cos(X, u)| >= |c|): the dual hypercone around +u and -u (SSL zero-bit marks).
    By the sign symmetry it is twice the one-sided tail at |c|."""
    return np.minimum(0.0, np.log(2.0) + log_hypercone_p_value(np.abs(np.asarray(cosine, dtype=np.float64)), dim))


def _log_betainc(y, a: float, b: float) -> np.ndarray:
    """log I_y(a, b), accurate where I underflows float64 (tiny y**a).

    Uses I_y(a, b) = y^a (1 - y)^b / (a B(a, b)) * 2F1(a + b, 1; a + 1; y)
    (DLMF 8.17.8 with 15.8.1), evaluated in log space, wherever the direct
    value is below 1e-200.
    """
    y = np.clip(np.asarray(y, dtype=np.float64), 0.0, 1.0)
    direct = special.betainc(a, b, y)
    with np.errstate(divide="ignore", invalid="ignore"):
        series = (
            special.xlogy(a, y) + special.xlog1py(b, -y) - np.log(a) - special.betaln(a, b)
            + np.log(special.hyp2f1(a + b, 1.0, a + 1.0, y))
        )
        out = np.where(direct > 1e-200, np.log(direct), series)
    return np.where(y <= 0.0, -np.inf, out)


def hypercone_p_value(cosine, dim: int) -> np.ndarray:
    return np.exp(log_hypercone_p_value(cosine, dim))


def log_normal_sf(z) -> np.ndarray:
    """log P(N(0, 1) >= z), accurate far into the tail (scipy's log_ndtr: z = 40 -> -804.6)."""
    return np.asarray(special.log_ndtr(-np.asarray(z, dtype=np.float64)), dtype=np.float64)


def log_noncentral_chi2_p_value(distance, dof: int, noncentrality) -> np.ndarray:
    """Tree-Ring's test: log P(chi'^2_dof(lambda) <= distance).

    With sigma^2 the null variance of each real Fourier component, the score
    ``distance = sum |key - y|^2 / sigma^2`` over the key region follows a
    non-central chi-square with ``dof`` = 2 |region| degrees of freedom and
    noncentrality ``lambda = sum |key|^2 / sigma^2`` when y is unwatermarked
    noise. Watermarked images have a *small* distance, hence the lower tail.
    """
    distance, noncentrality = np.broadcast_arrays(
        np.asarray(distance, dtype=np.float64), np.asarray(noncentrality, dtype=np.float64)
    )
    from scipy import stats

    direct = stats.ncx2.logcdf(distance, dof, noncentrality)
    tiny = ~(direct > np.log(1e-250))  # scipy underflows there: sum the Poisson mixture in log space
    if np.any(tiny):
        direct = np.array(direct, dtype=np.float64, copy=True)
        direct[tiny] = _log_ncx2_cdf_series(distance[tiny], dof, noncentrality[tiny])
    return direct


def _log_gammainc_lower(a: np.ndarray, x: np.ndarray, terms: int = 400) -> np.ndarray:
    """log P(a, x) (regularised lower incomplete gamma) for tiny values, by the series
    P(a, x) = x^a e^-x / Gamma(a + 1) * sum_n x^n / ((a + 1) ... (a + n))."""
    m = np.arange(1, terms + 1)
    log_terms = np.cumsum(np.log(x[..., None]) - np.log(a[..., None] + m), axis=-1)
    log_sum = special.logsumexp(np.concatenate([np.zeros(log_terms.shape[:-1] + (1,)), log_terms], axis=-1), axis=-1)
    return special.xlogy(a, x) - x - special.gammaln(a + 1) + log_sum


def _log_ncx2_cdf_series(x: np.ndarray, dof: int, noncentrality: np.ndarray) -> np.ndarray:
    """log P(chi'^2 <= x) = log sum_j Poisson(j; lambda / 2) P(dof / 2 + j, x / 2), in log space."""
    half = noncentrality / 2.0
    j_max = int(np.max(half + 12 * np.sqrt(half + 1) + 60))
    j = np.arange(j_max + 1)
    log_poisson = -half[..., None] + special.xlogy(j, half[..., None]) - special.gammaln(j + 1)
    a = dof / 2.0 + j
    log_gamma = _log_gammainc_lower(np.broadcast_to(a, log_poisson.shape), np.broadcast_to((x / 2.0)[..., None], log_poisson.shape))
    return special.logsumexp(log_poisson + log_gamma, axis=-1)


def noncentral_chi2_p_value(distance, dof: int, noncentrality) -> np.ndarray:
    return np.exp(log_noncentral_chi2_p_value(distance, dof, noncentrality))


def log_multi_key_correction(log_p_min, num_keys: int, *, method: str = "sidak") -> np.ndarray:
    """Correct the smallest of ``num_keys`` p-values for having looked at all of them.

    ``sidak``: 1 - (1 - p)^K, exact when the K tests are independent (distinct
    random keys); ``bonferroni``: min(1, K p), valid under any dependence.
    """
    if num_keys < 1:
        raise ValueError("num_keys must be >= 1")
    log_p = np.minimum(np.asarray(log_p_min, dtype=np.float64), 0.0)
    if method == "bonferroni":
        return np.minimum(log_p + np.log(num_keys), 0.0)
    if method == "sidak":
        # 1 - exp(K log(1 - p)), computed without cancellation for tiny p
        log1m_p = np.log1p(-np.exp(log_p))
        with np.errstate(divide="ignore"):
            return np.minimum(np.log(-np.expm1(num_keys * log1m_p)), 0.0)
    raise ValueError(f"unknown correction '{method}' (sidak or bonferroni)")


def multi_key_correction(p_min, num_keys: int, *, method: str = "sidak") -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.exp(log_multi_key_correction(np.log(np.asarray(p_min, dtype=np.float64)), num_keys, method=method))
