"""Numba kernel = plain-numpy twin on identical noise; the step's closed-form limits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulations.basin import kernels, kernels_numpy
from simulations.basin import rng as basin_rng


def _orthonormal(d, r, rng):
    q, _ = np.linalg.qr(rng.standard_normal((d, r)))
    return q


@st.composite
def step_cases(draw):
    d = draw(st.integers(1, 12))
    r = draw(st.integers(1, d))
    b_max = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    case = dict(
        error=rng.standard_normal(d) * draw(st.sampled_from([0.0, 0.1, 1.0, 10.0])),
        zeta=rng.standard_normal((b_max, d)),
        xi=rng.standard_normal(d),
        batch_n=draw(st.integers(0, b_max)),
        curvatures=rng.uniform(0.1, 3.0, size=r),
        flat_curvature=draw(st.sampled_from([0.0, 0.0, 0.4])),
        basis=_orthonormal(d, r, rng) if draw(st.booleans()) else None,
        mask=(rng.random(d) < 0.7) if draw(st.booleans()) else None,
        sample_std=draw(st.sampled_from([0.0, 0.3, 1.0, 5.0])),
        clip_norm=draw(st.sampled_from([math.inf, 1e-3, 0.5, 2.0, 1e3])),
        noise_std=draw(st.sampled_from([0.0, 0.7, 3.0])),
        lr=draw(st.floats(0.01, 1.5)),
        batch_size=draw(st.integers(1, 6)),
    )
    return case


@settings(max_examples=150, deadline=None)
@given(step_cases())
def test_kernel_step_equals_numpy_twin(case):
    e1, n1, f1, b1 = kernels.full_step(**case)
    e2, n2, f2, b2 = kernels_numpy.full_step(**case)
    scale = 1.0 + np.max(np.abs(e2))
    np.testing.assert_allclose(e1, e2, rtol=1e-12, atol=1e-12 * scale)
    assert n1 == n2
    assert f1 == pytest.approx(f2, rel=1e-12, abs=1e-12)
    assert b1 == pytest.approx(b2, rel=1e-10, abs=1e-12 * scale)


@settings(max_examples=60, deadline=None)
@given(step_cases())
def test_unclipped_step_is_plain_sgd(case):
    """C = ∞: e_K ← e_K − η/B [B_t (He)_K + s Σ ζ_K + ν ξ_K], written out with the explicit matrix H."""
    case = dict(case, clip_norm=math.inf)
    d = case["error"].shape[0]
    lam = np.asarray(case["curvatures"])
    v = np.eye(d, lam.size) if case["basis"] is None else case["basis"]
    h = case["flat_curvature"] * (np.eye(d) - v @ v.T) + v @ np.diag(lam) @ v.T
    keep = np.ones(d, bool) if case["mask"] is None else case["mask"]
    bn = case["batch_n"]
    expect = case["error"].copy()
    grad_sum = bn * (h @ case["error"]) + case["sample_std"] * case["zeta"][:bn].sum(axis=0)
    expect[keep] -= case["lr"] / case["batch_size"] * (grad_sum + case["noise_std"] * case["xi"])[keep]
    e1, n_clip, sum_f, bias = kernels.full_step(**case)
    np.testing.assert_allclose(e1, expect, rtol=1e-11, atol=1e-11 * (1 + np.abs(expect).max()))
    assert n_clip == 0 and sum_f == bn and bias == 0.0


@settings(max_examples=60, deadline=None)
@given(step_cases())
def test_clipped_sum_is_bounded_and_bias_matches_overshoot(case):
    """‖Σ clip_C(g_i)‖ ≤ B_t C, and with one sample ‖clip(g) − g‖ = (‖g‖ − C)₊."""
    case = dict(case, noise_std=0.0, batch_n=min(case["batch_n"], 1))
    if not math.isfinite(case["clip_norm"]):
        case["clip_norm"] = 1.0
    d = case["error"].shape[0]
    keep = np.ones(d, bool) if case["mask"] is None else case["mask"]
    e1, _, _, bias = kernels.full_step(**case)
    step = (case["error"] - e1) * case["batch_size"] / case["lr"]
    # the step is recovered from e − e' (rounding of e: ~eps |e| per coordinate, scaled by B/η)
    rounding = (
        8 * np.finfo(float).eps * (1 + np.abs(case["error"]).max()) * math.sqrt(d) * case["batch_size"] / case["lr"]
    )
    assert np.linalg.norm(step) <= case["batch_n"] * case["clip_norm"] * (1 + 1e-12) + rounding
    if case["batch_n"] == 1:
        he = kernels_numpy.hessian_times(case["error"], case["curvatures"], case["flat_curvature"], case["basis"])
        g = (he + case["sample_std"] * case["zeta"][0])[keep]
        over = max(np.linalg.norm(g) - case["clip_norm"], 0.0)
        assert bias * case["batch_size"] == pytest.approx(over, rel=1e-10, abs=1e-12)


def test_basin_losses_against_explicit_projection():
    rng = np.random.default_rng(3)
    d, r = 9, 3
    v = _orthonormal(d, r, rng)
    lam = np.array([2.0, 1.0, 0.5])
    e = rng.standard_normal(d)
    energy, curved, flat = kernels.basin_losses(e, lam, 0.0, np.ascontiguousarray(v.T))
    p = v.T @ e
    assert energy == pytest.approx(0.5 * np.sum(lam * p * p), rel=1e-13)
    assert curved == pytest.approx(p @ p, rel=1e-13)
    assert flat == pytest.approx(e @ e - p @ p, rel=1e-12)
    # axis-aligned fast path
    energy, curved, flat = kernels.basin_losses(e, lam, 0.0, np.zeros((0, d)))
    assert energy == pytest.approx(0.5 * np.sum(lam * e[:r] ** 2), rel=1e-13)
    assert flat == pytest.approx(np.sum(e[r:] ** 2), rel=1e-13)


def test_full_step_rejects_bad_noise_shapes():
    with pytest.raises(ValueError, match="zeta"):
        kernels.full_step(
            error=np.ones(3),
            zeta=np.zeros((1, 2)),
            xi=np.zeros(3),
            batch_n=1,
            curvatures=(1.0,),
            sample_std=1.0,
            lr=0.1,
            batch_size=1,
        )
    with pytest.raises(ValueError, match="xi"):
        kernels.full_step(
            error=np.ones(3),
            zeta=np.zeros((1, 3)),
            xi=np.zeros(2),
            batch_n=1,
            curvatures=(1.0,),
            sample_std=1.0,
            lr=0.1,
            batch_size=1,
        )


def test_ziggurat_generator_is_standard_normal():
    """KS against N(0, 1) on 10⁶ draws (α = 1e-3), and the two slow exact paths: the tail beyond
    r = 3.6541528853610088 has probability 2Φ(−r) = 2.58e-4 (count within 4 Poisson SE) and, given
    |x| > r, |x| − r follows the normal tail law (KS)."""
    from scipy import stats

    x = basin_rng.standard_normal(size=1_000_000, seed=123)
    assert stats.kstest(x, stats.norm.cdf).pvalue > 1e-3
    r = 3.6541528853610088
    tail = np.abs(x[np.abs(x) > r])
    expected = x.size * 2 * stats.norm.sf(r)
    assert abs(tail.size - expected) <= 4 * math.sqrt(expected)
    assert stats.kstest(tail, lambda t: 1 - stats.norm.sf(t) / stats.norm.sf(r)).pvalue > 1e-3
    assert abs(np.mean(x**4) - 3) <= 4 * math.sqrt(96 / x.size)  # Var(x⁴) = 105 − 9 = 96
    np.testing.assert_array_equal(x[:10], basin_rng.standard_normal(size=10, seed=123))
