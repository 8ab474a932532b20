"""The spectral model of DP-SGD near a minimum: validation, closed forms, limits and the Gaussian identity.

Statistical checks state their k: K = 4 standard errors (a handful of comparisons per test).
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dptheory import clipped_dynamics, clipping, quadratic
from dptheory.curves import first_crossing
from dptheory.records import Basin, Optimizer
from dptheory.spectral import (
    GaussianGradients,
    GradientStatistics,
    SpectralBasin,
    spectral_basin_from_basin,
    spectral_clip_fraction,
    spectral_directions,
    spectral_excess_loss,
    spectral_recovery_time,
    spectral_window_excess,
)
from dptheory.spectral_moments import geometric_sum, moment_curves, recovery_excess, window_moments
from proofs import spectral_linear_response, spectral_sampling_variance, spectral_transient

K = 4.0
MODES = ("sgd", "clip", "noise", "dpsgd")


def _stats_basin(n=300, d=8, k=3, seed=0, bulk_noise="curvature", n_train=None, nodes=None, weights=None):
    rng = np.random.default_rng(seed)
    lam = np.geomspace(1.0, 0.02, d)
    z = rng.standard_exponential((n, d)) - 1.0
    z = z * np.sqrt(lam) * (1 + rng.standard_exponential(n))[:, None]
    z -= z.mean(axis=0)
    stats = GradientStatistics(norms=np.linalg.norm(z, axis=1), top_projections=z[:, :k])
    nodes = lam[k:] if nodes is None else nodes
    weights = np.ones(d - k) if weights is None else weights
    basin = SpectralBasin(
        dim=d,
        top_eigenvalues=lam[:k],
        bulk_eigenvalues=nodes,
        bulk_weights=weights,
        gradients=stats,
        n_train=n if n_train is None else n_train,
        bulk_noise=bulk_noise,
    )
    return basin, z, lam


def _opt(mode="dpsgd", **kw):
    base = dict(lr=0.5, batch_size=20, clip_norm=0.8, noise_multiplier=1.5, mode=mode, ref_clip_norm=0.8)
    base.update(kw)
    return Optimizer(**base)


# ---------------------------------------------------------------------------------------------
# validation: one clear ValueError naming the value
# ---------------------------------------------------------------------------------------------


def test_gradient_statistics_validation():
    ok = dict(norms=np.ones(3), top_projections=np.zeros((3, 2)))
    GradientStatistics(**ok)
    cases = [
        (dict(norms=np.ones(1), top_projections=np.zeros((1, 1))), "n >= 2"),
        (dict(norms=np.ones(3), top_projections=np.zeros((2, 1))), "shape"),
        (dict(norms=np.array([1.0, -1.0, 1.0]), top_projections=np.zeros((3, 1))), ">= 0"),
        (dict(norms=np.array([1.0, np.nan, 1.0]), top_projections=np.zeros((3, 1))), "finite"),
        (dict(norms=np.ones(3), top_projections=np.full((3, 1), 2.0)), "<= norms"),
        (dict(norms=np.ones((3, 1)), top_projections=np.zeros((3, 1))), "1-D"),
        (dict(**ok, top_curvatures=np.zeros((3, 2))), "go together"),
        (dict(**ok, top_curvatures=np.zeros((3, 1)), top_radial_curvatures=np.zeros((3, 1))), "shape"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            GradientStatistics(**kwargs)


def test_spectral_basin_validation():
    g = GradientStatistics(norms=np.ones(4), top_projections=np.full((4, 1), 0.5))
    ok = dict(dim=3, top_eigenvalues=np.array([1.0]), bulk_eigenvalues=np.array([0.1]), bulk_weights=np.array([2.0]))
    SpectralBasin(**ok, gradients=g, n_train=10)
    bad = [
        (dict(ok, bulk_weights=np.array([1.0])), "sum to dim - k"),
        (dict(ok, bulk_weights=np.array([-2.0])), ">= 0"),
        (dict(ok, bulk_eigenvalues=np.array([0.1, 0.2])), "equal shapes"),
        (dict(ok, top_eigenvalues=np.array([np.inf])), "finite"),
        (dict(ok, dim=0), "dim"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ValueError, match=message):
            SpectralBasin(**kwargs, gradients=g, n_train=10)
    with pytest.raises(ValueError, match="n_train"):
        SpectralBasin(**ok, gradients=g, n_train=1)
    with pytest.raises(ValueError, match="n_train"):
        SpectralBasin(**ok, gradients=g, n_train=10.5)
    with pytest.raises(ValueError, match="exceed n_train"):
        SpectralBasin(**ok, gradients=g, n_train=3)
    with pytest.raises(ValueError, match="bulk_noise"):
        SpectralBasin(**ok, gradients=g, n_train=10, bulk_noise="fisher")
    with pytest.raises(ValueError, match="descending"):
        g2 = GradientStatistics(norms=np.ones(4), top_projections=np.zeros((4, 2)))
        SpectralBasin(dim=3, top_eigenvalues=np.array([0.5, 1.0]), bulk_eigenvalues=np.array([0.1]),
                      bulk_weights=np.array([1.0]), gradients=g2, n_train=10)  # fmt: skip
    with pytest.raises(ValueError, match="k=1 columns"):
        SpectralBasin(
            **ok, gradients=GradientStatistics(norms=np.ones(4), top_projections=np.zeros((4, 2))), n_train=10
        )
    with pytest.raises(ValueError, match="positive bulk curvature"):
        SpectralBasin(**dict(ok, bulk_eigenvalues=np.array([0.0])), gradients=g, n_train=10)
    with pytest.raises(ValueError, match="GradientStatistics or GaussianGradients"):
        SpectralBasin(**ok, gradients=np.ones(3), n_train=10)


def test_function_argument_validation():
    basin, _, _ = _stats_basin()
    opt = _opt()
    with pytest.raises(ValueError, match="sampling"):
        spectral_directions(basin=basin, optimizer=opt, sampling="shuffle")
    with pytest.raises(ValueError, match="closure"):
        spectral_directions(basin=basin, optimizer=opt, closure="radial")
    with pytest.raises(ValueError, match="batch_size must be <= n_train"):
        spectral_directions(basin=basin, optimizer=_opt(batch_size=301))
    with pytest.raises(ValueError, match="steps"):
        spectral_excess_loss(basin=basin, optimizer=opt, steps=[1.5])
    with pytest.raises(ValueError, match="stop must be > start"):
        spectral_window_excess(basin=basin, optimizer=opt, start=5, stop=5)
    with pytest.raises(ValueError, match="direction"):
        spectral_recovery_time(basin=basin, optimizer=opt, displacement=1.0, direction="side")
    with pytest.raises(ValueError, match="direction index"):
        spectral_recovery_time(basin=basin, optimizer=opt, displacement=1.0, direction=3)
    with pytest.raises(ValueError, match="bulk_node"):
        spectral_recovery_time(basin=basin, optimizer=opt, displacement=1.0, direction="bulk")
    with pytest.raises(ValueError, match="shape"):
        spectral_recovery_time(basin=basin, optimizer=opt, displacement=np.ones(2))
    with pytest.raises(ValueError, match="threshold"):
        spectral_recovery_time(basin=basin, optimizer=opt, displacement=1.0, threshold=0.0)
    with pytest.raises(ValueError, match="gradient_norm"):
        spectral_directions(basin=basin, optimizer=opt, closure="mean-field", gradient_norm=-1.0)
    with pytest.raises(ValueError, match="basin must be"):
        spectral_directions(basin=Basin(dim=2, curvatures=(1.0,), sample_std=1.0), optimizer=opt)


# ---------------------------------------------------------------------------------------------
# flat and negative directions
# ---------------------------------------------------------------------------------------------


def test_negative_curvature_is_excluded_warned_and_counted():
    """A node with λ < 0 gets no bulk share under 'curvature' spreading and no loss: same as λ = 0."""
    kw = dict(weights=np.array([2.0, 1.0, 2.0]), n=200, d=8, k=3)
    zero, _, _ = _stats_basin(nodes=np.array([0.1, 0.05, 0.0]), **kw)
    with pytest.warns(RuntimeWarning, match="2 of 8 directions have negative curvature"):
        neg, _, _ = _stats_basin(nodes=np.array([0.1, 0.05, -0.02]), **kw)
    assert neg.negative_weight == 2.0 and zero.negative_weight == 0.0
    for mode in MODES:
        a = spectral_window_excess(basin=zero, optimizer=_opt(mode), start=100, stop=300)
        b = spectral_window_excess(basin=neg, optimizer=_opt(mode), start=100, stop=300)
        assert b.excess == pytest.approx(a.excess, rel=1e-13) and b.negative_weight == 2.0
        assert b.directions.excluded.tolist() == [False] * 5 + [True]
        assert b.directions.drift[-1] == 0.0 and b.directions.loss_weight[-1] == 0.0


def test_flat_directions_random_walk_but_add_no_loss():
    """λ = 0: E e² grows like a random walk (η²τ²t) but the loss and its stationary value stay finite."""
    basin, _, _ = _stats_basin(nodes=np.array([0.1, 0.0]), weights=np.array([3.0, 2.0]), d=8, k=3)
    opt = _opt("noise")
    d = spectral_directions(basin=basin, optimizer=opt)
    assert d.drift[-1] == 0.0 and math.isinf(d.stationary_var[-1])
    assert math.isfinite(d.stationary_loss)
    _, var = moment_curves(
        lr=d.lr, drift=d.drift, force=d.clipped_mean, noise_var=d.noise_var, poisson_mult=d.poisson_mult, steps=[7]
    )
    assert var[0, -1] == pytest.approx(d.lr**2 * d.noise_var[-1] * 7, rel=1e-14)
    curve = spectral_excess_loss(basin=basin, optimizer=opt, steps=[10**6])
    assert curve.direction_noise[0, -1] == 0.0 and math.isfinite(curve.excess[0])


# ---------------------------------------------------------------------------------------------
# the records.Basin law reproduces dptheory.clipped_dynamics (required identity)
# ---------------------------------------------------------------------------------------------

GAUSSIAN_GRID = [
    (spread, flat, mode, sampling)
    for spread in ("ambient", "basin")
    for flat in (0.0, 0.3)
    for mode in MODES
    for sampling in ("fixed", "poisson")
]


@pytest.mark.parametrize(("spread", "flat", "mode", "sampling"), GAUSSIAN_GRID)
def test_gaussian_law_reproduces_clipped_dynamics(spread, flat, mode, sampling):
    basin = Basin(dim=60, curvatures=(0.25, 1.0, 0.5), sample_std=0.3, spread=spread, flat_curvature=flat)
    sb = spectral_basin_from_basin(basin=basin)
    opt = Optimizer(lr=0.3, batch_size=8, clip_norm=0.8, noise_multiplier=2.0, mode=mode)
    order = np.argsort(-basin.curvature_array)
    ref = clipped_dynamics.stationary_excess_loss(basin=basin, optimizer=opt, sampling=sampling, closure="mean-field")
    dirs = spectral_directions(basin=sb, optimizer=opt, sampling=sampling, closure="mean-field")
    assert dirs.stationary_loss == pytest.approx(ref, rel=1e-12)
    eff = clipped_dynamics.effective_linear_model(basin=basin, optimizer=opt, sampling=sampling)
    # the Poisson mean part is multiplicative here; at the fixed point it adds κ a² v to the additive noise
    with np.errstate(invalid="ignore"):
        noise = dirs.noise_var + np.where(dirs.drift > 0, dirs.poisson_mult * dirs.drift**2 * dirs.stationary_var, 0.0)
    np.testing.assert_allclose(dirs.drift[:3], np.asarray(eff.drift)[order], rtol=1e-12)
    np.testing.assert_allclose(noise[:3], np.asarray(eff.noise_var)[order], rtol=1e-12)
    assert dirs.drift[3] == pytest.approx(eff.flat_drift, rel=1e-12, abs=1e-300)
    assert noise[3] == pytest.approx(eff.flat_noise_var, rel=1e-12)
    frac = clipped_dynamics.stationary_clip_fraction(
        basin=basin, optimizer=opt, sampling=sampling, closure="mean-field"
    )
    assert spectral_clip_fraction(basin=sb, optimizer=opt, sampling=sampling, closure="mean-field") == pytest.approx(
        frac, rel=1e-12, abs=1e-15
    )
    if sampling == "fixed":  # a given gradient norm, and the linear closure = the response at m = 0
        for m, closure in ((0.7, "mean-field"), (0.0, "linear")):
            eff_m = clipped_dynamics.effective_linear_model(basin=basin, optimizer=opt, gradient_norm=m)
            dm = spectral_directions(basin=sb, optimizer=opt, sampling="fixed", closure=closure, gradient_norm=m)
            np.testing.assert_allclose(dm.drift[:3], np.asarray(eff_m.drift)[order], rtol=1e-12)
            np.testing.assert_allclose(dm.noise_var[:3], np.asarray(eff_m.noise_var)[order], rtol=1e-12)


@pytest.mark.parametrize("mode", ["sgd", "noise"])
def test_unclipped_curve_equals_exact_quadratic_loss(mode):
    """Unclipped, fixed batches: the spectral curve is dptheory.quadratic's exact E L(t) from e(0) = 0."""
    basin = Basin(dim=40, curvatures=(1.0, 0.3, 0.01), sample_std=0.5, flat_curvature=0.002)
    opt = Optimizer(lr=0.7, batch_size=5, noise_multiplier=3.0, mode=mode, ref_clip_norm=0.4, clip_norm=0.4)
    steps = np.array([0, 1, 7, 100, 5000])
    dyn = quadratic.noise_only_dynamics(basin=basin, optimizer=opt)
    ref = quadratic.expected_loss(
        dynamics=dyn, curvatures=basin.curvature_array, init_error=0.0, steps=steps, flat_curvature=0.002
    )
    curve = spectral_excess_loss(
        basin=spectral_basin_from_basin(basin=basin), optimizer=opt, steps=steps, sampling="fixed"
    )
    np.testing.assert_allclose(curve.excess, ref.train, rtol=1e-12)
    assert np.all(curve.bias == 0)


