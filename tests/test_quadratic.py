"""dptheory.quadratic: exact moments of noisy GD on a quadratic, against independent references.

References used here, none of them the code under test:
* plain numpy Monte Carlo loops of the linear recursion and of the actual DP step of records.py
  (per-sample gradients H e + s ζ_j, fixed batch B, noise ν on the sum), compared within K = 4
  standard errors (SE = sample std / √replicas; with ~10² comparisons per file the chance of a
  false alarm is ≈ 10⁻² at most, and the seeds are fixed so the outcome is deterministic);
* the direct sum Σ_{k<t} ρ^{2k} in 50-digit mpmath arithmetic (stability near ηa = 0, 1, 2);
* scipy.linalg.solve_discrete_lyapunov on the update matrix (general noise covariance);
* deterministic loops for σ = s = 0 and hand-written closed forms for d = 1, r = d, a = 0.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

from dptheory.quadratic import (
    error_moments,
    expected_loss,
    flat_error_sq,
    noise_only_dynamics,
    recovery_time,
    stationary_covariance,
    stationary_loss,
    stationary_loss_general,
)
from dptheory.records import Basin, LinearDynamics, Optimizer

K = 4.0  # standard errors allowed in every Monte Carlo comparison


def _within(estimate, se, predicted, what=""):
    estimate, se, predicted = map(np.asarray, (estimate, se, predicted))
    z = np.abs(estimate - predicted) / np.maximum(se, 1e-300)
    assert np.all(z <= K), f"{what}: max |z| = {z.max():.2f} > {K} (estimate {estimate}, theory {predicted})"


def _mc_linear(dyn: LinearDynamics, e0, f0_coord, steps, replicas, seed):
    """Independent loop of e ← (1 − ηa) e + ητ ξ, curved and flat coordinates (flat start ±f0_coord)."""
    rng = np.random.default_rng(seed)
    a = np.asarray(dyn.drift)
    tau = np.sqrt(np.asarray(dyn.noise_var))
    e = np.tile(np.asarray(e0, float), (replicas, 1))
    ef = np.full((replicas, dyn.flat_dim), f0_coord)
    out = {}
    for t in range(max(steps) + 1):
        if t in steps:
            out[t] = (e.copy(), (ef**2).sum(axis=1))
        e = (1 - dyn.lr * a) * e + dyn.lr * tau * rng.standard_normal(e.shape)
        ef = (1 - dyn.lr * dyn.flat_drift) * ef + dyn.lr * math.sqrt(dyn.flat_noise_var) * rng.standard_normal(ef.shape)
    return out


def _mc_dp_step(basin: Basin, opt: Optimizer, e0, f0_coord, steps, replicas, seed):
    """The records.py step written out: e ← e − (η/B)(Σ_j (H e + s ζ_j) + ν ξ), fixed batch of B."""
    assert not opt.mode.clipped
    rng = np.random.default_rng(seed)
    d, r, b = basin.dim, basin.rank, opt.batch_size
    h = np.concatenate([basin.curvature_array, np.full(d - r, basin.flat_curvature)])
    support = np.ones(d) if basin.spread == "ambient" else np.r_[np.ones(r), np.zeros(d - r)]
    e = np.tile(np.r_[np.asarray(e0, float), np.full(d - r, f0_coord)], (replicas, 1))
    train, test = {}, {}
    for t in range(max(steps) + 1):
        if t in steps:
            lt = 0.5 * (h * e**2).sum(axis=1)
            train[t] = lt
            test[t] = lt + 0.5 * basin.heldout_flat_curvature * (e[:, r:] ** 2).sum(axis=1)
        grads = (h * e)[:, None, :] + basin.sample_std * support * rng.standard_normal((replicas, b, d))
        total = grads.sum(axis=1) + opt.noise_std * rng.standard_normal((replicas, d))
        e = e - opt.lr / b * total
    return train, test


# ------------------------------------------------------------------------------------------------
# noise_only_dynamics: the exact map of the step, checked on the step itself


@pytest.mark.parametrize("spread", ["ambient", "basin"])
@pytest.mark.parametrize("mode", ["sgd", "noise"])
def test_dp_step_monte_carlo_matches_expected_loss(spread, mode):
    basin = Basin(
        dim=10,
        curvatures=(2.0, 0.5, 1.0),
        sample_std=0.8,
        spread=spread,
        flat_curvature=0.3,
        heldout_flat_curvature=0.7,
    )
    opt = Optimizer(lr=0.3, batch_size=4, clip_norm=1.0, noise_multiplier=1.5, mode=mode)
    e0, f0 = np.array([1.0, -0.5, 0.8]), 0.4
    steps = [0, 1, 3, 10, 30]
    replicas = 4000
    train, test = _mc_dp_step(basin, opt, e0, f0, steps, replicas, seed=11 + len(spread) + len(mode))
    dyn = noise_only_dynamics(basin=basin, optimizer=opt)
    theory = expected_loss(
        dynamics=dyn,
        curvatures=basin.curvatures,
        init_error=e0,
        steps=steps,
        init_flat_sq=basin.flat_dim * f0**2,
        flat_curvature=basin.flat_curvature,
        heldout_flat_curvature=basin.heldout_flat_curvature,
    )
    for k, t in enumerate(steps[1:], start=1):  # t = 0 is deterministic: exact equality below
        _within(train[t].mean(), train[t].std(ddof=1) / math.sqrt(replicas), theory.train[k], f"train t={t}")
        _within(test[t].mean(), test[t].std(ddof=1) / math.sqrt(replicas), theory.test[k], f"test t={t}")
    assert theory.train[0] == pytest.approx(train[0][0], rel=1e-12)
    assert theory.test[0] == pytest.approx(test[0][0], rel=1e-12)


def test_noise_only_dynamics_values_and_modes():
    basin = Basin(dim=7, curvatures=(1.0, 3.0), sample_std=2.0, spread="basin", flat_curvature=0.2)
    opt = Optimizer(lr=0.1, batch_size=8, clip_norm=5.0, noise_multiplier=0.4, mode="noise", ref_clip_norm=2.5)
    dyn = noise_only_dynamics(basin=basin, optimizer=opt)
    nu = 0.4 * 2.5  # σ C_ref
    assert dyn.noise_var == pytest.approx((4.0 / 8 + nu**2 / 64,) * 2, rel=1e-15)
    assert dyn.flat_noise_var == pytest.approx(nu**2 / 64, rel=1e-15)  # basin spread: no s² on flat axes
    assert (dyn.drift, dyn.flat_drift, dyn.flat_dim, dyn.lr) == ((1.0, 3.0), 0.2, 5, 0.1)
    sgd = noise_only_dynamics(basin=basin, optimizer=opt.with_mode("sgd"))
    assert sgd.noise_var == (0.5, 0.5) and sgd.flat_noise_var == 0.0
    for mode in ("clip", "dpsgd"):
        with pytest.raises(ValueError, match="mode"):
            noise_only_dynamics(basin=basin, optimizer=opt.with_mode(mode))


# ------------------------------------------------------------------------------------------------
# error_moments / stationary_loss vs Monte Carlo of the linear recursion


def test_error_moments_monte_carlo():
    # ηa spans slow (0.05), critical (1: ρ = 0), oscillating (1.5) and near-divergent (1.95)
    dyn = LinearDynamics(
        lr=0.5,
        drift=(0.1, 2.0, 3.0, 3.9),
        noise_var=(1.0, 0.5, 2.0, 0.3),
        flat_dim=6,
        flat_drift=0.0,
        flat_noise_var=0.7,
    )
    e0 = np.array([2.0, -1.0, 0.5, 1.0])
    steps = [1, 2, 5, 20, 60]
    replicas = 20000
    mc = _mc_linear(dyn, e0, 0.5, steps, replicas, seed=3)
    m = error_moments(dynamics=dyn, init_error=e0, steps=steps, init_flat_sq=6 * 0.25)
    se = lambda x: x.std(axis=0, ddof=1) / math.sqrt(replicas)  # noqa: E731
    for k, t in enumerate(steps):
        e, fsq = mc[t]
        _within(e.mean(axis=0), se(e), m.mean[k], f"mean t={t}")
        _within((e**2).mean(axis=0), se(e**2), m.second[k], f"second t={t}")
        _within(fsq.mean(), fsq.std(ddof=1) / math.sqrt(replicas), m.flat_sq[k], f"flat t={t}")


def test_stationary_loss_monte_carlo_and_equipartition():
    lam = np.array([1.0, 5.0, 15.0])  # ηλ = 0.1, 0.5, 1.5
    dyn = LinearDynamics(lr=0.1, drift=lam, noise_var=(2.0,) * 3)
    replicas, t = 20000, 300  # ρ_max^{2t} = 0.9^600 ≈ 1e-27: stationary to float precision
    e = _mc_linear(dyn, np.zeros(3), 0.0, [t], replicas, seed=5)[t][0]
    loss = 0.5 * (lam * e**2).sum(axis=1)
    exact = stationary_loss(dynamics=dyn, curvatures=lam)
    _within(loss.mean(), loss.std(ddof=1) / math.sqrt(replicas), exact, "stationary loss")
    # equipartition: (ητ²/2) Σ 1/(2 − ηλ_i); the approx ητ² r/4 errs low by the factor (2 − ηλ)/2
    assert exact == pytest.approx(0.1 * 2.0 / 2 * np.sum(1 / (2 - 0.1 * lam)), rel=1e-13)
    approx = stationary_loss(dynamics=dyn, curvatures=lam, approx=True)
    assert approx == pytest.approx(0.1 * 2.0 * 3 / 4, rel=1e-13) and approx < exact
    # long-time limit of expected_loss, independent of the ambient dimension (flat part unseen)
    for flat_dim in (0, 1000):
        d2 = LinearDynamics(lr=0.1, drift=lam, noise_var=(2.0,) * 3, flat_dim=flat_dim, flat_noise_var=2.0)
        late = expected_loss(dynamics=d2, curvatures=lam, init_error=1.0, steps=5000).train[0]
        assert late == pytest.approx(exact, rel=1e-12)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(x=st.floats(1e-4, 1.99), gamma=st.floats(0.05, 1.0), tau2=st.floats(0.01, 10.0))
def test_stationary_loss_clipped_drift_form(x, gamma, tau2):
    # drift a = γλ (clipping) but the loss is measured by λ: ½ λ ητ²/(a(2 − ηa)), approx errs low
    lr = 0.1
    lam = x / lr / gamma * 0.999
    dyn = LinearDynamics(lr=lr, drift=(gamma * lam,), noise_var=(tau2,))
    exact = stationary_loss(dynamics=dyn, curvatures=(lam,))
    assert exact == pytest.approx(lr * tau2 / (2 * gamma * (2 - lr * gamma * lam)), rel=1e-12)
    approx = stationary_loss(dynamics=dyn, curvatures=(lam,), approx=True)
    assert approx <= exact and approx / exact == pytest.approx((2 - lr * gamma * lam) / 2, rel=1e-12)


# ------------------------------------------------------------------------------------------------
# limits and numerical stability


def test_deterministic_limit_sigma_zero_s_zero():
    basin = Basin(dim=5, curvatures=(0.3, 1.2, 1.9), sample_std=0.0)
    opt = Optimizer(lr=1.0, batch_size=3, clip_norm=1.0, noise_multiplier=0.0, mode="noise")
    dyn = noise_only_dynamics(basin=basin, optimizer=opt)
    e0 = np.array([1.0, -2.0, 0.5])
    m = error_moments(dynamics=dyn, init_error=e0, steps=np.arange(40))
    e = e0.copy()
    for t in range(40):
        np.testing.assert_allclose(m.mean[t], e, rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(m.second[t], e**2, rtol=1e-12, atol=1e-300)
        e = e - 1.0 * basin.curvature_array * e  # deterministic GD
    assert np.all(m.flat_sq == 0.0)


def test_full_rank_and_one_dimension():
    # r = d: no flat part, test loss = train loss; d = 1: the scalar formula written out
    basin = Basin(dim=1, curvatures=(0.8,), sample_std=1.3, heldout_flat_curvature=5.0)
    opt = Optimizer(lr=0.2, batch_size=2, clip_norm=2.0, noise_multiplier=0.5, mode="noise")
    dyn = noise_only_dynamics(basin=basin, optimizer=opt)
    assert dyn.flat_dim == 0
    t = np.array([0, 1, 7, 100])
    c = expected_loss(
        dynamics=dyn, curvatures=(0.8,), init_error=1.5, steps=t, heldout_flat_curvature=5.0, init_flat_sq=0.0
    )
    tau2 = 1.3**2 / 2 + (0.5 * 2.0) ** 2 / 4
    rho = 1 - 0.2 * 0.8
    v = 0.2 * tau2 / (0.8 * (2 - 0.2 * 0.8))
    np.testing.assert_allclose(c.train, 0.5 * 0.8 * (rho ** (2 * t) * 1.5**2 + v * (1 - rho ** (2 * t))), rtol=1e-13)
    np.testing.assert_array_equal(c.test, c.train)


def _mp_second(lr, a, tau2, e0, t):
    """50-digit reference: ρ^{2t} e0² + η² τ² Σ_{k<t} ρ^{2k} by direct summation."""
    with mpmath.workdps(50):
        rho2 = (1 - mpmath.mpf(lr) * mpmath.mpf(a)) ** 2
        s = mpmath.fsum(rho2**k for k in range(t))
        return float(rho2**t * mpmath.mpf(e0) ** 2 + mpmath.mpf(lr) ** 2 * mpmath.mpf(tau2) * s)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    x=st.one_of(st.floats(0, 1e-6), st.floats(0.999, 1.001), st.floats(2 - 1e-6, 2.0), st.floats(0, 2)),
    t=st.integers(0, 400),
    e0=st.floats(-3, 3),
)
def test_error_moments_high_precision_twin(x, t, e0):
    # stable near ηa = 0 (random walk), 1 (ρ = 0) and 2 (marginal oscillation)
    lr, tau2 = 0.5, 0.8
    dyn = LinearDynamics(lr=lr, drift=(x / lr,), noise_var=(tau2,))
    got = error_moments(dynamics=dyn, init_error=e0, steps=t).second[0, 0]
    assert got == pytest.approx(_mp_second(lr, x / lr, tau2, e0, t), rel=1e-11, abs=1e-300)


def test_random_walk_and_divergent_behaviour():
    # a = 0: exactly e0² + η²τ² t; flat_error_sq: (d−r)(e0² + η²τ² t) with e0 per coordinate
    dyn = LinearDynamics(lr=0.3, drift=(0.0, 1e-300), noise_var=(2.0, 2.0), flat_dim=9, flat_noise_var=2.0)
    t = np.array([0, 1, 10, 10**6])
    m = error_moments(dynamics=dyn, init_error=1.0, steps=t, init_flat_sq=9 * 0.25)
    np.testing.assert_allclose(m.second[:, 0], 1 + 0.09 * 2.0 * t, rtol=1e-14)
    np.testing.assert_allclose(m.second[:, 1], 1 + 0.09 * 2.0 * t, rtol=1e-12)
    np.testing.assert_allclose(
        flat_error_sq(dynamics=dyn, init_flat_sq=9 * 0.25, steps=t), 9 * (0.25 + 0.09 * 2.0 * t), rtol=1e-14
    )
    # flat drift > 0: the geometric form; matches a 1-D curved direction with the same numbers
    fd = LinearDynamics(lr=0.3, drift=(0.5,), noise_var=(2.0,), flat_dim=4, flat_drift=0.5, flat_noise_var=2.0)
    np.testing.assert_allclose(
        flat_error_sq(dynamics=fd, init_flat_sq=4.0, steps=t),
        4 * error_moments(dynamics=fd, init_error=1.0, steps=t).second[:, 0],
        rtol=1e-14,
    )
    # ηa = 2: bounded-below linear growth; ηa > 2: geometric growth, overflow to inf, no warning
    m2 = error_moments(dynamics=LinearDynamics(lr=1.0, drift=(2.0,), noise_var=(1.0,)), init_error=1.0, steps=t)
    np.testing.assert_allclose(m2.second[:, 0], 1 + t, rtol=1e-9)
    div = LinearDynamics(lr=1.0, drift=(2.5,), noise_var=(1.0,))
    small = error_moments(dynamics=div, init_error=1.0, steps=[3]).second[0, 0]
    assert small == pytest.approx(_mp_second(1.0, 2.5, 1.0, 1.0, 3), rel=1e-13)
    with np.errstate(all="raise"):
        assert np.isinf(error_moments(dynamics=div, init_error=1.0, steps=[10**6]).second[0, 0])
    quiet_div = LinearDynamics(lr=1.0, drift=(2.5,), noise_var=(0.0,), flat_dim=2, flat_drift=3.0)
    with np.errstate(all="raise"):  # zero start, zero noise: stays exactly 0 (no 0·inf = nan)
        z = error_moments(dynamics=quiet_div, init_error=0.0, steps=[10**6])
    assert z.second[0, 0] == 0.0 and z.mean[0, 0] == 0.0 and z.flat_sq[0] == 0.0
    with pytest.raises(ValueError, match="< 2"):
        stationary_loss(dynamics=div, curvatures=(1.0,))
    # a = 0 with noise: no stationary state → inf; without noise → 0 (documented)
    assert stationary_loss(dynamics=dyn, curvatures=(1.0, 1.0)) == math.inf
    quiet = LinearDynamics(lr=0.3, drift=(0.0, 1.0), noise_var=(0.0, 1.0))
    assert stationary_loss(dynamics=quiet, curvatures=(1.0, 1.0)) == pytest.approx(0.3 / (2 * 1.7), rel=1e-14)


def test_argument_validation():
    dyn = LinearDynamics(lr=0.1, drift=(1.0, 2.0), noise_var=(1.0, 1.0))
    with pytest.raises(ValueError, match="steps"):
        error_moments(dynamics=dyn, init_error=0.0, steps=[1.5])
    with pytest.raises(ValueError, match="steps"):
        error_moments(dynamics=dyn, init_error=0.0, steps=-1)
    with pytest.raises(ValueError, match="init_error"):
        error_moments(dynamics=dyn, init_error=[1.0, 2.0, 3.0], steps=1)
    with pytest.raises(ValueError, match="curvatures"):
        expected_loss(dynamics=dyn, curvatures=(1.0,), init_error=0.0, steps=1)
    with pytest.raises(ValueError, match="init_flat_sq"):
        flat_error_sq(dynamics=dyn, init_flat_sq=-1.0, steps=1)
    with pytest.raises(ValueError, match="dynamics"):
        error_moments(dynamics=(0.1, 1.0), init_error=0.0, steps=1)


# ------------------------------------------------------------------------------------------------
# recovery_time


def test_recovery_excess_law_monte_carlo():
    # from stationarity plus a displacement δ, E e(t)² − v = ρ^{2t} δ² (the law recovery_time inverts)
    lr, a, tau2, delta = 0.2, 1.5, 1.0, 2.0
    dyn = LinearDynamics(lr=lr, drift=(a,), noise_var=(tau2,))
    v = lr * tau2 / (a * (2 - lr * a))
    rng = np.random.default_rng(8)
    replicas = 40000
    e = rng.standard_normal(replicas) * math.sqrt(v) + delta
    rho = 1 - lr * a
    for t in range(13):
        if t in (0, 2, 6, 12):
            x = e**2 - v
            _within(x.mean(), x.std(ddof=1) / math.sqrt(replicas), rho ** (2 * t) * delta**2, f"excess t={t}")
        e = rho * e + lr * math.sqrt(tau2) * rng.standard_normal(replicas)
    # and the returned time is the first step at which the exact excess is below the target
    for rel, thr in (("stationary", 0.1), ("stationary", 3.0), ("displacement", 0.01)):
        k = recovery_time(dynamics=dyn, direction=0, displacement=delta, threshold=thr, relative_to=rel)
        target = thr * (v if rel == "stationary" else delta**2)
        assert rho ** (2 * k) * delta**2 <= target < rho ** (2 * (k - 1)) * delta**2


@settings(max_examples=60, deadline=None, derandomize=True)
@given(x=st.floats(1e-3, 1.999), delta=st.floats(1e-3, 1e3), thr=st.floats(1e-6, 10.0))
def test_recovery_time_is_the_first_crossing(x, delta, thr):
    dyn = LinearDynamics(lr=1.0, drift=(x,), noise_var=(0.5,))
    v = 0.5 / (x * (2 - x))
    k = recovery_time(dynamics=dyn, direction=0, displacement=delta, threshold=thr)
    rho2 = mpmath.mpf(1 - x) ** 2
    target = thr * v
    assert rho2 ** int(k) * delta**2 <= target * (1 + 1e-12)
    if k > 0:
        assert rho2 ** int(k - 1) * delta**2 > target * (1 - 1e-12)


def test_recovery_time_edge_cases():
    walk = LinearDynamics(lr=0.1, drift=(0.0, 10.0), noise_var=(1.0, 0.0), flat_dim=3, flat_drift=0.0)
    assert recovery_time(dynamics=walk, direction=0, displacement=1.0, relative_to="displacement") == math.inf
    assert recovery_time(dynamics=walk, direction=1, displacement=1.0) == 1.0  # ρ = 0: gone in one step
    assert recovery_time(dynamics=walk, direction="flat", displacement=1.0, relative_to="displacement") == math.inf
    tiny = LinearDynamics(lr=1.0, drift=(1e-20,), noise_var=(0.0,))  # ρ² rounds to 1; log1p does not
    assert recovery_time(
        dynamics=tiny, direction=0, displacement=1.0, threshold=math.exp(-2), relative_to="displacement"
    ) == pytest.approx(1e20, rel=1e-12)
    nonoise = LinearDynamics(lr=0.1, drift=(1.0,), noise_var=(0.0,))
    assert recovery_time(dynamics=nonoise, direction=0, displacement=1.0) == math.inf  # v = 0 never reached
    assert recovery_time(dynamics=nonoise, direction=0, displacement=0.0) == 0.0
    with pytest.raises(ValueError, match="direction"):
        recovery_time(dynamics=nonoise, direction=1, displacement=1.0)
    with pytest.raises(ValueError, match="relative_to"):
        recovery_time(dynamics=nonoise, direction=0, displacement=1.0, relative_to="x")


# ------------------------------------------------------------------------------------------------
# stationary_covariance: discrete Lyapunov equation


def _random_psd(rng, d, rank, scale):
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return q[:, :rank] @ np.diag(rng.uniform(0.2, 1.0, rank) * scale) @ q[:, :rank].T, q


def test_lyapunov_diagonal_matches_per_direction_law():
    lam = np.array([0.5, 2.0, 3.5])
    tau2 = np.array([1.0, 0.3, 2.0])
    sigma = stationary_covariance(hessian=np.diag(lam), lr=0.5, noise_cov=np.diag(tau2))
    dyn = LinearDynamics(lr=0.5, drift=lam, noise_var=tau2)
    late = error_moments(dynamics=dyn, init_error=0.0, steps=10**6).second[0]
    np.testing.assert_allclose(np.diag(sigma), late, rtol=1e-12)
    assert np.abs(sigma - np.diag(np.diag(sigma))).max() == 0.0
    assert stationary_loss_general(hessian=np.diag(lam), lr=0.5, noise_cov=np.diag(tau2)) == pytest.approx(
        stationary_loss(dynamics=dyn, curvatures=lam), rel=1e-12
    )


@settings(max_examples=25, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), d=st.integers(1, 6), lr=st.floats(0.05, 1.9))
def test_lyapunov_matches_scipy_solver(seed, d, lr):
    rng = np.random.default_rng(seed)
    h, _ = _random_psd(rng, d, d, 1.0)  # eigenvalues in [0.2, 1]: ηλ < 2
    g = rng.standard_normal((d, d))
    noise = g @ g.T
    sigma = stationary_covariance(hessian=h, lr=lr, noise_cov=noise)
    a = np.eye(d) - lr * h
    ref = scipy.linalg.solve_discrete_lyapunov(a, lr**2 * noise)  # X = A X Aᵀ + η² Σ_ξ
    np.testing.assert_allclose(sigma, ref, rtol=1e-7, atol=1e-9 * np.abs(ref).max())
    lhs = h @ sigma + sigma @ h - lr * h @ sigma @ h  # the equation HΣ + ΣH − ηHΣH = ηΣ_ξ
    np.testing.assert_allclose(lhs, lr * noise, rtol=1e-7, atol=1e-9 * np.abs(noise).max())


def test_lyapunov_singular_hessian_and_errors():
    rng = np.random.default_rng(1)
    h, q = _random_psd(rng, 5, 2, 1.0)  # rank 2 in 5 dims
    p = q[:, :2] @ q[:, :2].T
    noise = p @ np.diag([1.0, 2.0, 0.5, 1.0, 3.0]) @ p  # lives in range(H)
    sigma = stationary_covariance(hessian=h, lr=0.7, noise_cov=noise)
    # reference: scipy on the restricted 2×2 problem in the basis q[:, :2]
    hr, nr = q[:, :2].T @ h @ q[:, :2], q[:, :2].T @ noise @ q[:, :2]
    ref = q[:, :2] @ scipy.linalg.solve_discrete_lyapunov(np.eye(2) - 0.7 * hr, 0.49 * nr) @ q[:, :2].T
    np.testing.assert_allclose(sigma, ref, rtol=1e-8, atol=1e-12)
    with pytest.raises(ValueError, match="null space"):
        stationary_covariance(hessian=h, lr=0.7, noise_cov=np.eye(5))
    with pytest.raises(ValueError, match="< 2"):
        stationary_covariance(hessian=np.diag([1.0, 4.0]), lr=0.5, noise_cov=np.eye(2))
    with pytest.raises(ValueError, match="symmetric"):
        stationary_covariance(hessian=np.array([[1.0, 0.5], [0.0, 1.0]]), lr=0.1, noise_cov=np.eye(2))
    with pytest.raises(ValueError, match="semidefinite"):
        stationary_covariance(hessian=np.diag([1.0, -0.5]), lr=0.1, noise_cov=np.eye(2))


def test_lyapunov_monte_carlo_non_diagonal():
    rng = np.random.default_rng(21)
    h = np.array([[1.0, 0.6, 0.0], [0.6, 1.5, -0.4], [0.0, -0.4, 0.8]])
    noise = np.array([[1.0, 0.5, 0.2], [0.5, 2.0, -0.3], [0.2, -0.3, 0.5]])
    lr = 0.4
    sigma = stationary_covariance(hessian=h, lr=lr, noise_cov=noise)
    chol = np.linalg.cholesky(noise)
    replicas, steps = 20000, 150  # slowest |ρ| = 1 − 0.4·λ_min ≈ 0.83: 0.83^300 ≈ 1e-24
    e = np.zeros((replicas, 3))
    a = np.eye(3) - lr * h
    for _ in range(steps):
        e = e @ a.T - lr * rng.standard_normal((replicas, 3)) @ chol.T
    prods = e[:, :, None] * e[:, None, :]
    _within(prods.mean(axis=0), prods.std(axis=0, ddof=1) / math.sqrt(replicas), sigma, "covariance")
    loss = 0.5 * np.einsum("ni,ij,nj->n", e, h, e)
    _within(
        loss.mean(),
        loss.std(ddof=1) / math.sqrt(replicas),
        stationary_loss_general(hessian=h, lr=lr, noise_cov=noise),
        "stationary loss",
    )
