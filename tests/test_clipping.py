"""Tests for dptheory.clipping: exact clipped-Gaussian moments against independent references.

Independent references used here (none calls the series under test):
* quadrature over scipy's noncentral chi-square density (``scipy.stats.ncx2``, Boost);
* Monte Carlo of g = (m + sZ₁) e₁ + s(Z₂, …, Z_d) via its exact norm/projection decomposition,
  compared within K_SE = 5 standard errors (two-sided false-alarm rate 6e-7 per check);
* closed forms (d = 1 with normal CDFs, C → ∞, s → 0) and an asymptotic derived independently.
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special, stats

from dptheory.clipping import (
    NormMoments,
    clip,
    clip_factor,
    clip_probability,
    clipped_gaussian_mean_factor,
    clipped_gaussian_second_moment,
    clipped_norm_moments,
    gaussian_mean_clip_factor,
    gaussian_mean_excess,
    large_dim_shrinkage,
    linear_response_shrinkage,
)

K_SE = 5.0  # Monte Carlo tolerance in standard errors

# Independent reference values (d, m, s, C) → γ to 5 decimals (Poisson series, quadrature and Monte Carlo agree).
REFERENCE_GAMMA = [
    ((1, 1.0, 1.0, 0.5), 0.33151),
    ((10, 1.0, 1.0, 1.0), 0.29623),
    ((100, 0.5, 0.2, 1.0), 0.48413),
    ((1000, 1.0, 0.1, 3.0), 0.90438),
    ((50, 3.0, 1.0, 2.0), 0.25976),
]


# ----------------------------------------------------------------------------- independent references


def quad_gamma(d, m, s, C):
    """γ = ∫ min(1, c/√w) dF_{χ'²_{d+2}(λ)}(w) by adaptive quadrature (slow, independent)."""
    lam, c = (m / s) ** 2, C / s
    dist = stats.ncx2(df=d + 2, nc=lam) if lam > 0 else stats.chi2(df=d + 2)
    lo, hi = dist.ppf(1e-15), dist.isf(1e-15)
    kw = dict(limit=500, epsabs=1e-13, epsrel=1e-11)
    below = integrate.quad(dist.pdf, lo, min(c * c, hi), **kw)[0] if c * c > lo else 0.0
    above = integrate.quad(lambda w: c / math.sqrt(w) * dist.pdf(w), max(c * c, lo), hi, **kw)[0] if c * c < hi else 0.0
    return below + above


def quad_second_moment(d, m, s, C):
    """E min(‖g‖², C²) = s² ∫ min(w, c²) dF_{χ'²_d(λ)}(w) by quadrature."""
    lam, c = (m / s) ** 2, C / s
    dist = stats.ncx2(df=d, nc=lam) if lam > 0 else stats.chi2(df=d)
    lo, hi = dist.ppf(1e-15), dist.isf(1e-15)
    kw = dict(limit=500, epsabs=1e-13, epsrel=1e-11, points=None)
    below = integrate.quad(lambda w: w * dist.pdf(w), lo, min(c * c, hi), **kw)[0] if c * c > lo else 0.0
    return s * s * (below + c * c * dist.sf(c * c))


def mc_norm_projection(d, m, s, n, seed):
    """Samples of (‖g‖, ⟨g, μ̂⟩) for g ~ N(m e₁, s² I_d), exact in distribution: ⟨g, μ̂⟩ = m + sZ₁,
    ‖g‖² = (m + sZ₁)² + s² χ²_{d−1}."""
    rng = np.random.default_rng(seed)
    proj = m + s * rng.standard_normal(n)
    rest = s * s * rng.chisquare(d - 1, n) if d > 1 else np.zeros(n)
    return np.sqrt(proj**2 + rest), proj


def mpmath_gamma(d, m, s, C, dps=25):
    """γ by the Poisson-mixture series summed in mpmath at ``dps`` digits (slow, high precision)."""
    with mp.workdps(dps):
        lam, c = mp.mpf(m) ** 2 / mp.mpf(s) ** 2, mp.mpf(C) / mp.mpf(s)
        mu = lam / 2
        lo, hi = (0, 0) if mu == 0 else (max(0, int(mu - 12 * mp.sqrt(mu) - 12)), int(mu + 12 * mp.sqrt(mu) + 12))
        total = []
        for j in range(lo, hi + 1):
            k = mp.mpf(d + 2 + 2 * j)
            w = mp.exp(-mu + j * mp.log(mu) - mp.loggamma(j + 1)) if mu > 0 else mp.mpf(1)
            inv = c * mp.gamma((k - 1) / 2) / (mp.sqrt(2) * mp.gamma(k / 2))
            inv *= mp.gammainc((k - 1) / 2, c * c / 2, mp.inf, regularized=True)
            total.append(w * (mp.gammainc(k / 2, 0, c * c / 2, regularized=True) + inv))
        return float(mp.fsum(total))


def normal_clamp_mean(m, s, C):
    """d = 1 closed form: E[clamp(g, −C, C)], g ~ N(m, s²), via normal CDF/PDF."""
    a, b = (-C - m) / s, (C - m) / s
    inside = m * (stats.norm.cdf(b) - stats.norm.cdf(a)) - s * (stats.norm.pdf(b) - stats.norm.pdf(a))
    return C * stats.norm.sf(b) - C * stats.norm.cdf(a) + inside


# ----------------------------------------------------------------------------- clip operator


vectors = st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=8)
clips = st.floats(1e-3, 1e3)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(vectors, clips)
def test_clip_norm_identities(x, C):
    x = np.asarray(x)
    y = clip(x, clip_norm=C)
    r = np.linalg.norm(x)
    tol = 1e-12 * max(1.0, r)
    assert abs(np.linalg.norm(y) - min(r, C)) <= tol  # ‖clip(x)‖ = min(‖x‖, C)
    assert abs(np.linalg.norm(y - x) - max(r - C, 0.0)) <= tol  # ‖clip(x) − x‖ = (‖x‖ − C)₊
    assert np.all(y * x >= 0)  # same direction (φ ≥ 0 scalar)
    np.testing.assert_allclose(clip(y, clip_norm=C), y, rtol=1e-12, atol=1e-300)  # idempotent