# ---------------------------------------------------------------------------------------------
# the empirical clip law: isotropic limit, proofs meet code
# ---------------------------------------------------------------------------------------------


def test_empirical_shrinkage_of_gaussian_samples_is_alpha0():
    """g_i ~ N(0, s² I_d): γ_j → α₀, V_j → E‖clip g‖²/d, clip fraction → P(‖g‖ > C), within K SE."""
    rng = np.random.default_rng(11)
    n, d, s, c = 200_000, 20, 0.3, 1.2
    g = s * rng.standard_normal((n, d))
    norms = np.linalg.norm(g, axis=1)
    stats = GradientStatistics(norms=norms, top_projections=g)
    sb = SpectralBasin(dim=d, top_eigenvalues=np.ones(d), bulk_eigenvalues=np.zeros(0), bulk_weights=np.zeros(0),
                       gradients=stats, n_train=math.inf)  # fmt: skip
    dirs = spectral_directions(basin=sb, optimizer=Optimizer(lr=0.1, batch_size=10, clip_norm=c, mode="clip"))
    alpha0 = clipping.linear_response_shrinkage(dim=d, std=s, clip_norm=c)
    phi = np.minimum(1.0, c / norms)
    per_example = phi[:, None] - (norms > c)[:, None] * (c / norms)[:, None] * g**2 / norms[:, None] ** 2
    se = per_example.std(axis=0, ddof=1) / math.sqrt(n)
    assert np.all(np.abs(dirs.shrinkage - alpha0) <= K * se)
    second = clipping.clipped_gaussian_second_moment(dim=d, mean_norm=0.0, std=s, clip_norm=c) / d
    per_v = phi[:, None] ** 2 * g**2
    assert np.all(np.abs(dirs.sample_var - second) <= K * per_v.std(axis=0, ddof=1) / math.sqrt(n) + 1e-3 * second)
    frac = clipping.clip_probability(dim=d, mean_norm=0.0, std=s, clip_norm=c)
    assert abs(dirs.clip_fraction - frac) <= K * math.sqrt(frac * (1 - frac) / n)


