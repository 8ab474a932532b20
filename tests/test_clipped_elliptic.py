"""Elliptical closure of the clipped step (dptheory.clipped_elliptic) against the exact engines and its own limits.

Monte Carlo: the exact reduced engine (simulations.basin.engine, engine "reduced"), R replicas after a
burn-in of 20 relaxation times; standard errors by batch means (one batch = 10 relaxation times,
simulations.common.stats.batch_means). Theory-vs-simulation tolerance: |MC − prediction| ≤
MODEL_TOL · prediction + K_SE · SE with K_SE = 4 (a false alarm has probability < 1e-4 per
comparison) and MODEL_TOL = 1 %, the closure's stated accuracy (nothing in the closure is fitted).
The points are partly saturated, saturated, unequal-curvature and large-step states (all but
"r2-poisson" are rows of the accuracy table in docs/findings-closure.md §2).
"""

from __future__ import annotations

import inspect
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special

from dptheory import clipped_dynamics as cd
from dptheory import clipped_elliptic as ce
from dptheory import clipping
from dptheory.records import Basin, Optimizer
from simulations.basin.engine import RunSpec, simulate
from simulations.common.stats import batch_means

K_SE = 4.0
MODEL_TOL = 0.01

L3 = (1.0, 0.5, 0.25)
POINTS = {
    # d = 400, r = 3, λ = (1, ½, ¼), η = 1.8, saturation 0.77 (radial closure +6 %)
    "r3-large-step": (
        Basin(dim=400, curvatures=L3, sample_std=0.02),
        Optimizer(lr=1.8, batch_size=16, clip_norm=0.3, noise_multiplier=16.0),
        "fixed",
    ),
    # r = 2, basin spread, ηγλ = 0.89, saturation 0.6 (radial closure +2.6 %)
    "r2-basin": (
        Basin(dim=2, curvatures=(1.0, 0.5), sample_std=1.0, spread="basin"),
        Optimizer(lr=3.888, batch_size=16, clip_norm=0.5, noise_multiplier=12.0),
        "fixed",
    ),
    # equal curvatures at the large step: the radial chain is exact here
    "r3-equal-large-step": (
        Basin(dim=400, curvatures=(1.0,) * 3, sample_std=0.02),
        Optimizer(lr=1.8, batch_size=16, clip_norm=0.3, noise_multiplier=16.0),
        "fixed",
    ),
    # fresh points
    "r2-quarter": (
        Basin(dim=2, curvatures=(1.0, 0.25), sample_std=0.5, spread="basin"),
        Optimizer(lr=2.0, batch_size=8, clip_norm=0.3, noise_multiplier=6.0),
        "fixed",
    ),
    "r1-saturated": (
        Basin(dim=3, curvatures=(1.0,), sample_std=0.02, spread="basin"),
        Optimizer(lr=0.6, batch_size=4, clip_norm=0.1, noise_multiplier=15.0),
        "fixed",
    ),
    "flat-curved": (
        Basin(dim=6, curvatures=(1.0, 0.5), sample_std=0.05, spread="basin", flat_curvature=0.3),
        Optimizer(lr=0.5, batch_size=8, clip_norm=0.2, noise_multiplier=20.0),
        "fixed",
    ),
    "r2-poisson": (
        Basin(dim=2, curvatures=(1.0, 0.4), sample_std=0.3, spread="basin"),
        Optimizer(lr=1.5, batch_size=4, clip_norm=0.3, noise_multiplier=3.0),
        "poisson",
    ),
}


# Monte Carlo budget per point: (window in relaxation times, replicas, largest relative SE of the loss)
BUDGET = {
    "r3-large-step": (1200, 32, 0.005),
    "r2-basin": (1000, 32, 0.008),
    "r3-equal-large-step": (1600, 32, 0.007),
    "r2-quarter": (600, 32, 0.006),
    "r1-saturated": (1200, 96, 0.012),  # a wide (exponential-like) law: this point is for the clip fraction
    "flat-curved": (800, 32, 0.008),
    "r2-poisson": (1000, 32, 0.006),
}