@settings(max_examples=100, deadline=None, derandomize=True)
@given(vectors, clips, st.integers(-300, 300))
def test_clip_homogeneity_over_the_float_range(x, C, k):
    # clip_{tC}(t x) = t clip_C(x) for t > 0, also where ‖t x‖² overflows (t = 10^k, |k| ≤ 300)
    x, t = np.asarray(x), 10.0**k
    if not (np.all(np.isfinite(t * x)) and np.isfinite(t * C) and t * C > 0):
        return
    err = np.linalg.norm(clip(t * x, clip_norm=t * C) / t - clip(x, clip_norm=C))
    assert err <= 1e-12 * min(np.linalg.norm(x), C) + 1e-300 / t  # normwise (entries may be subnormal)


def test_clip_rows_zero_inf_scalar():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [0.3, 0.4]])
    np.testing.assert_allclose(clip(x, clip_norm=1.0), [[0.6, 0.8], [0.0, 0.0], [0.3, 0.4]], rtol=1e-15)
    np.testing.assert_array_equal(clip(x, clip_norm=math.inf), x)
    assert float(clip(-5.0, clip_norm=2.0)) == -2.0 and float(clip(0.5, clip_norm=2.0)) == 0.5
    np.testing.assert_array_equal(clip_factor([0.0, 1.0, 4.0], clip_norm=2.0), [1.0, 1.0, 0.5])
    with pytest.raises(ValueError, match="clip_norm"):
        clip(x, clip_norm=0.0)
    with pytest.raises(ValueError, match="norms"):
        clip_factor([-1.0], clip_norm=1.0)


def test_clip_direction_and_mean_monte_carlo_full_vectors():
    # The full-vector clip agrees with the theory: mean along μ is γ m, orthogonal mean is 0.
    d, m, s, C, n = 10, 1.0, 1.0, 1.0, 100_000
    rng = np.random.default_rng(1)
    g = rng.standard_normal((n, d)) * s
    g[:, 0] += m
    y = clip(g, clip_norm=C)
    mean, se = y.mean(axis=0), y.std(axis=0, ddof=1) / math.sqrt(n)
    gamma = clipped_gaussian_mean_factor(dim=d, mean_norm=m, std=s, clip_norm=C)
    assert abs(mean[0] - gamma * m) <= K_SE * se[0]
    assert np.all(np.abs(mean[1:]) <= K_SE * se[1:] * 1.3)  # 1.3: max of 9 coordinates, Bonferroni-safe
    second = np.sum(y * y, axis=1)
    ex = clipped_gaussian_second_moment(dim=d, mean_norm=m, std=s, clip_norm=C)
    assert abs(second.mean() - ex) <= K_SE * second.std(ddof=1) / math.sqrt(n)


