"""Tests for dptheory.clipping_bias: bias bounds, descent under symmetric noise, stalling examples.

The bounds are deterministic inequalities on any distribution, the empirical one included, so the
property tests below check them exactly (up to float rounding, 1e-12 relative) on samples from many
families — a wrong bias or bound formula makes them fail. Monte Carlo comparisons use K_SE = 5
standard errors (false-alarm rate 6e-7 per check) with fixed seeds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dptheory.clipping import clip, clipped_gaussian_mean_factor, gaussian_mean_excess
from dptheory.clipping_bias import (
    chen_example2_clipped_gradient,
    clipped_gradient_inner_product,
    clipping_bias_gaussian,
    clipping_bias_samples,
    stochastic_bias_example,
    two_point_clipped_fixed_point,
)

K_SE = 5.0
FAMILIES = ["gaussian", "mixture", "shifted_exp", "student_t", "cauchy", "point", "zero", "rank1", "lognormal_scale"]


def draw(family: str, n: int, d: int, scale: float, seed: int) -> np.ndarray:
    """n samples in R^d from one of several families (symmetric, asymmetric, heavy-tailed, degenerate)."""
    rng = np.random.default_rng(seed)
    shift = rng.normal(size=d) * scale
    if family == "gaussian":
        return shift + scale * rng.standard_normal((n, d))
    if family == "mixture":  # two well-separated Gaussian clusters with unequal weights
        comp = rng.random(n) < 0.2
        return np.where(comp[:, None], shift * 5, -shift) + 0.3 * scale * rng.standard_normal((n, d))
    if family == "shifted_exp":  # asymmetric, skewed
        return rng.exponential(scale, (n, d)) - 0.2 * scale
    if family == "student_t":  # heavy tails, df in (1, 3)
        return shift + scale * rng.standard_t(1.0 + 2.0 * rng.random(), (n, d))
    if family == "cauchy":
        return scale * rng.standard_cauchy((n, d))
    if family == "point":
        return np.tile(shift, (n, 1))
    if family == "zero":
        return np.zeros((n, d))
    if family == "rank1":
        return rng.standard_normal(n)[:, None] * scale * 3 * rng.normal(size=d)[None, :]
    if family == "lognormal_scale":  # random radii over many orders of magnitude, random directions
        u = rng.standard_normal((n, d))
        return u / np.linalg.norm(u, axis=1, keepdims=True) * rng.lognormal(0, 2, (n, 1)) * scale
    raise AssertionError(family)


# ----------------------------------------------------------------------------- bias bounds on samples


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    family=st.sampled_from(FAMILIES),
    n=st.integers(1, 300),
    d=st.integers(1, 12),
    scale=st.floats(1e-3, 1e3),
    C=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**31),
)
def test_bias_bounds_hold_on_every_empirical_distribution(family, n, d, scale, C, seed):
    g = draw(family, n, d, scale, seed)
    b = clipping_bias_samples(samples=g, clip_norm=C)
    tol = 1e-12 * (np.mean(np.linalg.norm(g, axis=1)) + C)
    assert b.bias_norm <= b.bias_bound + tol  # ‖E clip g − E g‖ ≤ E(‖g‖ − C)₊
    assert b.clipped_mean_norm <= b.clipped_norm_mean + tol  # ‖E clip g‖ ≤ E min(‖g‖, C)
    assert b.clipped_norm_mean <= C * (1 + 1e-12)  # ≤ C
    # sanity of the two sides: E min(‖g‖, C) + E(‖g‖ − C)₊ = E‖g‖
    mean_norm = np.mean(np.linalg.norm(g, axis=1))
    assert b.clipped_norm_mean + b.bias_bound == pytest.approx(mean_norm, rel=1e-12, abs=1e-300)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(n=st.integers(1, 200), d=st.integers(1, 8), C=st.floats(1e-2, 1e2), seed=st.integers(0, 2**31))
def test_bias_bound_is_tight_for_aligned_samples(n, d, C, seed):
    # g_i = t_i u with t_i ≥ 0: every clip error points along −u, so the triangle inequality is equality.
    rng = np.random.default_rng(seed)
    u = rng.normal(size=d)
    g = rng.exponential(2 * C, n)[:, None] * u / np.linalg.norm(u)
    b = clipping_bias_samples(samples=g, clip_norm=C)
    assert b.bias_norm == pytest.approx(b.bias_bound, rel=1e-12, abs=1e-14 * C)
    assert b.clipped_mean_norm == pytest.approx(b.clipped_norm_mean, rel=1e-12, abs=1e-14 * C)


def test_bias_samples_limits_and_errors():
    g = draw("gaussian", 50, 3, 1.0, 0)
    b = clipping_bias_samples(samples=g, clip_norm=math.inf)
    assert b.bias_norm == 0.0 and b.bias_bound == 0.0
    z = clipping_bias_samples(samples=np.zeros((5, 2)), clip_norm=1.0)
    assert z.bias_norm == z.bias_bound == z.clipped_mean_norm == 0.0
    s = clipping_bias_samples(samples=[3.0, -1.0], clip_norm=1.0)  # d = 1 scalars
    assert s.bias_norm == pytest.approx(1.0) and s.bias_bound == pytest.approx(1.0)
    with pytest.raises(ValueError, match="samples"):
        clipping_bias_samples(samples=np.zeros((0, 2)), clip_norm=1.0)
    with pytest.raises(ValueError, match="clip_norm"):
        clipping_bias_samples(samples=g, clip_norm=-1.0)


# ----------------------------------------------------------------------------- Gaussian, exact


@pytest.mark.parametrize("d,m,s,C", [(1, 1.0, 1.0, 0.5), (10, 1.0, 1.0, 1.0), (50, 3.0, 1.0, 2.0), (5, 2.0, 0.5, 1.0)])
def test_gaussian_bias_against_monte_carlo(d, m, s, C):
    # (parameters chosen so that every event contributes at a rate the 1e5 samples can see: at
    # m = 4, s = 0.5, C = 1 one has P(‖g‖ < C) ≈ 3e-12, the sample SE of min(‖g‖, C) is 0 and the
    # exact 1 − 3.3e-12 cannot be resolved)
    exact = clipping_bias_gaussian(dim=d, mean_norm=m, std=s, clip_norm=C)
    assert exact.bias_norm <= exact.bias_bound and exact.clipped_mean_norm <= exact.clipped_norm_mean <= C
    n = 100_000
    rng = np.random.default_rng(d)
    g = s * rng.standard_normal((n, d))
    g[:, 0] += m
    norms = np.linalg.norm(g, axis=1)
    # bias along μ: E[g₁ − clip(g)₁] = (1 − γ) m; other coordinates have mean 0 (tested in test_clipping)
    diff = g[:, 0] - clip(g, clip_norm=C)[:, 0]
    assert abs(diff.mean() - exact.bias_norm) <= K_SE * diff.std(ddof=1) / math.sqrt(n)
    exc = np.maximum(norms - C, 0.0)
    assert abs(exc.mean() - exact.bias_bound) <= K_SE * exc.std(ddof=1) / math.sqrt(n)
    mn = np.minimum(norms, C)
    assert abs(mn.mean() - exact.clipped_norm_mean) <= K_SE * mn.std(ddof=1) / math.sqrt(n)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(d=st.integers(1, 500), m=st.floats(0.0, 30.0), s=st.floats(0.01, 5.0), C=st.floats(0.01, 50.0))
def test_gaussian_bias_bounds_exact(d, m, s, C):
    b = clipping_bias_gaussian(dim=d, mean_norm=m, std=s, clip_norm=C)
    scale = m + s * math.sqrt(d) + C
    assert b.bias_norm <= b.bias_bound + 1e-12 * scale
    assert b.clipped_mean_norm <= b.clipped_norm_mean + 1e-12 * scale <= C + 2e-12 * scale


# ----------------------------------------------------------------------------- descent under symmetric noise


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    family=st.sampled_from(FAMILIES),
    n=st.integers(1, 200),
    d=st.integers(1, 10),
    scale=st.floats(1e-2, 1e2),
    grad_scale=st.floats(1e-3, 1e2),
    C=st.floats(1e-2, 1e2),
    seed=st.integers(0, 2**31),
)
def test_symmetrised_noise_gives_descent_direction(family, n, d, scale, grad_scale, C, seed):
    xi = draw(family, n, d, scale, seed)
    grad = np.random.default_rng(seed + 1).normal(size=d) * grad_scale
    ip = clipped_gradient_inner_product(grad=grad, noise=xi, clip_norm=C, symmetrize=True)
    assert ip >= -1e-12 * C * np.linalg.norm(grad)


def test_asymmetric_noise_can_point_uphill():
    # Two-point mean-zero noise (weights ¼, ¾ as an exact empirical law): between the optimum 0 and
    # the clipped fixed point x* the expected clipped gradient has the wrong sign.
    sigma, C = 1.0, 0.5
    a, b = sigma * math.sqrt(3.0), sigma / math.sqrt(3.0)
    noise = np.array([[a], [-b], [-b], [-b]])
    assert noise.mean() == pytest.approx(0.0, abs=1e-15) and (noise**2).mean() == pytest.approx(sigma**2)
    xstar = two_point_clipped_fixed_point(sample_std=sigma, clip_norm=C, prob=0.25)
    x = np.array([xstar / 2])
    assert clipped_gradient_inner_product(grad=x, noise=noise, clip_norm=C) < 0
    assert clipped_gradient_inner_product(grad=x, noise=noise, clip_norm=C, symmetrize=True) > 0
    with pytest.raises(ValueError, match="columns"):
        clipped_gradient_inner_product(grad=[1.0, 2.0], noise=noise, clip_norm=C)


# ----------------------------------------------------------------------------- Chen et al. Example 2


def test_chen_example2_stalls_on_whole_interval():
    # arXiv 2006.15429v2, Example 2: a = ±3, C = 1 ⇒ expected clipped gradient 0 on [−2, 2].
    xs = np.linspace(-2.0, 2.0, 401)
    np.testing.assert_array_equal(chen_example2_clipped_gradient(xs), 0.0)
    # piecewise closed form outside: (x − 2)/2 on [2, 4], 1 beyond, odd symmetry
    right = np.linspace(2.0, 6.0, 81)
    expected = np.where(right <= 4.0, (right - 2.0) / 2.0, 1.0)
    np.testing.assert_allclose(chen_example2_clipped_gradient(right), expected, rtol=0, atol=1e-15)
    np.testing.assert_allclose(chen_example2_clipped_gradient(-right), -expected, rtol=0, atol=1e-15)
    # without clipping it is the true gradient f'(x) = x, zero only at the minimiser
    np.testing.assert_allclose(chen_example2_clipped_gradient(xs, clip_norm=math.inf), xs, atol=1e-15)
    # the noise ±3 around the gradient x is symmetric: the descent inner product is ≥ 0, here = 0
    for x0 in (0.5, 1.0, 2.0):
        ip = clipped_gradient_inner_product(grad=[x0], noise=[[3.0], [-3.0]], clip_norm=1.0)
        assert ip == 0.0
        assert ip == x0 * chen_example2_clipped_gradient(x0)
    # clipped GD started at 1.5 never moves; unclipped GD converges to 0
    x_clip, x_gd = 1.5, 1.5
    for _ in range(200):
        x_clip -= 0.1 * chen_example2_clipped_gradient(x_clip)
        x_gd -= 0.1 * chen_example2_clipped_gradient(x_gd, clip_norm=math.inf)
    assert x_clip == 1.5 and abs(x_gd) < 1e-8


# ----------------------------------------------------------------------------- stochastic-bias example


@settings(max_examples=80, deadline=None, derandomize=True)
@given(sigma=st.floats(1e-3, 1e3), ratio=st.floats(1e-3, 1e3), p=st.floats(0.01, 0.99))
def test_two_point_fixed_point_is_a_root(sigma, ratio, p):
    C = sigma * ratio
    x = two_point_clipped_fixed_point(sample_std=sigma, clip_norm=C, prob=p)
    a, b = sigma * math.sqrt((1 - p) / p), sigma * math.sqrt(p / (1 - p))

    def h(y):  # expected clipped gradient, evaluated with the clip operator itself
        return p * float(clip(y + a, clip_norm=C)) + (1 - p) * float(clip(y - b, clip_norm=C))

    scale = a + b + C
    assert abs(h(x)) <= 1e-12 * scale
    assert h(x - 1e-6 * scale) <= 1e-12 * scale <= h(x + 1e-6 * scale) + 2e-12 * scale  # a sign change


def test_two_point_closed_forms_and_plateau():
    # C < σ, p = 1/4: x* = σ/√3 − C/3; p = ½, σ > C: zero set [C − σ, σ − C], smallest root returned.
    assert two_point_clipped_fixed_point(sample_std=2.0, clip_norm=0.5, prob=0.25) == pytest.approx(
        2.0 / math.sqrt(3) - 0.5 / 3, rel=1e-14
    )
    assert two_point_clipped_fixed_point(sample_std=2.0, clip_norm=0.5, prob=0.5) == pytest.approx(-1.5, rel=1e-14)
    # same at a plateau edge that rounding puts just outside its piece (found by a random search)
    assert two_point_clipped_fixed_point(sample_std=1.0, clip_norm=0.01, prob=0.5) == pytest.approx(-0.99, rel=1e-14)
    with pytest.raises(ValueError, match="prob"):
        two_point_clipped_fixed_point(sample_std=1.0, clip_norm=1.0, prob=1.0)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(sigma=st.floats(1e-3, 1e3), ratio=st.floats(1e-3, 1e3))
def test_stochastic_bias_is_order_min_sigma_sigma2_over_c(sigma, ratio):
    C = sigma * ratio
    e = stochastic_bias_example(sample_std=sigma, clip_norm=C)
    assert e.lower_bound * (1 - 1e-12) <= e.bias <= e.upper_bound * (1 + 1e-12)
    assert e.lower_bound == pytest.approx((math.sqrt(3) - 1) / 3 * min(sigma, sigma**2 / C), rel=1e-14)
    if ratio >= 100:  # sharp constant: bias → σ²/(4C), relative deficit p²/4 = σ⁴/(64 C⁴)
        assert e.bias == pytest.approx(sigma**2 / (4 * C), rel=1e-8)


def test_clipped_sgd_settles_at_the_biased_fixed_point():
    # Simulate clipped SGD on f(x) = x²/2 from the optimum x = 0 with the two-point noise; the chains'
    # stationary mean is x* (h is linear near x*, so E h(x) = h(E x) = 0), not 0. Unclipped SGD stays
    # centred at 0. 4000 independent chains, mean at the last step, tolerance K_SE standard errors.
    sigma, C, p, lr, steps, chains = 1.0, 0.5, 0.25, 0.01, 1500, 4000
    xstar = two_point_clipped_fixed_point(sample_std=sigma, clip_norm=C, prob=p)
    a, b = sigma * math.sqrt((1 - p) / p), sigma * math.sqrt(p / (1 - p))
    rng = np.random.default_rng(11)
    x_clip = np.zeros(chains)
    x_sgd = np.zeros(chains)
    for _ in range(steps):  # relaxation time 1/(lr (1 − p)) ≈ 133 steps; 1500 ≈ 11 relaxation times
        xi = np.where(rng.random(chains) < p, a, -b)
        x_clip -= lr * np.clip(x_clip + xi, -C, C)
        x_sgd -= lr * (x_sgd + xi)
    se = x_clip.std(ddof=1) / math.sqrt(chains)
    assert abs(x_clip.mean() - xstar) <= K_SE * se
    assert x_clip.mean() > 50 * se  # far from the true optimum 0
    assert abs(x_sgd.mean()) <= K_SE * x_sgd.std(ddof=1) / math.sqrt(chains)
    # gradient norm at the fixed point vs the universal upper bound (x*² + σ²)/(4C)
    assert abs(xstar) <= (xstar**2 + sigma**2) / (4 * C)


def test_gaussian_bias_zero_without_clipping_and_deterministic():
    b = clipping_bias_gaussian(dim=4, mean_norm=2.0, std=1.0, clip_norm=math.inf)
    assert b.bias_norm == 0.0 and b.bias_bound == 0.0
    det = clipping_bias_gaussian(dim=4, mean_norm=3.0, std=0.0, clip_norm=1.0)
    assert det.bias_norm == pytest.approx(2.0) and det.bias_bound == pytest.approx(2.0)  # tight for a point mass
    assert gaussian_mean_excess(dim=4, mean_norm=3.0, std=0.0, clip_norm=1.0) == 2.0
    assert clipped_gaussian_mean_factor(dim=4, mean_norm=3.0, std=0.0, clip_norm=1.0) == pytest.approx(1 / 3)