def _monte_carlo(basin, opt, sampling, *, window, replicas=32, seed=5):
    """(loss, clip fraction, mean clip factor) Estimates of the stationary state from the reduced engine.

    Clip statistics are NaN for an empty Poisson batch; those records are filled with the overall mean
    (no bias in the mean; the SE is then very slightly optimistic, by the empty-batch rate e^{−B}).
    """
    dyn = cd.effective_linear_model(basin=basin, optimizer=opt, sampling=sampling)
    drifts = list(dyn.drift) + ([dyn.flat_drift] if basin.flat_curvature > 0 else [])
    relax = max(1.0, 1.0 / (opt.lr * min(drifts)))
    burn, steps = int(20 * relax) + 1, int(window * relax)
    run = RunSpec(
        steps=burn + steps, replicas=replicas, seed=seed, sampling=sampling, record_every=max(1, int(relax / 4))
    )
    tr = simulate(basin=basin, optimizer=opt, run=run, engine="reduced")
    sel = tr.steps > burn
    nb = max(2, min(int(steps / (10 * relax)), int(sel.sum())))
    out = []
    for x in (tr.train_loss, tr.clip_fraction, tr.mean_clip_factor):
        x = x[:, sel]
        out.append(batch_means(np.where(np.isnan(x), np.nanmean(x), x), n_batches=nb))
    return tuple(out)


@pytest.mark.parametrize("name", list(POINTS))
def test_stationary_loss_and_clip_statistics_match_the_exact_engine(name):
    basin, opt, sampling = POINTS[name]
    window, replicas, se_max = BUDGET[name]
    loss, frac, factor = _monte_carlo(basin, opt, sampling, window=window, replicas=replicas)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # these points solve without warnings
        pred = cd.stationary_excess_loss(basin=basin, optimizer=opt, sampling=sampling)
    assert loss.se < se_max * pred, f"{name}: Monte Carlo too noisy ({loss.se:.2g}) for this test"
    assert abs(loss.mean - pred) <= MODEL_TOL * pred + K_SE * loss.se, (name, loss, pred)
    # clip statistics averaged over the law of m: 0.003 absolute (fraction), 1 % relative (factor)
    cf = cd.stationary_clip_fraction(basin=basin, optimizer=opt, sampling=sampling)
    assert abs(frac.mean - cf) <= 0.003 + K_SE * frac.se, (name, frac, cf)
    phi = cd.stationary_mean_clip_factor(basin=basin, optimizer=opt, sampling=sampling)
    assert abs(factor.mean - phi) <= 0.01 * phi + K_SE * factor.se, (name, factor, phi)
    if name == "r3-large-step":  # the radial closure fails this test by ≈ 6 %: the test can tell them apart
        radial = cd.stationary_excess_loss(basin=basin, optimizer=opt, sampling=sampling, closure="radial")
        assert radial - loss.mean > 0.04 * radial + K_SE * loss.se


def test_saturated_clip_fraction_is_averaged_over_the_law_of_the_gradient_norm():
    # r = 1 saturated: the stationary m has an exponential-like law reaching below C; at its root mean
    # square every sample is clipped (1.000), while the exact engine clips 83 %
    basin, opt, sampling = POINTS["r1-saturated"]
    _, frac, _ = _monte_carlo(basin, opt, sampling, window=600, seed=9)
    rms = cd.stationary_clip_fraction(basin=basin, optimizer=opt, closure="mean-field")
    assert rms > 0.999 and rms - frac.mean > 0.15
    assert abs(cd.stationary_clip_fraction(basin=basin, optimizer=opt) - frac.mean) <= 0.003 + K_SE * frac.se


def test_the_chain_matters_at_large_steps_and_meets_its_small_step_limit(monkeypatch):
    # equal curvatures: large step (ηγλ ≈ 0.65): the discrete chain and its Fokker–Planck limit differ by
    # > 1 % (the chain is exact there: test above); small step: they agree to O(η) (2.4e-4 at ηC/θ = 0.002)
    large = POINTS["r3-equal-large-step"][:2]
    small = (
        Basin(dim=2, curvatures=(1.0, 1.0), sample_std=0.0, spread="basin"),
        Optimizer(lr=0.01, batch_size=4, clip_norm=0.1, noise_multiplier=126.0),
    )
    out = {}
    for key, (b, o) in {"large": large, "small": small}.items():
        ce._solve.cache_clear()
        chain = ce.elliptic_stationary_law(basin=b, optimizer=o)
        assert chain.method == "chain"
        with monkeypatch.context() as mp:
            mp.setattr(ce, "_CHAIN_MAX_CELLS", 0)
            ce._solve.cache_clear()
            fp = ce.elliptic_stationary_law(basin=b, optimizer=o)
        assert fp.method == "fokker-planck"
        out[key] = float(chain.second[0] / fp.second[0] - 1)
    ce._solve.cache_clear()
    assert abs(out["large"]) > 0.01
    assert abs(out["small"]) < 5e-4