# ----------------------------------------------------------------------------- mean factor γ


@pytest.mark.parametrize("args,ref", REFERENCE_GAMMA)
def test_reference_values(args, ref):
    d, m, s, C = args
    gamma = clipped_gaussian_mean_factor(dim=d, mean_norm=m, std=s, clip_norm=C)
    assert abs(gamma - ref) <= 5e-6  # published to 5 decimals
    assert abs(gamma - quad_gamma(d, m, s, C)) <= 1e-9  # independent quadrature
    norm, proj = mc_norm_projection(d, m, s, 400_000, seed=d)
    est = clip_factor(norm, clip_norm=C) * proj / m
    assert abs(est.mean() - gamma) <= K_SE * est.std(ddof=1) / math.sqrt(est.size)


@pytest.mark.parametrize(
    "d,m,s,C",
    [(1, 0.0, 1.0, 0.7), (2, 5.0, 1.0, 3.0), (3, 0.1, 2.0, 10.0), (30, 40.0, 1.0, 20.0), (7, 2.0, 0.5, 0.01)],
)
def test_mean_factor_matches_quadrature(d, m, s, C):
    assert abs(clipped_gaussian_mean_factor(dim=d, mean_norm=m, std=s, clip_norm=C) - quad_gamma(d, m, s, C)) <= 1e-9


@pytest.mark.parametrize("d,m,s,C", [(1000, 1.0, 0.1, 3.0), (3, 20.0, 1.0, 10.0), (7, 0.0, 1.0, 2.0)])
def test_mean_factor_matches_high_precision_series(d, m, s, C):
    # 25-digit mpmath evaluation (independent arithmetic); documented accuracy ≲ 2e-14 relative
    assert clipped_gaussian_mean_factor(dim=d, mean_norm=m, std=s, clip_norm=C) == pytest.approx(
        mpmath_gamma(d, m, s, C), rel=5e-14
    )


@pytest.mark.parametrize(
    "m,s,C", [(1.0, 1.0, 0.5), (0.3, 2.0, 1.0), (3.0, 1.0, 2.0), (-0.0, 1.0, 1.0), (1.0, 0.1, 5.0)]
)
def test_d1_closed_form(m, s, C):
    gamma = clipped_gaussian_mean_factor(dim=1, mean_norm=m, std=s, clip_norm=C)
    if m > 0:
        assert abs(gamma - normal_clamp_mean(m, s, C) / m) <= 1e-12
    else:  # m → 0: derivative of E clamp(g) at m = 0 is P(|g| ≤ C) = 2Φ(C/s) − 1
        assert abs(gamma - (2 * stats.norm.cdf(C / s) - 1)) <= 1e-14


def test_limits_no_clipping_and_deterministic():
    for d, m, s in [(1, 1.0, 1.0), (100, 0.0, 0.3), (10**6, 2.0, 1.0)]:
        assert clipped_gaussian_mean_factor(dim=d, mean_norm=m, std=s, clip_norm=math.inf) == 1.0
        assert clipped_gaussian_second_moment(dim=d, mean_norm=m, std=s, clip_norm=math.inf) == pytest.approx(
            m * m + d * s * s, rel=1e-15
        )
        # C → ∞ continuously: clip_norm far above the norm's support gives the unclipped values.
        big = 1e3 * math.sqrt(m * m + d * s * s)
        assert clipped_gaussian_mean_factor(dim=d, mean_norm=m, std=s, clip_norm=big) == pytest.approx(1.0, abs=1e-14)
        assert clipped_gaussian_second_moment(dim=d, mean_norm=m, std=s, clip_norm=big) == pytest.approx(
            m * m + d * s * s, rel=1e-12
        )
        assert clip_probability(dim=d, mean_norm=m, std=s, clip_norm=big) == pytest.approx(0.0, abs=1e-14)
    # s = 0 is deterministic, and s → 0 approaches it continuously.
    for m, C in [(2.0, 1.0), (0.5, 1.0)]:
        assert clipped_gaussian_mean_factor(dim=5, mean_norm=m, std=0.0, clip_norm=C) == min(1.0, C / m)
        assert clipped_gaussian_second_moment(dim=5, mean_norm=m, std=0.0, clip_norm=C) == min(m, C) ** 2
        assert clip_probability(dim=5, mean_norm=m, std=0.0, clip_norm=C) == float(m > C)
        small = clipped_gaussian_mean_factor(dim=5, mean_norm=m, std=1e-6, clip_norm=C)
        assert small == pytest.approx(min(1.0, C / m), rel=1e-5)
    assert clipped_gaussian_mean_factor(dim=3, mean_norm=0.0, std=0.0, clip_norm=1.0) == 1.0