def test_proof_closed_forms_meet_the_code():
    """Proof and code meet: the proofs' closed forms, evaluated on random arguments, equal dptheory's."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        eta, a, f, tau2, kap = 0.4, rng.uniform(0.01, 3.0), rng.normal(), rng.uniform(0, 2), rng.uniform(0, 0.3)
        t = np.array([0, 1, 5, 40])
        mean, var = moment_curves(lr=eta, drift=[a], force=[f], noise_var=[tau2], poisson_mult=kap, steps=t)
        np.testing.assert_allclose(
            mean[:, 0], spectral_transient.mean_closed_form(t, eta, a, f), rtol=1e-10, atol=1e-14
        )
        ref = [float(spectral_transient.variance_closed_form(int(tt), eta, a, f, tau2, kap)) if tt else 0.0 for tt in t]
        np.testing.assert_allclose(var[:, 0], ref, rtol=1e-9, atol=1e-14)
    # sampling variance: Poisson and fixed factors of spectral_directions on a one-direction basin
    c = rng.normal(size=12)
    stats = GradientStatistics(norms=np.abs(c), top_projections=c[:, None])
    sb = SpectralBasin(dim=1, top_eigenvalues=np.ones(1), bulk_eigenvalues=np.zeros(0), bulk_weights=np.zeros(0),
                       gradients=stats, n_train=12)  # fmt: skip
    opt = Optimizer(lr=0.1, batch_size=3, mode="sgd")
    pois = spectral_directions(basin=sb, optimizer=opt, sampling="poisson")
    fixed = spectral_directions(basin=sb, optimizer=opt, sampling="fixed")
    total_poisson = pois.noise_var[0] + pois.poisson_mult * pois.clipped_mean[0] ** 2  # at e = 0
    assert total_poisson == pytest.approx(
        float(spectral_sampling_variance.poisson_variance(list(c), 3, 0.25)), rel=1e-12
    )
    assert fixed.noise_var[0] == pytest.approx(float(spectral_sampling_variance.fixed_variance(list(c), 3)), rel=1e-12)
    # clip Jacobian diagonal: per-example shrinkage of one example
    p, r, cn = 0.6, 1.5, 0.9
    stats1 = GradientStatistics(norms=np.array([r, r]), top_projections=np.array([[p], [-p]]))
    sb1 = SpectralBasin(dim=4, top_eigenvalues=np.ones(1), bulk_eigenvalues=np.array([1.0]), bulk_weights=np.array([3.0]),
                        gradients=stats1, n_train=2)  # fmt: skip
    gam = spectral_directions(basin=sb1, optimizer=Optimizer(lr=0.1, batch_size=1, clip_norm=cn, mode="clip")).shrinkage
    assert gam[0] == pytest.approx(float(spectral_linear_response.shrinkage_diagonal(p * p, r, cn)), rel=1e-14)
    assert gam[1] == pytest.approx(
        float(spectral_linear_response.shrinkage_diagonal((r * r - p * p) / 3, r, cn)), rel=1e-14
    )


# ---------------------------------------------------------------------------------------------
# closed-form moments: against the recursion, window sums, numerical stability
# ---------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    a=st.one_of(st.just(0.0), st.floats(1e-6, 3.9)),
    f=st.floats(-2, 2),
    tau2=st.floats(0, 3),
    kap=st.one_of(st.just(0.0), st.floats(0, 0.5)),
    t0=st.integers(0, 40),
    n=st.integers(1, 60),
)
def test_moments_equal_the_recursion_iterated(a, f, tau2, kap, t0, n):
    """Curves and windows = the exact second-moment recursion iterated step by step (slow twin)."""
    eta = 0.5
    m1 = m2 = 0.0
    curve_b, curve_v = [], []
    for _ in range(t0 + n):
        curve_b.append(m1 * m1)
        curve_v.append(m2 - m1 * m1)
        m1, m2 = (
            (1 - eta * a) * m1 - eta * f,
            (1 - eta * a) ** 2 * m2
            - 2 * (1 - eta * a) * eta * f * m1
            + eta**2 * f**2
            + eta**2 * (tau2 + kap * (f * f + 2 * a * f * m1 + a * a * m2)),
        )
    t = np.arange(t0 + n)
    mean, var = moment_curves(lr=eta, drift=[a], force=[f], noise_var=[tau2], poisson_mult=kap, steps=t)
    scale = 1.0 + max(np.max(curve_b), np.max(np.abs(curve_v)))
    np.testing.assert_allclose(mean[:, 0] ** 2, curve_b, rtol=1e-9, atol=1e-12 * scale)
    np.testing.assert_allclose(var[:, 0], curve_v, rtol=1e-8, atol=1e-11 * scale)
    b2, v = window_moments(lr=eta, drift=[a], force=[f], noise_var=[tau2], poisson_mult=kap, start=t0, stop=t0 + n)
    assert b2[0] == pytest.approx(np.mean(curve_b[t0:]), rel=1e-9, abs=1e-12 * scale)
    assert v[0] == pytest.approx(np.mean(curve_v[t0:]), rel=1e-8, abs=1e-11 * scale)


def test_slow_directions_have_no_cancellation():
    """ηa T ~ 1e-12: the window average equals its a → 0 limit (η²f² mean t², η²τ² mean t) to 1e-9."""
    eta, f, tau2, t0, t1 = 0.1, 0.7, 2.0, 10**5, 3 * 10**5
    t = np.arange(t0, t1, dtype=float)
    for a in (1e-18, 1e-13):
        b2, v = window_moments(lr=eta, drift=[a], force=[f], noise_var=[tau2], poisson_mult=0.01, start=t0, stop=t1)
        assert b2[0] == pytest.approx(eta**2 * f**2 * np.mean(t**2), rel=1e-6)
        assert v[0] == pytest.approx(eta**2 * (0.01 * f * f + tau2) * np.mean(t), rel=1e-6)
    assert geometric_sum(1e-17, 10**6) == pytest.approx(10**6, rel=1e-9)


def test_stationary_limit_of_the_window():
    basin, _, _ = _stats_basin()
    opt = _opt()
    w = spectral_window_excess(basin=basin, optimizer=opt, start=10**9, stop=10**9 + 10)
    assert w.excess == pytest.approx(w.stationary, rel=1e-9)
    c = spectral_excess_loss(basin=basin, optimizer=opt, steps=[10**9])
    assert c.excess[0] == pytest.approx(c.stationary, rel=1e-9)
    assert c.excess[0] == pytest.approx(c.bias[0] + c.noise[0], rel=1e-15)


# ---------------------------------------------------------------------------------------------
# limits
# ---------------------------------------------------------------------------------------------


def test_limits_of_clip_norm_noise_and_batch():
    basin, _, _ = _stats_basin()
    w = dict(start=50, stop=400)
    sgd = spectral_window_excess(basin=basin, optimizer=_opt("sgd"), **w)
    huge = spectral_window_excess(basin=basin, optimizer=_opt("clip", clip_norm=1e9), **w)
    noiseless = spectral_window_excess(basin=basin, optimizer=_opt("noise", noise_multiplier=0.0), **w)
    assert huge.excess == pytest.approx(sgd.excess, rel=1e-12) and noiseless.excess == pytest.approx(
        sgd.excess, rel=1e-14
    )
    assert sgd.bias < 1e-25 * sgd.noise  # mean_i g_i = 0 at the minimum: no bias without clipping
    clip = spectral_window_excess(basin=basin, optimizer=_opt("clip", clip_norm=0.3), **w)
    assert clip.bias > 0.1 * clip.excess  # skewed law: clipping bias
    # full batch (B = n, fixed) and Poisson q = 1 remove the sampling noise: only the bias is left
    for sampling in ("fixed", "poisson"):
        full = spectral_window_excess(basin=basin, optimizer=_opt("clip", batch_size=300), sampling=sampling, **w)
        assert full.noise == 0.0 and full.bias > 0
    # a streaming law (n_train = inf) differs from n = 300 only by the finite-population factor
    stream, _, _ = _stats_basin(n_train=math.inf)
    d300 = spectral_directions(basin=basin, optimizer=_opt("sgd"))
    dinf = spectral_directions(basin=stream, optimizer=_opt("sgd"))
    np.testing.assert_allclose(d300.noise_var, dinf.noise_var * (1 - 20 / 300), rtol=1e-12)


def test_noise_grows_with_sigma_and_recovery_slows_with_clipping():
    basin, _, _ = _stats_basin()
    losses = [
        spectral_window_excess(basin=basin, optimizer=_opt(noise_multiplier=s), start=100, stop=300).noise
        for s in (0, 1, 2)
    ]
    assert losses[0] < losses[1] < losses[2]
    t_sgd = spectral_recovery_time(basin=basin, optimizer=_opt("sgd"), displacement=0.1)
    t_clip = spectral_recovery_time(basin=basin, optimizer=_opt("clip", clip_norm=0.3), displacement=0.1)
    assert t_clip > t_sgd


# ---------------------------------------------------------------------------------------------
# recovery time and clip fraction
# ---------------------------------------------------------------------------------------------


def test_recovery_time_single_direction_closed_form():
    """b = 0, fixed batches: Δ(t) ∝ (1 − ηγλ)^{2t}, crossing interpolated like curves.first_crossing."""
    basin = spectral_basin_from_basin(basin=Basin(dim=30, curvatures=(1.0, 0.2), sample_std=0.4))
    opt = Optimizer(lr=0.3, batch_size=4, clip_norm=0.5, noise_multiplier=1.0, mode="dpsgd")
    dirs = spectral_directions(basin=basin, optimizer=opt, sampling="fixed")
    rho = 1 - opt.lr * dirs.drift[0]
    t = np.arange(200)
    curve = rho ** (2 * t)
    for thr in (0.5, 0.1, 0.013):
        got = spectral_recovery_time(basin=basin, optimizer=opt, displacement=0.2, threshold=thr, sampling="fixed")
        assert got == pytest.approx(first_crossing(curve, threshold=thr), rel=1e-12)
    assert spectral_recovery_time(basin=basin, optimizer=opt, displacement=0.2, threshold=1.0) == 0.0
    # the second top direction (index 1) and an array displacement along it agree
    t1 = spectral_recovery_time(basin=basin, optimizer=opt, displacement=0.2, direction=1)
    t1_arr = spectral_recovery_time(basin=basin, optimizer=opt, displacement=np.array([0.0, 0.2]))
    assert t1 == t1_arr > spectral_recovery_time(basin=basin, optimizer=opt, displacement=0.2)
    # flat bulk (λ = 0) has no excess to recover from
    with pytest.raises(ValueError, match="no excess loss"):
        spectral_recovery_time(basin=basin, optimizer=opt, displacement=0.2, direction="bulk")


def test_recovery_time_includes_the_pull_of_the_fixed_point():
    """With a clipping bias the stationary mean is −b and Δ(t) = R^tδ² − 2bρ^tδ: a push away from w*
    (δ opposite to b) starts above ½λδ² and takes longer than one toward w*."""
    basin, _, _ = _stats_basin()
    opt = _opt("clip", clip_norm=0.3)
    dirs = spectral_directions(basin=basin, optimizer=opt)
    j = int(np.argmax(np.abs(dirs.shift[:3])))
    away = -0.05 * np.sign(dirs.shift[j])
    t = np.arange(0, 4000)
    ex = recovery_excess(lr=opt.lr, drift=dirs.drift[[j]], force=dirs.clipped_mean[[j]], poisson_mult=dirs.poisson_mult,
                         displacement=[away], steps=t)[:, 0]  # fmt: skip
    assert ex[0] > away**2
    target = 0.1 * away**2
    want = first_crossing(ex, threshold=target)
    assert spectral_recovery_time(basin=basin, optimizer=opt, displacement=away, direction=j) == pytest.approx(
        want, rel=1e-12
    )
    toward = spectral_recovery_time(basin=basin, optimizer=opt, displacement=-away, direction=j)
    assert toward < want


def test_clip_fraction_linear_and_unclipped():
    basin, z, _ = _stats_basin()
    norms = np.linalg.norm(z, axis=1)
    for c in (0.2, np.median(norms), 5.0):
        assert spectral_clip_fraction(basin=basin, optimizer=_opt("clip", clip_norm=c)) == pytest.approx(
            np.mean(norms > c)
        )
    assert spectral_clip_fraction(basin=basin, optimizer=_opt("sgd")) == 0.0
    mf = spectral_clip_fraction(basin=basin, optimizer=_opt(clip_norm=np.median(norms)), closure="mean-field")
    assert 0.3 < mf < 0.7  # smoothed around the median


def test_gaussian_gradients_validation():
    with pytest.raises(ValueError, match="std"):
        GaussianGradients(std=-1.0)
    with pytest.raises(ValueError, match="support"):
        GaussianGradients(std=1.0, support="bulk")


# ---------------------------------------------------------------------------------------------
# performance: a network-sized model evaluates in milliseconds
# ---------------------------------------------------------------------------------------------


def test_network_sized_model_is_fast():
    """k = 100, m = 100 bulk nodes, n = 50 000 examples: a window average well under 0.5 s (measured ~10 ms)."""
    rng = np.random.default_rng(0)
    n, k, m, d = 50_000, 100, 100, 100_000
    top = np.sort(rng.gamma(2.0, 1.0, k))[::-1]
    proj = rng.standard_normal((n, k)) * np.sqrt(top) * 0.1
    norms = np.sqrt(np.sum(proj**2, axis=1) + rng.gamma(5.0, 0.2, n))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        basin = SpectralBasin(dim=d, top_eigenvalues=top, bulk_eigenvalues=np.linspace(-0.01, 0.5, m),
                              bulk_weights=np.full(m, (d - k) / m), gradients=GradientStatistics(norms=norms, top_projections=proj),
                              n_train=n)  # fmt: skip
    opt = Optimizer(lr=0.1, batch_size=256, clip_norm=float(np.median(norms)), noise_multiplier=1.0)
    spectral_window_excess(basin=basin, optimizer=opt, start=6000, stop=9000)  # warm up
    t0 = time.perf_counter()
    for _ in range(5):
        spectral_window_excess(basin=basin, optimizer=opt, start=6000, stop=9000)
    assert (time.perf_counter() - t0) / 5 < 0.5


# ---------------------------------------------------------------------------------------------
# the sorted prefix sums and the per-example-curvature drift
# ---------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 1400),
    k=st.integers(0, 4),
    seed=st.integers(0, 2**32 - 1),
    quantile=st.floats(0.0, 1.0),
    shift=st.sampled_from([0.0, 0.05, 1.0]),
    curv=st.booleans(),
    sketch=st.booleans(),
)
def test_sorted_sums_equal_brute_force(n, k, seed, quantile, shift, curv, sketch):
    """SortedGradientSums' reductions (prefix sums over norm-sorted blocks) = direct sums over the examples."""
    from dptheory.spectral_response import SortedGradientSums

    rng = np.random.default_rng(seed)
    p = rng.standard_normal((n, k))
    norms = np.sqrt(np.sum(p**2, axis=1) + rng.gamma(2.0, 1.0, n))
    norms[: n // 10] = 0.0 if k == 0 else norms[: n // 10]  # a few zero-norm examples when there is no top
    energy = np.maximum(norms**2 - np.sum(p**2, axis=1), 0.0)
    h = rng.random((n, k)) if curv else None
    x = rng.random((n, k)) if curv else None
    y = rng.standard_normal((n, 3)) if sketch else None
    sums = SortedGradientSums(
        norms=norms, projections=p, bulk_energy=energy, top_curvatures=h, top_radial_curvatures=x, bulk_sketch=y
    )
    c = float(np.quantile(norms, quantile)) + 1e-9
    red = sums.reductions(clip_norm=c, shift_sq=shift)
    rt = np.sqrt(norms**2 + shift)
    clipped = rt > c
    phi = np.where(clipped, c / np.where(clipped, rt, 1.0), 1.0)
    kap = np.where(clipped, c / np.where(clipped, rt, 1.0) ** 3, 0.0)
    want = dict(phi_p=phi @ p, kap_p2=kap @ p**2, phi2_p2=phi**2 @ p**2, phi=phi.sum(), kap=kap.sum(),
                phi2=(phi**2).sum(), kap_e=kap @ energy, phi2_e=phi**2 @ energy)  # fmt: skip
    if curv:
        want.update(phi_h=phi @ h, rad_x=np.where(clipped, phi, 0.0) @ x)
    if sketch:
        want.update(phi_sk=phi @ y)
    assert red["clipped"] == int(clipped.sum())
    for key, value in want.items():
        np.testing.assert_allclose(
            red[key], value, rtol=1e-10, atol=1e-10 * (1 + np.max(np.abs(value), initial=0.0)), err_msg=key
        )


def test_sorted_sums_need_both_per_example_curvatures():
    """The two per-example curvature arrays enter the drift together: either alone is a ValueError, not dropped."""
    from dptheory.spectral_response import SortedGradientSums

    base = dict(norms=np.ones(3), projections=np.full((3, 1), 0.5), bulk_energy=np.full(3, 0.75))
    for one in ("top_curvatures", "top_radial_curvatures"):
        with pytest.raises(ValueError, match="go together"):
            SortedGradientSums(**base, **{one: np.ones((3, 1))})


def test_per_example_curvatures_equal_to_the_mean_hessian_reproduce_it():
    """u_jᵀH_iu_j = λ_j and (u_jᵀĝ_i)(ĝ_iᵀH_iu_j) = λ_j p_ij²/R_i² (H_i = H): the same drift as the default model."""
    basin, z, lam = _stats_basin()
    k = basin.top_dim
    norms = np.linalg.norm(z, axis=1)
    h = np.tile(lam[:k], (z.shape[0], 1))
    x = h * z[:, :k] ** 2 / norms[:, None] ** 2
    stats = GradientStatistics(norms=norms, top_projections=z[:, :k], top_curvatures=h, top_radial_curvatures=x)
    same = SpectralBasin(dim=basin.dim, top_eigenvalues=basin.top_eigenvalues, bulk_eigenvalues=basin.bulk_eigenvalues,
                         bulk_weights=basin.bulk_weights, gradients=stats, n_train=basin.n_train)  # fmt: skip
    for c in (0.2, 0.8, math.inf):
        opt = _opt("clip", clip_norm=c) if math.isfinite(c) else _opt("sgd")
        a = spectral_directions(basin=basin, optimizer=opt)
        b = spectral_directions(basin=same, optimizer=opt)
        np.testing.assert_allclose(b.drift, a.drift, rtol=1e-12, atol=1e-15)


def test_least_squares_clipped_examples_lose_their_response():
    """g_i = a_i r_i, H_i = a_iaᵢᵀ: with the measured per-example curvatures a fully clipped set has drift 0,
    while the mean-Hessian model keeps γ_j ≈ mean φ (dptheory.spectral_response, neglected term (ii))."""
    rng = np.random.default_rng(4)
    n, d = 500, 5
    a = rng.standard_normal((n, d))
    r = rng.standard_normal(n)
    r -= a @ np.linalg.lstsq(a, r, rcond=None)[0]  # residuals at the least-squares minimiser: Σ a_i r_i = 0
    lam, u = np.linalg.eigh(a.T @ a / n)
    lam, u = lam[::-1], u[:, ::-1]
    au = a @ u
    g = au * r[:, None]
    norms = np.linalg.norm(g, axis=1)
    mean_h = GradientStatistics(norms=norms, top_projections=g)
    per_ex = GradientStatistics(norms=norms, top_projections=g, top_curvatures=au**2, top_radial_curvatures=au**2)
    kw = dict(dim=d, top_eigenvalues=lam, bulk_eigenvalues=np.zeros(0), bulk_weights=np.zeros(0), n_train=n)
    opt = Optimizer(lr=0.1, batch_size=10, clip_norm=0.5 * float(norms.min()), mode="clip")  # every example clipped
    assert spectral_directions(basin=SpectralBasin(**kw, gradients=per_ex), optimizer=opt).drift == pytest.approx(
        0.0, abs=1e-15
    )
    assert np.all(spectral_directions(basin=SpectralBasin(**kw, gradients=mean_h), optimizer=opt).shrinkage > 0)


def test_bulk_sketch_gives_the_bulk_clipping_bias():
    """An orthonormal sketch of the bulk (here: the bulk coordinates themselves) gives Σ_l w_l (m_c)_l² =
    ‖P_bulk m_c‖² exactly, spread over the nodes like the energy; without it the bulk has no bias."""
    basin, z, lam = _stats_basin(d=8, k=3, nodes=np.array([0.2, 0.05]), weights=np.array([2.0, 3.0]))
    norms = np.linalg.norm(z, axis=1)
    stats = GradientStatistics(norms=norms, top_projections=z[:, :3], bulk_sketch=z[:, 3:])
    sk = SpectralBasin(dim=8, top_eigenvalues=lam[:3], bulk_eigenvalues=np.array([0.2, 0.05]),
                       bulk_weights=np.array([2.0, 3.0]), gradients=stats, n_train=300)  # fmt: skip
    for c in (0.2, 0.6):
        opt = _opt("clip", clip_norm=c)
        with_sketch = spectral_directions(basin=sk, optimizer=opt)
        without = spectral_directions(basin=basin, optimizer=opt)
        phi = np.minimum(1.0, c / norms)
        bulk_bias = np.sum(((phi[:, None] * z[:, 3:]).mean(axis=0)) ** 2)
        assert np.sum(sk.weights[3:] * with_sketch.clipped_mean[3:] ** 2) == pytest.approx(bulk_bias, rel=1e-12)
        np.testing.assert_allclose(with_sketch.clipped_mean[3:] ** 2, sk.bulk_shares * bulk_bias, rtol=1e-12)
        assert np.all(without.clipped_mean[3:] == 0.0)
        np.testing.assert_allclose(with_sketch.clipped_mean[:3], without.clipped_mean[:3], rtol=1e-13)
        assert np.all(with_sketch.sample_var >= 0)
    with pytest.raises(ValueError, match="bulk_sketch must have shape"):
        GradientStatistics(norms=norms, top_projections=z[:, :3], bulk_sketch=z[:10, 3:])