@pytest.mark.parametrize("mode", ["sgd", "noise"])
@pytest.mark.parametrize("sampling", ["fixed", "poisson"])
def test_unclipped_modes_are_the_exact_gaussian_law(mode, sampling):
    basin = Basin(dim=30, curvatures=(1.0, 0.3, 0.3), sample_std=0.7)
    opt = Optimizer(lr=0.4, batch_size=8, clip_norm=2.0, noise_multiplier=1.5, mode=mode)
    law = ce.elliptic_stationary_law(basin=basin, optimizer=opt, sampling=sampling)
    kappa = 1.0 / 8 if sampling == "poisson" else 0.0
    q = 0.7**2 / 8 + opt.noise_std**2 / 64
    lam = basin.curvature_array
    np.testing.assert_allclose(law.second, 0.4 * q / (lam * (2 - 0.4 * lam * (1 + kappa))), rtol=1e-14)
    assert (law.method, law.clip_fraction, law.mean_clip_factor) == ("exact", 0.0, 1.0)


def test_noise_free_step_has_zero_loss_and_linear_drift_is_the_mean_field():
    b = Basin(dim=4, curvatures=(1.0, 0.5), sample_std=0.0)
    law = ce.elliptic_stationary_law(basin=b, optimizer=Optimizer(lr=0.1, batch_size=4, clip_norm=1.0, mode="clip"))
    assert np.all(law.second == 0.0) and law.method == "exact"
    # C far above every gradient norm the law reaches: clipping never acts, the Gaussian law is exact
    wide = Optimizer(lr=0.5, batch_size=16, clip_norm=1e3, noise_multiplier=1e-3)
    law = ce.elliptic_stationary_law(basin=Basin(dim=50, curvatures=(1.0, 0.2), sample_std=1.0), optimizer=wide)
    mf = cd.stationary_excess_loss(
        basin=Basin(dim=50, curvatures=(1.0, 0.2), sample_std=1.0), optimizer=wide, closure="mean-field"
    )
    assert law.method == "exact"
    assert 0.5 * float(np.dot((1.0, 0.2), law.second)) == pytest.approx(mf, rel=1e-14)


def test_unstable_drift_falls_back_to_the_mean_field_with_a_warning():
    # ηγλ ≈ 2 at the mean-field state: no positive elliptical shape solves the balances
    b = Basin(dim=1000, curvatures=(1.0, 0.5), sample_std=1.0)
    o = Optimizer(lr=3.0, batch_size=16, clip_norm=31.6, noise_multiplier=1.0)
    ce._solve.cache_clear()
    with pytest.warns(RuntimeWarning, match="no positive solution"):
        law = ce.elliptic_stationary_law(basin=b, optimizer=o)
    assert law.method == "mean-field"


# ---------------------------------------------------------------------------------------------
# the angular (Dirichlet) quadrature and the clip table
# ---------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    w1=st.floats(0.0, 10.0),
    w2=st.floats(0.0, 10.0),
    k1=st.integers(1, 30),
    k2=st.integers(1, 30),
    tilt=st.sampled_from([None, 0, 1]),
)
def test_two_group_rule_equals_gauss_jacobi(w1, w2, k1, k2, tilt):
    # s = w2 + (w1 − w2) U with U ~ Beta(a, b): a 60-point Gauss–Jacobi rule is the reference
    x, p = ce.dirichlet_quadrature(weights=[w1, w2], counts=[k1, k2], tilt=tilt)
    a, b = k1 / 2 + (tilt == 0), k2 / 2 + (tilt == 1)
    t, wt = special.roots_jacobi(60, b - 1, a - 1)  # weight (1 − t)^{b−1}(1 + t)^{a−1}; U = (1 + t)/2
    u, wt = (1 + t) / 2, wt / wt.sum()
    # 1/√(1+s) is analytic inside the Bernstein ellipse of [lo, hi] through its pole s = −1, of radius
    # ρ = a + √(a² − 1), a = 1 + 2(1 + lo)/(hi − lo); an N-point Gauss rule errs by O(ρ^{−2N}) there
    lo, hi = min(w1, w2), max(w1, w2)
    a_ell = 1.0 + 2.0 * (1.0 + lo) / max(hi - lo, 1e-12)
    rho = a_ell + math.sqrt(a_ell**2 - 1.0)
    n_nodes = inspect.signature(ce.dirichlet_quadrature).parameters["nodes"].default
    smooth_rel = max(rho ** (-2.0 * n_nodes), 1e-12)
    for f, rel in ((lambda s: s**5 - 3 * s**2, 1e-9), (lambda s: 1.0 / np.sqrt(1.0 + s), smooth_rel)):
        ref = float(f(w2 + (w1 - w2) * u) @ wt)  # exact for degree < 16 (and to ~1e-12 for 1/√(1+s))
        assert float(f(x) @ p) == pytest.approx(ref, rel=rel, abs=1e-9)