def test_extreme_dimension_and_noncentrality():
    # d = 1e9, λ = 1e6: finite, in [0, 1], monotone in C, and matching the large-d limit within its
    # own error bound 0.47/√d (tested below) — an independent check at sizes no quadrature reaches.
    d, m, s = 1e9, 1e3, 1.0  # λ = m²/s² = 1e6
    Cs = np.sqrt(m * m + d * s * s) * np.geomspace(1e-4, 3.0, 41)
    gam = clipped_gaussian_mean_factor(dim=d, mean_norm=m, std=s, clip_norm=Cs)
    assert np.all(np.isfinite(gam)) and np.all((gam >= 0) & (gam <= 1))
    assert np.all(np.diff(gam) >= 0)
    approx = large_dim_shrinkage(dim=d, mean_norm=m, std=s, clip_norm=Cs)
    assert np.all(np.abs(approx / gam - 1) <= 0.47 / math.sqrt(d))
    # λ = 1e6 at small d (the Poisson window has ~14000 terms): against the s → 0-like limit.
    g = clipped_gaussian_mean_factor(dim=3, mean_norm=1e3, std=1.0, clip_norm=[500.0, 2000.0])
    assert g[1] == pytest.approx(1.0, abs=1e-15)
    # W = ‖θ + Z‖² in k = d + 2 dims: E W^{-1/2} = λ^{-1/2}(1 − (k − 3)/(2λ) + O(λ^{-2})) (expand
    # (1 + u)^{-1/2}, u = (2√λ Z₁ + ‖Z‖²)/λ, to second order); clipping is certain at C = m/2.
    assert g[0] == pytest.approx(0.5 * (1 - (3 + 2 - 3) / (2 * 1e6)), rel=1e-10)
    p = clip_probability(dim=1e9, mean_norm=1e3, std=1.0, clip_norm=math.sqrt(1e9 + 1e6))
    assert 0.49 < p < 0.51  # the median of a near-normal χ'² sits at its mean to O(1/√d)


@pytest.mark.parametrize("m,dc", [(1e3, 1.0), (1e3, -1.0), (30.0, 0.5)])
def test_clip_probability_large_noncentrality_against_exact_integral(m, dc):
    # d = 2, s = 1: P(‖g‖ > C) = E_{Z₁}[ P(Z₂² > C² − (m + Z₁)²) ] — a 1-D integral of erfc at 30
    # digits, independent of the Poisson mixture; λ = 1e6 exercises the trapezoid branch.
    C = m - dc
    with mp.workdps(30):
        mm, cc = mp.mpf(m), mp.mpf(C)

        def integrand(z):
            a = (mm + z) ** 2
            return mp.npdf(z) * (1 if a >= cc * cc else mp.erfc(mp.sqrt(cc * cc - a) / mp.sqrt(2)))

        ref = float(mp.quad(integrand, sorted([-40, -dc, 0, 40])))
    assert clip_probability(dim=2, mean_norm=m, std=1.0, clip_norm=C) == pytest.approx(ref, rel=1e-13)


def test_poisson_trapezoid_branch_equals_exact_sum(monkeypatch):
    import dptheory.clipping as mod

    cases = [(3, 150.0, 1.0, 149.0), (1, 1e3, 1.0, 999.0), (1e9, 1e3, 1.0, 3e4), (10, 1e3, 1.0, 500.0)]
    fns = (clipped_gaussian_mean_factor, clipped_gaussian_second_moment, clip_probability, gaussian_mean_clip_factor)
    fast = [[f(dim=d, mean_norm=m, std=s, clip_norm=C) for f in fns] for d, m, s, C in cases]
    monkeypatch.setattr(mod, "_MAX_EXACT_MEAN", 1e12)  # force the exact integer sum (λ ≤ 1e6 here)
    exact = [[f(dim=d, mean_norm=m, std=s, clip_norm=C) for f in fns] for d, m, s, C in cases]
    np.testing.assert_allclose(fast, exact, rtol=1e-13)


