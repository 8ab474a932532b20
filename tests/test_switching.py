"""dptheory.switching: exact phase composition, sweeps and the memory horizon (claim 1).

Independent references: a plain numpy Monte Carlo of the switched linear recursion and of the actual
unclipped DP step (K = 4 standard errors, SE = sample std / √replicas, fixed seeds), single-phase
``error_moments`` for the identities, and the theorems proved in proofs/switching_formula.py:

* T1 (identity): before == after gives the single phase for every switch step; s = 0 is all
  ``after`` and s = T is all ``before``.
* T2 (monotonicity): phases with equal lr and drift, τ_b² ≤ τ_a² per direction ⇒ the forward final
  loss (b then a) is non-increasing in s and the reverse one non-decreasing.
* T3 (memory): for s ≤ T − h, h = memory_horizon(after, ε), every direction satisfies
  |v(T; s) − v_after-only(T)| ≤ ε |v_b(s) − v_a(s)| — the early phase is forgotten up to ε.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dptheory.quadratic import error_moments, expected_loss, noise_only_dynamics
from dptheory.records import Basin, LinearDynamics, Optimizer
from dptheory.switching import (
    memory_horizon,
    phase_dynamics,
    switch_sweep,
    switched_final_loss,
    switched_moments,
)

K = 4.0


def _within(estimate, se, predicted, what=""):
    estimate, se, predicted = map(np.asarray, (estimate, se, predicted))
    z = np.abs(estimate - predicted) / np.maximum(se, 1e-300)
    assert np.all(z <= K), f"{what}: max |z| = {z.max():.2f} > {K}"


def _dyn(draw_lr, drift, noise, flat_dim=0, flat_drift=0.0, flat_noise=0.0):
    return LinearDynamics(
        lr=draw_lr, drift=drift, noise_var=noise, flat_dim=flat_dim, flat_drift=flat_drift, flat_noise_var=flat_noise
    )


dyn_strategy = st.builds(
    lambda lr, x1, x2, t1, t2, fd: _dyn(lr, (x1 / lr, x2 / lr), (t1, t2), flat_dim=fd, flat_noise=t1),
    # ηa = 0 exactly or ≥ 1e-6: tinier drifts have memories beyond 1e6 steps (tested separately)
    st.floats(0.05, 1.0),
    st.one_of(st.just(0.0), st.floats(1e-6, 1.99)),
    st.floats(0.01, 1.99),
    st.floats(0.0, 3.0),
    st.floats(0.0, 3.0),
    st.integers(0, 5),
)


# ------------------------------------------------------------------------------------------------
# T1: identities


@settings(max_examples=40, deadline=None, derandomize=True)
@given(dyn=dyn_strategy, total=st.integers(0, 300), frac=st.floats(0, 1), e0=st.floats(-3, 3))
def test_identical_phases_are_one_phase(dyn, total, frac, e0):
    s = round(frac * total)
    m = switched_moments(
        before=dyn,
        after=dyn,
        switch_step=s,
        total_steps=total,
        init_error=e0,
        init_flat_sq=2.0,
        steps=np.arange(total + 1),
    )
    ref = error_moments(dynamics=dyn, init_error=e0, steps=np.arange(total + 1), init_flat_sq=2.0)
    np.testing.assert_allclose(m.second, ref.second, rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(m.mean, ref.mean, rtol=1e-10, atol=1e-14 * abs(e0))
    np.testing.assert_allclose(m.flat_sq, ref.flat_sq, rtol=1e-10)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(before=dyn_strategy, after=dyn_strategy, total=st.integers(0, 200))
def test_switch_at_the_ends_is_a_single_phase(before, after, total):
    if len(before.drift) != len(after.drift) or before.flat_dim != after.flat_dim:
        after = _dyn(after.lr, after.drift, after.noise_var, before.flat_dim, after.flat_drift, after.flat_noise_var)
    lam = (1.0, 0.5)
    kw = dict(curvatures=lam, init_error=(1.0, -2.0), init_flat_sq=1.0, heldout_flat_curvature=0.3)
    sw = switch_sweep(before=before, after=after, switch_steps=[0, total], total_steps=total, **kw)
    only_a = expected_loss(dynamics=after, steps=total, **kw)
    only_b = expected_loss(dynamics=before, steps=total, **kw)
    np.testing.assert_allclose([sw.forward_train[0], sw.forward_test[0]], [only_a.train[0], only_a.test[0]], rtol=1e-12)
    np.testing.assert_allclose([sw.forward_train[1], sw.forward_test[1]], [only_b.train[0], only_b.test[0]], rtol=1e-12)
    np.testing.assert_allclose(
        [sw.reverse_train[0], sw.reverse_train[1]], [only_b.train[0], only_a.train[0]], rtol=1e-12
    )


def test_sweep_equals_pointwise_final_loss():
    b = _dyn(0.2, (1.0, 4.0), (0.1, 0.1), 3, 0.0, 0.1)
    a = _dyn(0.1, (0.5, 4.0), (2.0, 1.0), 3, 0.2, 1.5)
    grid = [0, 1, 7, 50, 99, 100]
    kw = dict(
        total_steps=100,
        curvatures=(1.0, 4.0),
        init_error=(2.0, 1.0),
        init_flat_sq=3.0,
        flat_curvature=0.2,
        heldout_flat_curvature=0.5,
    )
    sw = switch_sweep(before=b, after=a, switch_steps=grid, **kw)
    for k, s in enumerate(grid):
        f = switched_final_loss(before=b, after=a, switch_step=s, **kw)
        r = switched_final_loss(before=a, after=b, switch_step=s, **kw)
        assert (sw.forward_train[k], sw.forward_test[k]) == pytest.approx(f, rel=1e-14)
        assert (sw.reverse_train[k], sw.reverse_test[k]) == pytest.approx(r, rel=1e-14)


# ------------------------------------------------------------------------------------------------
# Monte Carlo: the composition is exact


def test_switched_moments_monte_carlo_linear_recursion():
    # the phases differ in lr, drift and noise, flat part included
    b = _dyn(0.5, (0.2, 3.0), (2.0, 0.5), 4, 0.0, 1.0)
    a = _dyn(0.2, (1.0, 6.0), (0.3, 3.0), 4, 0.5, 0.2)
    e0, f0c, s, total = np.array([1.5, -1.0]), 0.7, 12, 30
    steps = [5, 12, 13, 20, 30]
    replicas = 20000
    rng = np.random.default_rng(4)
    e = np.tile(e0, (replicas, 1))
    ef = np.full((replicas, 4), f0c)
    m = switched_moments(
        before=b, after=a, switch_step=s, total_steps=total, init_error=e0, init_flat_sq=4 * f0c**2, steps=steps
    )
    for t in range(total + 1):
        if t in steps:
            k = steps.index(t)
            se = lambda x: x.std(axis=0, ddof=1) / math.sqrt(replicas)  # noqa: E731
            _within(e.mean(axis=0), se(e), m.mean[k], f"mean t={t}")
            _within((e**2).mean(axis=0), se(e**2), m.second[k], f"second t={t}")
            fsq = (ef**2).sum(axis=1)
            _within(fsq.mean(), se(fsq), m.flat_sq[k], f"flat t={t}")
        ph = b if t < s else a
        e = (1 - ph.lr * np.asarray(ph.drift)) * e + ph.lr * np.sqrt(ph.noise_var) * rng.standard_normal(e.shape)
        ef = (1 - ph.lr * ph.flat_drift) * ef + ph.lr * math.sqrt(ph.flat_noise_var) * rng.standard_normal(ef.shape)


@pytest.mark.parametrize("order", [("sgd", "noise"), ("noise", "sgd")])
def test_switch_on_the_actual_dp_step(order):
    # end to end: the unclipped records.py step with its mode switched at s, vs phase_dynamics + sweep
    basin = Basin(dim=8, curvatures=(1.5, 0.4), sample_std=0.5, heldout_flat_curvature=1.0)
    opt = Optimizer(lr=0.4, batch_size=4, clip_norm=1.0, noise_multiplier=2.0)
    first, second = (opt.with_mode(m) for m in order)
    total, grid, replicas = 25, [0, 10, 20], 4000
    sw = switch_sweep(
        before=phase_dynamics(basin=basin, optimizer=first),
        after=phase_dynamics(basin=basin, optimizer=second),
        switch_steps=grid,
        total_steps=total,
        curvatures=basin.curvatures,
        init_error=(1.0, 1.0),
        heldout_flat_curvature=1.0,
    )
    h = np.r_[basin.curvature_array, np.zeros(6)]
    rng = np.random.default_rng(17 if order[0] == "sgd" else 18)
    for k, s in enumerate(grid):
        e = np.tile(np.r_[1.0, 1.0, np.zeros(6)], (replicas, 1))
        for t in range(total):
            o = first if t < s else second
            g = (h * e)[:, None, :] + basin.sample_std * rng.standard_normal((replicas, 4, 8))
            e = e - o.lr / 4 * (g.sum(axis=1) + o.noise_std * rng.standard_normal((replicas, 8)))
        train = 0.5 * (h * e**2).sum(axis=1)
        test = train + 0.5 * (e[:, 2:] ** 2).sum(axis=1)
        _within(train.mean(), train.std(ddof=1) / math.sqrt(replicas), sw.forward_train[k], f"train s={s}")
        _within(test.mean(), test.std(ddof=1) / math.sqrt(replicas), sw.forward_test[k], f"test s={s}")


# ------------------------------------------------------------------------------------------------
# T2, T3: theorems


@settings(max_examples=40, deadline=None, derandomize=True)
@given(dyn=dyn_strategy, scale=st.floats(1.0, 20.0), total=st.integers(1, 150), e0=st.floats(-3, 3))
def test_monotone_in_switch_step_when_only_noise_differs(dyn, scale, total, e0):
    quiet = dyn
    loud = _dyn(
        dyn.lr,
        dyn.drift,
        tuple(scale * np.asarray(dyn.noise_var) + 0.01),
        dyn.flat_dim,
        dyn.flat_drift,
        scale * dyn.flat_noise_var,
    )
    grid = np.arange(total + 1)
    sw = switch_sweep(
        before=quiet,
        after=loud,
        switch_steps=grid,
        total_steps=total,
        curvatures=(1.0, 2.0),
        init_error=e0,
        init_flat_sq=1.0,
        heldout_flat_curvature=0.5,
    )
    tol = 1e-12 * np.maximum(np.abs(sw.forward_test[:-1]), 1e-300)
    # quiet → loud: switching later never hurts; loud → quiet: switching later never helps
    assert np.all(np.diff(sw.forward_train) <= tol) and np.all(np.diff(sw.forward_test) <= tol)
    assert np.all(np.diff(sw.reverse_train) >= -tol) and np.all(np.diff(sw.reverse_test) >= -tol)


def test_monotonicity_needs_equal_drift():
    # not a theorem in general: a slow quiet phase then a fast noisy one is best switched early
    # (the fast phase removes the initial error the slow one leaves behind)
    slow_quiet = _dyn(0.01, (1.0,), (0.0,))
    fast_loud = _dyn(0.5, (1.0,), (1.0,))
    sw = switch_sweep(
        before=slow_quiet,
        after=fast_loud,
        switch_steps=np.arange(101),
        total_steps=100,
        curvatures=(1.0,),
        init_error=10.0,
    )
    assert np.any(np.diff(sw.forward_train) > 0) and sw.forward_train.argmin() < 100


@settings(max_examples=40, deadline=None, derandomize=True)
@given(before=dyn_strategy, after=dyn_strategy, eps=st.floats(1e-6, 0.5), extra=st.integers(0, 50), e0=st.floats(-3, 3))
def test_memory_horizon_forgets_the_early_phase(before, after, eps, extra, e0):
    after = _dyn(after.lr, after.drift, after.noise_var, before.flat_dim, after.flat_drift, after.flat_noise_var)
    h = memory_horizon(dynamics=after, tolerance=eps)
    if not math.isfinite(h):
        assert np.any(np.asarray(after.drift) == 0)
        return
    h = int(h)
    s = extra
    total = s + h
    m = switched_moments(before=before, after=after, switch_step=s, total_steps=total, init_error=e0)
    only_a = error_moments(dynamics=after, init_error=e0, steps=total).second[0]
    vb = error_moments(dynamics=before, init_error=e0, steps=s).second[0]
    va = error_moments(dynamics=after, init_error=e0, steps=s).second[0]
    bound = eps * np.abs(vb - va) * (1 + 1e-9) + 1e-12 * np.abs(only_a)
    assert np.all(np.abs(m.second[0] - only_a) <= bound)
    # minimality: one step fewer leaves more than ε of the slowest direction's state
    x = after.lr * np.asarray(after.drift)
    if h > 1:  # (h = 1: zero steps leave all of it, ρ⁰ = 1 > ε)
        with np.errstate(divide="ignore"):  # log ρ² = −inf where ρ = 0
            assert (h - 1) * np.max(np.log1p(-x * (2 - x))) > math.log(eps)


def test_memory_horizon_values_and_flat_directions():
    dyn = _dyn(0.1, (1.0, 2.0), (1.0, 1.0), flat_dim=10)
    assert memory_horizon(dynamics=dyn, tolerance=0.05) == math.ceil(math.log(0.05) / math.log(0.81))
    assert memory_horizon(dynamics=dyn, tolerance=1.0) == 0.0
    # a flat random walk never forgets: infinite memory for a held-out loss curved there
    assert memory_horizon(dynamics=dyn, include_flat=True) == math.inf
    assert memory_horizon(dynamics=_dyn(1.0, (1.0,), (1.0,))) == 1.0  # ρ = 0
    # tiny drift: ρ² rounds to 1 in floating point, the memory ≈ log(1/ε)/(2ηa) does not
    assert memory_horizon(dynamics=_dyn(1.0, (1e-20,), (1.0,)), tolerance=math.exp(-2)) == pytest.approx(
        1e20, rel=1e-12
    )
    with pytest.raises(ValueError, match="tolerance"):
        memory_horizon(dynamics=dyn, tolerance=0.0)
    with pytest.raises(ValueError, match="< 2"):
        memory_horizon(dynamics=_dyn(1.0, (2.5,), (1.0,)))


def test_switching_argument_validation():
    a = _dyn(0.1, (1.0, 2.0), (1.0, 1.0))
    with pytest.raises(ValueError, match="same basin"):
        switched_moments(before=a, after=_dyn(0.1, (1.0,), (1.0,)), switch_step=1, total_steps=2, init_error=0.0)
    with pytest.raises(ValueError, match="switch_step"):
        switched_moments(before=a, after=a, switch_step=5, total_steps=2, init_error=0.0)
    with pytest.raises(ValueError, match="switch_steps"):
        switch_sweep(before=a, after=a, switch_steps=[1.5], total_steps=2, curvatures=(1.0, 1.0), init_error=0.0)
    with pytest.raises(ValueError, match="total_steps"):
        switch_sweep(before=a, after=a, switch_steps=[3], total_steps=2, curvatures=(1.0, 1.0), init_error=0.0)


# ------------------------------------------------------------------------------------------------
# phase_dynamics and the clipped model


def test_phase_dynamics_unclipped_is_noise_only():
    basin = Basin(dim=6, curvatures=(1.0, 2.0), sample_std=0.3, spread="basin")
    opt = Optimizer(lr=0.1, batch_size=5, clip_norm=2.0, noise_multiplier=1.0, mode="noise")
    assert phase_dynamics(basin=basin, optimizer=opt) == noise_only_dynamics(basin=basin, optimizer=opt)


def test_phase_dynamics_clipped_tends_to_unclipped_as_clip_norm_grows():
    # C → ∞ with ν = σC fixed: the clipped (mean-field) model must become the exact noise-only map
    basin = Basin(dim=50, curvatures=(1.0, 0.5), sample_std=0.2)
    nu = 3.0
    clip = 1e6
    dp = Optimizer(lr=0.2, batch_size=8, clip_norm=clip, noise_multiplier=nu / clip, mode="dpsgd")
    ref = noise_only_dynamics(basin=basin, optimizer=dp.with_mode("noise"))
    got = phase_dynamics(basin=basin, optimizer=dp)
    np.testing.assert_allclose(got.drift, ref.drift, rtol=1e-9)
    np.testing.assert_allclose(got.noise_var, ref.noise_var, rtol=1e-9)
    assert got.flat_noise_var == pytest.approx(ref.flat_noise_var, rel=1e-9)


def test_flat_random_walk_remembers_every_phase():
    # Theorem (flat a_f = 0): E‖e_flat(T)‖² = ‖e_flat(0)‖² + (d − r)(η_b²τ_b² s + η_a²τ_a² (T − s)),
    # so the held-out excess ½κ E‖e_flat‖² is linear in s and the same for either order of phases
    # with the same time in each: for the held-out loss the *early* phase is never forgotten.
    quiet = _dyn(0.1, (1.0,), (0.1,), flat_dim=20, flat_noise=0.1)
    loud = _dyn(0.1, (1.0,), (4.0,), flat_dim=20, flat_noise=4.0)
    total, grid = 200, np.arange(0, 201, 20)
    sw = switch_sweep(
        before=quiet,
        after=loud,
        switch_steps=grid,
        total_steps=total,
        curvatures=(1.0,),
        init_error=0.0,
        init_flat_sq=0.5,
        heldout_flat_curvature=2.0,
    )
    fwd = sw.forward_test - sw.forward_train
    rev = sw.reverse_test - sw.reverse_train
    np.testing.assert_allclose(fwd, 0.5 * 2.0 * (0.5 + 20 * 0.01 * (0.1 * grid + 4.0 * (total - grid))), rtol=1e-12)
    np.testing.assert_allclose(fwd, rev[::-1], rtol=1e-12)  # s steps quiet first = s steps quiet last
    # whereas the curved training loss has forgotten the early phase up to ρ^{2(T−s)} (theorem T2):
    # L(T; 0) − L(T; s) = ½ λ η² (τ_a² − τ_b²) ρ^{2(T−s)} G_s, here ≈ 7e-11 against L ≈ 0.1
    s = grid[grid.size // 2]
    gain = 0.5 * 0.01 * 3.9 * 0.81 ** (total - s) * (1 - 0.81**s) / 0.19
    assert sw.forward_train[0] - sw.forward_train[grid.size // 2] == pytest.approx(gain, rel=1e-4)