def test_many_group_rule_against_sampling():
    rng = np.random.default_rng(1)
    w, k = np.array([0.1, 0.4, 1.0, 2.5]), np.array([1, 2, 1, 3])
    z = rng.standard_normal((400_000, int(k.sum())))
    u2 = z**2 / (z**2).sum(1, keepdims=True)
    s = u2 @ np.repeat(w, k)
    fs = 1.0 / np.sqrt(0.2 + s)
    x, p = ce.dirichlet_quadrature(weights=w, counts=k)
    assert abs(float((1.0 / np.sqrt(0.2 + x)) @ p) - fs.mean()) <= K_SE * fs.std() / math.sqrt(fs.size)
    first = u2[:, 0]  # the tilt by group 0 (one coordinate): E[u_1² F(s)] = (1/K) E_tilt[F(s)]
    xt, pt = ce.dirichlet_quadrature(weights=w, counts=k, tilt=0)
    sample = k.sum() * first * fs
    assert abs(float((1.0 / np.sqrt(0.2 + xt)) @ pt) - sample.mean()) <= K_SE * sample.std() / math.sqrt(fs.size)


def test_rule_degenerate_cases_and_validation():
    x, p = ce.dirichlet_quadrature(weights=[2.0, 2.0, 2.0], counts=[1, 4, 2])
    assert x.tolist() == [2.0] and p.tolist() == [1.0]
    with pytest.raises(ValueError, match="counts"):
        ce.dirichlet_quadrature(weights=[1.0, 2.0], counts=[1, 0])
    with pytest.raises(ValueError, match="weights"):
        ce.dirichlet_quadrature(weights=[1.0, float("nan")], counts=[1, 1])


@pytest.mark.parametrize(("n", "s", "c"), [(1, 0.05, 0.1), (2, 1.0, 0.5), (400, 0.02, 0.3), (50, 1.0, 1.0)])
def test_clip_table_matches_the_exact_moments(n, s, c):
    basin = (
        Basin(dim=n, curvatures=(1.0,) * n, sample_std=s, spread="basin")
        if n < 3
        else Basin(dim=n, curvatures=(1.0,), sample_std=s)
    )
    assert basin.noise_dim == n
    opt = Optimizer(lr=0.1, batch_size=8, clip_norm=c, noise_multiplier=2.0)
    table = ce._ClipTable(basin, opt, m_max=20.0 * c, scale=min(c, s * math.sqrt(n)))
    m = np.linspace(0.0, 20.0 * c, 37)[1:]
    gam = clipping.clipped_gaussian_mean_factor(dim=n, mean_norm=m, std=s, clip_norm=c)
    prob = clipping.clip_probability(dim=n, mean_norm=m, std=s, clip_norm=c)
    phi = clipping.gaussian_mean_clip_factor(dim=n, mean_norm=m, std=s, clip_norm=c)
    np.testing.assert_allclose(table("gamma", m), gam, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(table("phi", m), phi, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(table("prob", m), prob, rtol=1e-4, atol=1e-6)


def test_contraction_helper_and_validation():
    assert ce.second_moment_contraction(lr=1.0, factor=0.5, curvature=1.0, multiplicative=0.25) == pytest.approx(
        1 - 0.25 - 0.25 * 0.25
    )
    with pytest.raises(ValueError, match="sampling"):
        ce.elliptic_stationary_law(basin=POINTS["r2-basin"][0], optimizer=POINTS["r2-basin"][1], sampling="uniform")