def test_array_broadcasting_equals_scalar_calls():
    Cs = np.array([[0.5, 1.0, 2.0]])
    ds = np.array([[1], [10]])
    arr = clipped_gaussian_mean_factor(dim=ds, mean_norm=1.0, std=1.0, clip_norm=Cs)
    assert arr.shape == (2, 3)
    for i, d in enumerate([1, 10]):
        for j, C in enumerate([0.5, 1.0, 2.0]):
            assert arr[i, j] == clipped_gaussian_mean_factor(dim=d, mean_norm=1.0, std=1.0, clip_norm=C)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(dim=0, mean_norm=1.0, std=1.0, clip_norm=1.0), "dim"),
        (dict(dim=2.5, mean_norm=1.0, std=1.0, clip_norm=1.0), "dim"),
        (dict(dim=3, mean_norm=-1.0, std=1.0, clip_norm=1.0), "mean_norm"),
        (dict(dim=3, mean_norm=1.0, std=-1.0, clip_norm=1.0), "std"),
        (dict(dim=3, mean_norm=1.0, std=1.0, clip_norm=0.0), "clip_norm"),
        (dict(dim=3, mean_norm=1.0, std=math.nan, clip_norm=1.0), "std"),
    ],
)
def test_invalid_arguments(kwargs, name):
    for fn in (clipped_gaussian_mean_factor, clipped_gaussian_second_moment, clip_probability, large_dim_shrinkage):
        with pytest.raises(ValueError, match=name):
            fn(**kwargs)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    d=st.integers(1, 2000),
    m=st.floats(0.0, 50.0),
    s=st.floats(0.05, 5.0),
    c1=st.floats(0.01, 100.0),
    c2=st.floats(0.01, 100.0),
    dm=st.floats(0.0, 20.0),
    dd=st.integers(0, 500),
)
def test_mean_factor_properties(d, m, s, c1, c2, dm, dd):
    lo, hi = sorted((c1, c2))
    g_lo = clipped_gaussian_mean_factor(dim=d, mean_norm=m, std=s, clip_norm=lo)
    g_hi = clipped_gaussian_mean_factor(dim=d, mean_norm=m, std=s, clip_norm=hi)
    assert 0.0 <= g_lo <= g_hi + 1e-13 <= 1.0 + 1e-13  # in [0, 1], monotone in C
    # ‖E clip(g)‖ = γ m ≤ E‖clip(g)‖ ≤ C (Jensen and ‖clip‖ ≤ C)
    assert g_lo * m <= lo * (1 + 1e-12)
    sm = clipped_gaussian_second_moment(dim=d, mean_norm=m, std=s, clip_norm=lo)
    assert (g_lo * m) ** 2 <= sm * (1 + 1e-10) and sm <= min(lo * lo, m * m + d * s * s) * (1 + 1e-12)
    # χ'²_k(λ) is stochastically increasing in λ and in k, and min(1, c/√w) decreases in w:
    # γ is nonincreasing in m and d; the clip fraction and the clipped second moment are nondecreasing.
    kw = dict(std=s, clip_norm=lo)
    assert clipped_gaussian_mean_factor(dim=d, mean_norm=m + dm, **kw) <= g_lo + 1e-13
    assert clipped_gaussian_mean_factor(dim=d + dd, mean_norm=m, **kw) <= g_lo + 1e-13
    p0 = clip_probability(dim=d, mean_norm=m, **kw)
    assert clip_probability(dim=d, mean_norm=m + dm, **kw) >= p0 - 1e-13
    assert clip_probability(dim=d + dd, mean_norm=m, **kw) >= p0 - 1e-13
    assert clipped_gaussian_second_moment(dim=d, mean_norm=m + dm, **kw) >= sm * (1 - 1e-12)


# ----------------------------------------------------------------------------- second moment, clip fraction


