"""Magnitude pruning (dptheory.pruning): Schur-complement bias vs brute-force minimisation, the
bias + variance split against a Monte Carlo of DP-SGD on the pruned weights, and claim 4's condition.

Monte Carlo tolerance as in test_clipped_dynamics.py: |MC − theory| ≤ 5 % (the mean-field model's
stated accuracy) + K·SE, K = 4, SE from independent replicas' time averages (batch means).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize

from dptheory import pruning as pr
from dptheory.records import Optimizer

K_SE = 4.0
MODEL_TOL = 0.05


def dense_hessian(lam, u):
    return (u * np.asarray(lam)) @ u.T


# ---------------------------------------------------------------------------------------------
# bias: Schur complement = brute-force minimum
# ---------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    d=st.integers(2, 8),
    r_frac=st.floats(0.1, 1.0),
    seed=st.integers(0, 10_000),
    basis=st.sampled_from(["aligned", "rotated"]),
)
def test_bias_equals_brute_force_minimisation(d, r_frac, seed, basis):
    rng = np.random.default_rng(seed)
    r = max(1, round(r_frac * d))
    lam = rng.uniform(0.2, 3.0, r)
    u = pr.curvature_basis(dim=d, rank=r, basis=basis, seed=seed)
    w_star = rng.standard_normal(d)
    keep = rng.random(d) < 0.5
    h = dense_hessian(lam, u)

    def loss(wk):
        w = np.zeros(d)
        w[keep] = wk
        e = w - w_star
        return 0.5 * e @ h @ e

    if keep.any():
        res = optimize.minimize(
            loss,
            np.zeros(keep.sum()),
            method="BFGS",
            jac=lambda wk: (h @ (np.where(keep, 0, 0) + _embed(wk, keep, d) - w_star))[keep],
            options={"gtol": 1e-12},
        )
        brute = res.fun
    else:
        brute = loss(np.zeros(0))
    bias = pr.pruning_bias(curvatures=lam, basis=u, optimum=w_star, mask=keep)
    assert bias == pytest.approx(brute, rel=1e-6, abs=1e-9)
    # and the dense Schur form with a pseudo-inverse
    k, p = keep, ~keep
    schur = h[np.ix_(p, p)] - h[np.ix_(p, k)] @ np.linalg.pinv(h[np.ix_(k, k)]) @ h[np.ix_(k, p)]
    assert bias == pytest.approx(0.5 * w_star[p] @ schur @ w_star[p], rel=1e-8, abs=1e-10)


def _embed(wk, keep, d):
    w = np.zeros(d)
    w[keep] = wk
    return w


def test_bias_limits_keep_all_keep_none_and_aligned_formula():
    rng = np.random.default_rng(0)
    lam = np.array([2.0, 1.0, 0.5])
    w_star = rng.standard_normal(10)
    for basis in ("aligned", "rotated"):
        u = pr.curvature_basis(dim=10, rank=3, basis=basis, seed=1)
        assert pr.pruning_bias(curvatures=lam, basis=u, optimum=w_star, mask=np.ones(10, bool)) == 0.0
        none = pr.pruning_bias(curvatures=lam, basis=u, optimum=w_star, mask=np.zeros(10, bool))
        assert none == pytest.approx(0.5 * w_star @ dense_hessian(lam, u) @ w_star, rel=1e-12)
    u = pr.curvature_basis(dim=10, rank=3)
    keep = np.array([True, False, False] + [True] * 7)  # prune curved axes 1 and 2
    expected = 0.5 * (lam[1] * w_star[1] ** 2 + lam[2] * w_star[2] ** 2)
    assert pr.pruning_bias(curvatures=lam, basis=u, optimum=w_star, mask=keep) == pytest.approx(expected, rel=1e-12)
    # pruning only flat coordinates of the aligned basin costs nothing
    keep_flat_pruned = np.array([True] * 3 + [False] * 7)
    assert pr.pruning_bias(curvatures=lam, basis=u, optimum=w_star, mask=keep_flat_pruned) == 0.0


def test_restricted_curvatures_aligned_and_rotated():
    lam = np.array([3.0, 2.0, 1.0])
    u = pr.curvature_basis(dim=8, rank=3)
    keep = np.array([True, False, True, True, False, False, False, True])
    np.testing.assert_allclose(pr.restricted_curvatures(curvatures=lam, basis=u, mask=keep), [3.0, 1.0])
    ur = pr.curvature_basis(dim=8, rank=3, basis="rotated", seed=3)
    ev = pr.restricted_curvatures(curvatures=lam, basis=ur, mask=keep)
    h = dense_hessian(lam, ur)[np.ix_(keep, keep)]
    np.testing.assert_allclose(np.sort(ev), np.sort(np.linalg.eigvalsh(h))[-ev.size :], rtol=1e-10)
    assert ev.sum() == pytest.approx(np.trace(h), rel=1e-12)


def test_rotated_basis_is_orthonormal_and_seeded():
    a = pr.curvature_basis(dim=50, rank=4, basis="rotated", seed=7)
    b = pr.curvature_basis(dim=50, rank=4, basis="rotated", seed=7)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a.T @ a, np.eye(4), atol=1e-12)


# ---------------------------------------------------------------------------------------------
# masks
# ---------------------------------------------------------------------------------------------


def test_masks_select_largest_magnitudes_and_carry_privacy_labels():
    w = np.array([0.1, -5.0, 3.0, 0.0, -2.0])
    m = pr.oracle_mask(optimum=w, keep=3)
    assert m.keep.tolist() == [False, True, True, False, True]
    assert "NOT private" in m.privacy
    assert "free" in pr.init_mask(init=w, keep=2).privacy
    noisy = pr.noisy_mask(optimum=w, keep=3, noise_std=0.0, seed=0, epsilon=2.0, delta=1e-5)
    assert noisy.keep.tolist() == m.keep.tolist() and "epsilon=2" in noisy.privacy
    assert "NOT accounted" in pr.noisy_mask(optimum=w, keep=3, noise_std=1.0, seed=0).privacy
    # large noise: the mask is nearly random; it still keeps exactly k
    assert pr.noisy_mask(optimum=w, keep=3, noise_std=100.0, seed=1).keep.sum() == 3


def test_optimum_profiles():
    w = pr.optimum_profile(dim=20, rank=3, profile="sparse", nonzeros=4, placement="curved", seed=0)
    assert np.flatnonzero(w).tolist() == [0, 1, 2, 3]
    w = pr.optimum_profile(dim=20, rank=3, profile="sparse", nonzeros=4, placement="flat", seed=0)
    assert np.flatnonzero(w).tolist() == [3, 4, 5, 6]
    w = pr.optimum_profile(dim=20, rank=3, profile="power-law", exponent=1.5, placement="curved", seed=0)
    np.testing.assert_allclose(np.abs(w), np.arange(1, 21) ** -1.5)


# ---------------------------------------------------------------------------------------------
# pruned loss: Monte Carlo of DP-SGD on the kept weights
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("basis", ["aligned", "rotated"])
def test_pruned_excess_loss_matches_monte_carlo(basis):
    d, r, k = 40, 2, 12
    lam = np.array([1.0, 0.6])
    u = pr.curvature_basis(dim=d, rank=r, basis=basis, seed=5)
    w_star = pr.optimum_profile(dim=d, rank=r, profile="power-law", exponent=0.7, placement="random", seed=2)
    w_star[0], w_star[1] = 3.0, 0.1  # aligned: curved axis 0 kept, curved axis 1 pruned (bias ½·0.6·0.01)
    mask = pr.oracle_mask(optimum=w_star, keep=k).keep
    s, b = 1.0, 16
    ev = pr.restricted_curvatures(curvatures=lam, basis=u, mask=mask)
    clip = 0.5 * s * math.sqrt(k)  # partly clipped in the k kept coordinates
    gamma_guess = 0.5
    lr = 0.5 / (gamma_guess * ev.max())
    opt = Optimizer(lr=lr, batch_size=b, clip_norm=clip, noise_multiplier=1.0)
    pred = pr.pruned_excess_loss(curvatures=lam, basis=u, optimum=w_star, mask=mask, sample_std=s, optimizer=opt)
    assert pred.bias > 0 and pred.variance > 0

    # independent simulation in weight space: w_P = 0, per-sample g_K = (H(w − w*))_K + s ζ_K
    h = dense_hessian(lam, u)
    hk = h[np.ix_(mask, mask)]
    lin = (h @ _embed(np.zeros(k), mask, d) - h @ w_star)[mask]  # gradient at w_K = 0
    reps = 256
    rng = np.random.default_rng(17)
    wk, *_ = np.linalg.lstsq(hk, -lin, rcond=None)  # start at the restricted optimum
    wk = np.tile(wk, (reps, 1))
    relax = 1.0 / (lr * gamma_guess * ev.min())
    burn, steps = int(5 * relax), int(60 * relax)
    acc = np.zeros(reps)
    nu = opt.noise_std
    for t in range(burn + steps):
        g = (wk @ hk + lin)[:, None, :] + s * rng.standard_normal((reps, b, k))
        phi = np.minimum(1.0, clip / np.linalg.norm(g, axis=2))
        wk = wk - lr / b * (np.einsum("rb,rbi->ri", phi, g) + nu * rng.standard_normal((reps, k)))
        if t >= burn:
            full = np.zeros((reps, d))
            full[:, mask] = wk
            err = full - w_star
            acc += 0.5 * np.einsum("ri,ij,rj->r", err, h, err)
    est = acc / steps
    mean, se = est.mean(), est.std(ddof=1) / math.sqrt(reps)
    assert se < 0.01 * pred.total
    assert abs(mean - pred.total) <= MODEL_TOL * pred.total + K_SE * se, (mean, se, pred)


# ---------------------------------------------------------------------------------------------
# claim 4: when pruning helps, and the optimal keep fraction
# ---------------------------------------------------------------------------------------------

DP_OPT = Optimizer(lr=1.0, batch_size=64, clip_norm=0.1, noise_multiplier=4.0)


def test_pruning_helps_when_basin_aligned_with_large_weights():
    from dptheory.clipped_dynamics import stationary_excess_loss
    from dptheory.records import Basin

    d, r = 400, 2
    lam = [1.0, 0.5]
    w_star = pr.optimum_profile(dim=d, rank=r, profile="sparse", nonzeros=r, placement="curved", seed=0)
    verdict = pr.pruning_helps(
        curvatures=lam, basis=pr.curvature_basis(dim=d, rank=r), optimum=w_star, sample_std=1.0, optimizer=DP_OPT
    )
    assert verdict.helps and verdict.best_bias == 0.0
    # Fully clipped, the restricted loss is ∝ C s (1/(√k B) + σ²√k/B²) (clip noise C²/(kB) per
    # coordinate + DP noise): minimal at k* = B/σ² = 4, not at k = r. The exact model's optimum must
    # sit within a factor 2 of that closed form (Jensen and ηγλ corrections at tiny k).
    kstar = DP_OPT.batch_size / DP_OPT.noise_multiplier**2
    assert kstar / 2 <= verdict.best_keep <= 2 * kstar
    # the pruned problem is exactly the k-dimensional basin; the unpruned one the d-dimensional basin
    small = stationary_excess_loss(
        basin=Basin(dim=verdict.best_keep, curvatures=(1.0, 0.5), sample_std=1.0), optimizer=DP_OPT
    )
    big = stationary_excess_loss(basin=Basin(dim=d, curvatures=(1.0, 0.5), sample_std=1.0), optimizer=DP_OPT)
    assert verdict.best_loss == pytest.approx(small, rel=1e-12) and verdict.full_loss == pytest.approx(big, rel=1e-12)
    # large weights OFF the curved axes, curved w* nonzero: the oracle mask prunes curved weights → bias
    w_off = pr.optimum_profile(dim=d, rank=r, profile="power-law", exponent=0.0, placement="random", seed=1)
    w_off[:r] = 0.05  # the curved weights are the smallest
    c = pr.keep_curve(
        curvatures=lam,
        basis=pr.curvature_basis(dim=d, rank=r),
        optimum=w_off,
        sample_std=1.0,
        optimizer=DP_OPT,
        keeps=[d - r],
    )
    assert c.bias[0] == pytest.approx(0.5 * (1.0 + 0.5) * 0.05**2, rel=1e-12)


def test_rotated_basin_training_bias_vanishes_once_k_exceeds_rank_but_heldout_pays():
    # With a generic (rotated) U, any k ≥ r kept weights compensate exactly inside
    # the r curved directions, so the stationary *training* bias is 0; the compensation and the pruned
    # w*_P are errors in the flat directions, which the held-out loss (κ) charges.
    d, r, k = 60, 3, 5
    lam = np.array([1.0, 0.7, 0.4])
    u = pr.curvature_basis(dim=d, rank=r, basis="rotated", seed=2)
    w_star = pr.optimum_profile(dim=d, rank=r, profile="gaussian", seed=5)
    mask = pr.oracle_mask(optimum=w_star, keep=k).keep
    assert pr.pruning_bias(curvatures=lam, basis=u, optimum=w_star, mask=mask) == pytest.approx(0.0, abs=1e-20)
    kappa = 0.3
    out = pr.pruned_excess_loss(
        curvatures=lam,
        basis=u,
        optimum=w_star,
        mask=mask,
        sample_std=1.0,
        optimizer=DP_OPT,
        heldout_flat_curvature=kappa,
    )
    # independent: dense minimum-norm restricted optimum, then the flat part of its error
    h = dense_hessian(lam, u)
    e = np.where(mask, 0.0, -w_star)
    rhs = (h @ (-e))[mask]  # H_KK e_K = −(H e_P-part)_K  ⇔  H_KK e_K = H_KP w*_P
    e[mask] = np.linalg.pinv(h[np.ix_(mask, mask)]) @ rhs
    assert 0.5 * e @ h @ e == pytest.approx(0.0, abs=1e-12 * (w_star @ w_star))
    flat = e - u @ (u.T @ e)
    assert out.heldout_bias == pytest.approx(0.5 * kappa * flat @ flat, rel=1e-9)
    assert out.heldout_bias > 0.5 * kappa * np.sum(w_star[~mask] ** 2) * 0.5  # at least the pruned mass, roughly
    # the restricted curvatures shrink like k/d (conditioning): relaxation far slower than unpruned
    ev = pr.restricted_curvatures(curvatures=lam, basis=u, mask=mask)
    assert ev.sum() == pytest.approx(float(np.sum(lam * np.sum(u[mask] ** 2, axis=0))), rel=1e-12)
    assert ev.max() < 0.5 * lam.max()


def test_keep_all_heldout_walk_equals_clipped_dynamics_heldout_loss():
    from dptheory.clipped_dynamics import heldout_excess_loss
    from dptheory.records import Basin

    d, kappa, steps = 200, 0.2, 500
    u = pr.curvature_basis(dim=d, rank=2)
    w = pr.optimum_profile(dim=d, rank=2, profile="gaussian", seed=0)
    out = pr.pruned_excess_loss(
        curvatures=[1.0, 0.5],
        basis=u,
        optimum=w,
        mask=np.ones(d, bool),
        sample_std=1.0,
        optimizer=DP_OPT,
        heldout_flat_curvature=kappa,
        steps=steps,
    )
    ref = heldout_excess_loss(
        basin=Basin(dim=d, curvatures=(1.0, 0.5), sample_std=1.0, heldout_flat_curvature=kappa),
        optimizer=DP_OPT,
        steps=steps,
    )[0]
    assert out.total == pytest.approx(ref, rel=1e-12)
    assert out.heldout_bias == 0.0 and out.heldout_walk > 0


def test_optimal_keep_fraction_is_a_true_minimum_of_the_predicted_curve():
    # aligned, r = 8 curved axes carrying power-law weights: pruning curved weights costs bias, keeping
    # flat ones costs variance (∝ √k) → interior optimum. d = 250 > 200 uses the grid + refinement path.
    d, r = 250, 8
    u = pr.curvature_basis(dim=d, rank=r)
    w_star = pr.optimum_profile(dim=d, rank=r, profile="power-law", exponent=1.0, scale=0.3, placement="curved", seed=8)
    opt = Optimizer(lr=1.0, batch_size=32, clip_norm=0.2, noise_multiplier=3.0)
    kw = dict(curvatures=[1.0] * r, basis=u, optimum=w_star, sample_std=1.0, optimizer=opt)
    best = pr.optimal_keep_fraction(**kw)
    k_best = round(best * d)
    assert 1 < k_best < r  # interior: bias and variance trade off
    # exhaustive check where the optimum can be: for k ≥ r the bias is 0 and the variance grows with
    # k (more kept flat coordinates), so the curve on 1…40 plus a coarse tail decides the minimum
    grid = np.unique(np.concatenate([np.arange(1, 41), np.geomspace(41, d, 12).round().astype(int)]))
    curve = pr.keep_curve(keeps=grid, **kw)
    assert curve.best_keep == k_best
    assert np.all(np.diff(curve.total[curve.keeps >= r]) > 0)


def test_pruned_loss_of_keep_all_equals_unpruned_stationary_loss():
    from dptheory.clipped_dynamics import stationary_excess_loss
    from dptheory.records import Basin

    lam = [1.0, 0.5]
    for basis in ("aligned", "rotated"):
        u = pr.curvature_basis(dim=300, rank=2, basis=basis, seed=2)
        w = pr.optimum_profile(dim=300, rank=2, profile="gaussian", seed=1)
        out = pr.pruned_excess_loss(
            curvatures=lam, basis=u, optimum=w, mask=np.ones(300, bool), sample_std=1.0, optimizer=DP_OPT
        )
        ref = stationary_excess_loss(basin=Basin(dim=300, curvatures=(1.0, 0.5), sample_std=1.0), optimizer=DP_OPT)
        assert out.bias == 0.0 and out.total == pytest.approx(ref, rel=1e-9)


def test_validation_errors_name_the_argument():
    u = pr.curvature_basis(dim=5, rank=2)
    with pytest.raises(ValueError, match="basis"):
        pr.curvature_basis(dim=5, rank=2, basis="diagonal")
    with pytest.raises(ValueError, match="rank"):
        pr.curvature_basis(dim=2, rank=3)
    with pytest.raises(ValueError, match="mask"):
        pr.pruning_bias(curvatures=[1.0, 1.0], basis=u, optimum=np.ones(5), mask=[1, 0, 1, 0, 1])
    with pytest.raises(ValueError, match="orthonormal"):
        pr.pruning_bias(curvatures=[1.0, 1.0], basis=2 * u, optimum=np.ones(5), mask=np.ones(5, bool))
    with pytest.raises(ValueError, match="keep"):
        pr.magnitude_mask(reference=[1.0, 2.0], keep=3)
    with pytest.raises(ValueError, match="nonzeros"):
        pr.optimum_profile(dim=5, rank=2, profile="sparse")