@pytest.mark.parametrize(
    "d,m,s,C", [(1, 1.0, 1.0, 0.5), (10, 1.0, 1.0, 1.0), (100, 0.5, 0.2, 1.0), (50, 3.0, 1.0, 2.0)]
)
def test_second_moment_and_clip_probability(d, m, s, C):
    sm = clipped_gaussian_second_moment(dim=d, mean_norm=m, std=s, clip_norm=C)
    assert sm == pytest.approx(quad_second_moment(d, m, s, C), rel=1e-9)
    lam, c = (m / s) ** 2, C / s
    p = clip_probability(dim=d, mean_norm=m, std=s, clip_norm=C)
    assert p == pytest.approx(stats.ncx2.sf(c * c, d, lam), rel=1e-10, abs=1e-15)
    norm, _ = mc_norm_projection(d, m, s, 200_000, seed=100 + d)
    x = np.minimum(norm, C) ** 2
    # (+1e-12·sm: float rounding, for the case where every sample is clipped and the SE is 0)
    assert abs(x.mean() - sm) <= K_SE * x.std(ddof=1) / math.sqrt(x.size) + 1e-12 * sm
    # the closed form with noncentral CDFs (scipy.stats.ncx2) agrees with the series
    ref = (
        s
        * s
        * (
            d * stats.ncx2.cdf(c * c, d + 2, lam)
            + lam * stats.ncx2.cdf(c * c, d + 4, lam)
            + c * c * stats.ncx2.sf(c * c, d, lam)
        )
    )
    assert sm == pytest.approx(ref, rel=1e-9)


# ----------------------------------------------------------------------------- E φ(‖g‖) and E(‖g‖ − C)₊


def quad_norm_moment(d, m, s, C, fn):
    """∫ fn(s√w) dF_{χ'²_d(λ)}(w) by quadrature, split at w = c²."""
    lam, c = (m / s) ** 2, C / s
    dist = stats.ncx2(df=d, nc=lam) if lam > 0 else stats.chi2(df=d)
    kw = dict(limit=500, epsabs=1e-13, epsrel=1e-11)
    f = lambda w: fn(s * math.sqrt(w)) * dist.pdf(w)  # noqa: E731
    return integrate.quad(f, 0, c * c, **kw)[0] + integrate.quad(f, c * c, np.inf, **kw)[0]


@pytest.mark.parametrize(
    "d,m,s,C", [(1, 0.0, 1.0, 0.5), (1, 1.5, 1.0, 1.0), (2, 0.3, 1.0, 1.0), (3, 2.0, 1.0, 1.5), (40, 3.0, 1.0, 5.0)]
)
def test_mean_clip_factor_and_excess_against_quadrature(d, m, s, C):
    phi = gaussian_mean_clip_factor(dim=d, mean_norm=m, std=s, clip_norm=C)
    assert phi == pytest.approx(quad_norm_moment(d, m, s, C, lambda r: min(1.0, C / r) if r > 0 else 1.0), rel=1e-8)
    exc = gaussian_mean_excess(dim=d, mean_norm=m, std=s, clip_norm=C)
    assert exc == pytest.approx(quad_norm_moment(d, m, s, C, lambda r: max(r - C, 0.0)), rel=1e-8)
    # γ at dimension d is E φ at dimension d + 2 (both average min(1, c/√W), W ~ χ'²_{d+2}(λ))
    assert clipped_gaussian_mean_factor(dim=d, mean_norm=m, std=s, clip_norm=C) == pytest.approx(
        gaussian_mean_clip_factor(dim=d + 2, mean_norm=m, std=s, clip_norm=C), rel=1e-14
    )
    # Monte Carlo (exact norm decomposition), K_SE standard errors
    norm, _ = mc_norm_projection(d, m, s, 200_000, seed=200 + d)
    for est, exact in ((clip_factor(norm, clip_norm=C), phi), (np.maximum(norm - C, 0.0), exc)):
        assert abs(est.mean() - exact) <= K_SE * est.std(ddof=1) / math.sqrt(est.size) + 1e-12


def test_mean_clip_factor_and_excess_limits():
    # d = 1, m = 0: E(|g| − C)₊ = 2s[φ(c) − c S(c)] (normal partial expectation), E φ = P(|g| ≤ C) + ...
    s, C = 1.3, 0.7
    c = C / s
    assert gaussian_mean_excess(dim=1, mean_norm=0.0, std=s, clip_norm=C) == pytest.approx(
        2 * s * (stats.norm.pdf(c) - c * stats.norm.sf(c)), rel=1e-13
    )
    # C → 0: E(‖g‖ − C)₊ → E‖g‖ = s√2 Γ((d+1)/2)/Γ(d/2) for m = 0
    for d in (1, 2, 10, 1000):
        mean_chi = s * math.sqrt(2) * math.exp(special.gammaln((d + 1) / 2) - special.gammaln(d / 2))
        assert gaussian_mean_excess(dim=d, mean_norm=0.0, std=s, clip_norm=1e-12) == pytest.approx(mean_chi, rel=1e-10)
    for fn in (gaussian_mean_clip_factor, gaussian_mean_excess):
        expected = 0.5 if fn is gaussian_mean_clip_factor else 1.0  # φ = C/m, excess = m − C
        assert fn(dim=3, mean_norm=2.0, std=0.0, clip_norm=1.0) == pytest.approx(expected)
    assert gaussian_mean_clip_factor(dim=3, mean_norm=2.0, std=1.0, clip_norm=math.inf) == 1.0
    assert gaussian_mean_excess(dim=3, mean_norm=2.0, std=1.0, clip_norm=math.inf) == 0.0


# ----------------------------------------------------------------------------- linear response α₀


@pytest.mark.parametrize("d", [1, 2, 3, 10, 100, 10**4, 10**9])
def test_linear_response_equals_mean_factor_at_zero(d):
    for c in [0.1, 1.0, math.sqrt(d), 3.0 * math.sqrt(d)]:
        a0 = linear_response_shrinkage(dim=d, std=1.0, clip_norm=c)
        g0 = clipped_gaussian_mean_factor(dim=d, mean_norm=0.0, std=1.0, clip_norm=c)
        assert a0 == pytest.approx(g0, rel=1e-11)
        # continuity: γ(m) → α₀ as m → 0 (γ − α₀ = O(m²))
        gm = clipped_gaussian_mean_factor(dim=d, mean_norm=1e-4, std=1.0, clip_norm=c)
        assert gm == pytest.approx(a0, rel=1e-6)


def test_linear_response_monte_carlo_definition():
    # α₀ = E[φ(R)(1 − 1{R>C}/d)] sampled directly from R = s χ_d (the Jacobian-trace form).
    d, s, C, n = 5, 1.0, 1.5, 400_000
    R = s * np.sqrt(np.random.default_rng(7).chisquare(d, n))
    x = clip_factor(R, clip_norm=C) * (1 - (R > C) / d)
    a0 = linear_response_shrinkage(dim=d, std=s, clip_norm=C)
    assert abs(x.mean() - a0) <= K_SE * x.std(ddof=1) / math.sqrt(n)
    # high d: α₀ → C/(s√d) once C ≪ s√d
    assert linear_response_shrinkage(dim=10**6, std=1.0, clip_norm=10.0) == pytest.approx(10.0 / 1e3, rel=1e-5)


# ----------------------------------------------------------------------------- large-d approximation


@pytest.mark.parametrize("d", [1, 2, 5, 50, 1000, 10**4])
def test_large_dim_error_bound(d):
    worst_pos, worst_neg = 0.0, 0.0
    for m in [0.0, 0.3, 1.0, 3.0, 10.0, 100.0]:
        rms = math.sqrt(m * m + d)
        Cs = rms * np.concatenate([np.geomspace(1e-3, 30.0, 121), [1.0]])  # include the kink exactly
        exact = clipped_gaussian_mean_factor(dim=d, mean_norm=m, std=1.0, clip_norm=Cs)
        err = large_dim_shrinkage(dim=d, mean_norm=m, std=1.0, clip_norm=Cs) / exact - 1
        worst_pos, worst_neg = max(worst_pos, err.max()), min(worst_neg, err.min())
    assert worst_pos <= 0.47 / math.sqrt(d) and worst_neg >= -0.05  # documented bound
    # The worst case is the kink with m = 0, asymptotically 1/(2√(π d)) (derived independently).
    kink = large_dim_shrinkage(dim=d, mean_norm=0.0, std=1.0, clip_norm=math.sqrt(d))
    kink /= clipped_gaussian_mean_factor(dim=d, mean_norm=0.0, std=1.0, clip_norm=math.sqrt(d))
    assert kink - 1 == pytest.approx(worst_pos, rel=1e-12)
    if d >= 1000:
        assert kink - 1 == pytest.approx(1 / (2 * math.sqrt(math.pi * d)), rel=0.05)


def test_large_dim_within_one_percent_away_from_kink():
    # "within 1 % for d ≥ 50" holds once C ≤ rms/2 or C ≥ 2·rms (not at the kink).
    for d in [50, 1000]:
        for m in [0.0, 1.0, 10.0, 100.0]:
            rms = math.sqrt(m * m + d)
            Cs = rms * np.concatenate([np.geomspace(1e-3, 0.5, 60), np.geomspace(2.0, 100.0, 30)])
            exact = clipped_gaussian_mean_factor(dim=d, mean_norm=m, std=1.0, clip_norm=Cs)
            assert np.all(np.abs(large_dim_shrinkage(dim=d, mean_norm=m, std=1.0, clip_norm=Cs) / exact - 1) <= 0.01)


# ----------------------------------------------------------------------------- norm-distribution model


def test_norm_moments_uniform_closed_form():
    # R ~ U(0, 2), C = 1: E φ = ½ + ½∫_1^2 dr/r = ½ + ½ ln 2; P = ½; E min(R,1)² = 1/6 + ½; E(R−1)₊ = ¼.
    r = clipped_norm_moments(norms=stats.uniform(0, 2), clip_norm=1.0)
    assert r.mean_clip_factor == pytest.approx(0.5 + 0.5 * math.log(2), rel=1e-12)
    assert r.clip_fraction == pytest.approx(0.5, rel=1e-14)
    assert r.clipped_second_moment == pytest.approx(1 / 6 + 0.5, rel=1e-12)
    assert r.mean_excess == pytest.approx(0.25, rel=1e-12)
    # whole support above C (U(3, 5), C = 1): everything clipped, E(R − C)₊ = E R − C = 3
    r = clipped_norm_moments(norms=stats.uniform(3, 2), clip_norm=1.0)
    assert r.clip_fraction == 1.0 and r.clipped_second_moment == pytest.approx(1.0)
    assert r.mean_excess == pytest.approx(3.0, rel=1e-12)
    assert r.mean_clip_factor == pytest.approx(0.5 * math.log(5 / 3), rel=1e-12)


def test_norm_moments_chi_matches_gaussian_functions():
    # R = s χ_d is the norm of N(0, s² I_d): clip fraction and second moment must match.
    d, s, C = 7, 0.5, 1.1
    r = clipped_norm_moments(norms=stats.chi(d, scale=s), clip_norm=C)
    assert r.clip_fraction == pytest.approx(clip_probability(dim=d, mean_norm=0, std=s, clip_norm=C), rel=1e-12)
    assert r.clipped_second_moment == pytest.approx(
        clipped_gaussian_second_moment(dim=d, mean_norm=0, std=s, clip_norm=C), rel=1e-9
    )
    # E φ(R) differs from γ(0) = α₀ by the 1/d Jacobian term: α₀ = E φ − E[φ 1{R>C}]/d
    c = C / s
    ratio = math.exp(special.gammaln((d - 1) / 2) - special.gammaln(d / 2)) / math.sqrt(2)
    tail = c * ratio * stats.chi2.sf(c * c, d - 1)
    alpha0 = linear_response_shrinkage(dim=d, std=s, clip_norm=C)
    assert r.mean_clip_factor - tail / d == pytest.approx(alpha0, rel=1e-9)


@pytest.mark.parametrize(
    "dist", [stats.lognorm(0.8, scale=1.0), stats.chi(3, scale=0.7), stats.pareto(2.5), stats.halfcauchy()]
)
def test_norm_moments_samples_agree_with_quadrature(dist):
    C = 1.3
    exact = clipped_norm_moments(norms=dist, clip_norm=C)
    est = clipped_norm_moments(norms=dist.rvs(size=200_000, random_state=np.random.default_rng(3)), clip_norm=C)
    assert isinstance(est, NormMoments)
    for name in ("mean_clip_factor", "clip_fraction", "clipped_second_moment"):
        assert abs(getattr(est, name) - getattr(exact, name)) <= K_SE * getattr(est, name + "_se")
    if math.isfinite(dist.var()):
        assert abs(est.mean_excess - exact.mean_excess) <= K_SE * est.mean_excess_se
    elif not math.isfinite(dist.mean()):  # half-Cauchy: E R = ∞ so E(R − C)₊ = ∞
        assert exact.mean_excess == math.inf


def test_norm_moments_invalid():
    with pytest.raises(ValueError, match="norms"):
        clipped_norm_moments(norms=[-1.0, 2.0], clip_norm=1.0)
    with pytest.raises(ValueError, match="norms"):
        clipped_norm_moments(norms=stats.norm(), clip_norm=1.0)
    with pytest.raises(ValueError, match="clip_norm"):
        clipped_norm_moments(norms=[1.0], clip_norm=-1.0)
