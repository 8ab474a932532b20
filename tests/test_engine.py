"""simulate(): reproducibility, exact limits, deterministic engine agreement, closed-form moments."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest

from dptheory.records import Basin, Mode, Optimizer
from simulations.basin.engine import RunSpec, simulate

K_SE = 4.0  # theory-vs-Monte-Carlo tolerance: 4 standard errors of the replica mean


def _same(a, b):
    for key, v in a.arrays().items():
        np.testing.assert_array_equal(v, b.arrays()[key], err_msg=key)


# ---------------------------------------------------------------- reproducibility


@pytest.mark.parametrize("engine", ["full", "reduced", "numpy"])
def test_same_seed_same_trace_different_seed_differs(engine):
    basin = Basin(dim=30, curvatures=(1.0, 0.5), sample_std=1.0)
    opt = Optimizer(lr=0.2, batch_size=4, clip_norm=1.5, noise_multiplier=1.0)
    run = RunSpec(steps=20, replicas=3, record_every=5, seed=11, init_error=1.0, init_flat_sq=0.3, sampling="poisson")
    a = simulate(basin=basin, optimizer=opt, run=run, engine=engine)
    b = simulate(basin=basin, optimizer=opt, run=run, engine=engine)
    _same(a, b)
    c = simulate(basin=basin, optimizer=opt, run=RunSpec(**{**run.__dict__, "seed": 12}), engine=engine)
    assert not np.array_equal(a.train_loss, c.train_loss)
    # replicas are distinct streams
    assert len(set(a.train_loss[:, -1].tolist())) == run.replicas


@pytest.mark.parametrize("engine", ["full", "reduced"])
def test_replica_streams_do_not_depend_on_replica_count_or_threads(engine):
    """Replica j is a function of (seed, j) only: the same whatever R and the number of threads."""
    basin = Basin(dim=40, curvatures=(1.0,), sample_std=0.5)
    opt = Optimizer(lr=0.3, batch_size=3, clip_norm=1.0, noise_multiplier=0.5)
    small = simulate(
        basin=basin, optimizer=opt, run=RunSpec(steps=15, replicas=2, seed=5, sampling="poisson"), engine=engine
    )
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        big = simulate(
            basin=basin, optimizer=opt, run=RunSpec(steps=15, replicas=5, seed=5, sampling="poisson"), engine=engine
        )
    finally:
        numba.set_num_threads(threads)
    for key, v in small.arrays().items():
        if key != "steps":
            np.testing.assert_array_equal(v, getattr(big, key)[:2], err_msg=key)


# ---------------------------------------------------------------- exact limits


@pytest.mark.parametrize("engine", ["full", "reduced"])
def test_huge_clip_norm_is_sgd_and_zero_sigma_is_clip_only(engine):
    basin = Basin(dim=25, curvatures=(2.0, 1.0, 0.3), sample_std=0.7, flat_curvature=0.1)
    run = RunSpec(steps=30, replicas=2, record_every=10, seed=3, init_error=2.0, init_flat_sq=1.0)
    sgd = simulate(basin=basin, optimizer=Optimizer(lr=0.2, batch_size=5, mode="sgd"), run=run, engine=engine)
    big_c = simulate(
        basin=basin, optimizer=Optimizer(lr=0.2, batch_size=5, clip_norm=1e300, mode="clip"), run=run, engine=engine
    )
    _same(sgd, big_c)
    assert np.all(sgd.clip_fraction == 0) and np.all(sgd.mean_clip_factor == 1) and np.all(sgd.clip_bias_norm == 0)
    clip = simulate(
        basin=basin, optimizer=Optimizer(lr=0.2, batch_size=5, clip_norm=0.5, mode="clip"), run=run, engine=engine
    )
    dp0 = simulate(
        basin=basin,
        optimizer=Optimizer(lr=0.2, batch_size=5, clip_norm=0.5, noise_multiplier=0.0),
        run=run,
        engine=engine,
    )
    _same(clip, dp0)
    assert np.all(clip.clip_fraction > 0)


def _deterministic_case(basis: bool, mask: bool):
    rng = np.random.default_rng(0)
    d, r = 12, 3
    basin = Basin(dim=d, curvatures=(1.5, 0.8, 0.2), sample_std=0.0, flat_curvature=0.05, heldout_flat_curvature=0.3)
    kw = {}
    if basis:
        kw["basis"], _ = np.linalg.qr(rng.standard_normal((d, r)))
    if mask:
        kw["mask"] = rng.random(d) < 0.6
        kw["optimum"] = rng.standard_normal(d)
    return basin, kw


@pytest.mark.parametrize("basis", [False, True])
@pytest.mark.parametrize("mask", [False, True])
def test_full_kernel_equals_numpy_engine_on_deterministic_runs(basis, mask):
    """s = 0, ν = 0: the run is deterministic, so the numba loop and the numpy loop must agree to
    rounding — through clipping, the mode switch, the lr schedule and the displacement."""
    basin, kw = _deterministic_case(basis, mask)
    opt = Optimizer(lr=0.4, batch_size=3, clip_norm=0.3, mode="clip")
    run = RunSpec(
        steps=40,
        replicas=2,
        record_every=7,
        seed=1,
        init_error=3.0,
        init_flat_sq=2.0,
        switch_step=20,
        switch_mode=Mode.SGD,
        displacement_step=30,
        displacement=1.0,
        lr_schedule="cosine",
    )
    a = simulate(basin=basin, optimizer=opt, run=run, engine="full", **kw)
    b = simulate(basin=basin, optimizer=opt, run=run, engine="numpy", **kw)
    for key, v in a.arrays().items():
        np.testing.assert_allclose(v, b.arrays()[key], rtol=1e-10, atol=1e-13, err_msg=key)
    assert np.any(a.clip_fraction[:, :2] == 1.0)  # the clipped phase did clip


def test_deterministic_reduced_equals_full():
    """With s = 0 and ν = 0 the flat error only contracts: ρ_t = |1 − η λ_f|^t ρ_0 in both engines."""
    basin = Basin(dim=15, curvatures=(1.0, 0.4), sample_std=0.0, flat_curvature=0.1)
    opt = Optimizer(lr=0.5, batch_size=2, clip_norm=0.2, mode="clip")
    run = RunSpec(steps=25, replicas=1, record_every=5, init_error=2.0, init_flat_sq=4.0)
    a = simulate(basin=basin, optimizer=opt, run=run, engine="full")
    b = simulate(basin=basin, optimizer=opt, run=run, engine="reduced")
    for key, v in a.arrays().items():
        np.testing.assert_allclose(v, b.arrays()[key], rtol=1e-10, atol=1e-14, err_msg=key)


def test_pruned_coordinates_stay_at_zero_weight():
    rng = np.random.default_rng(2)
    d = 10
    basin = Basin(dim=d, curvatures=(1.0, 1.0), sample_std=1.0)
    mask = np.arange(d) % 2 == 0
    w_star = rng.standard_normal(d)
    opt = Optimizer(lr=0.1, batch_size=4, clip_norm=1.0, noise_multiplier=1.0)
    tr = simulate(
        basin=basin,
        optimizer=opt,
        run=RunSpec(steps=50, replicas=2, record_every=50),
        mask=mask,
        optimum=w_star,
        init_weights=np.zeros(d),
    )
    # coordinate 1 (curved, pruned) keeps error −w*_1; so the loss is at least ½ λ w*_1²
    assert np.all(tr.train_loss >= 0.5 * w_star[1] ** 2 - 1e-12)


# ---------------------------------------------------------------- closed-form moments


def _exact_second_moment(*, lam, lr_t, nu_t, s, batch, e0, poisson, disp_step=-1, disp=0.0):
    """E e(t)² and E e(t) for one coordinate under unclipped steps, from the linear recursion

    e' = (1 − η λ N/B) e − (η/B)(s Σ_{i≤N} ζ_i + ν ξ),   N = B (fixed) or Poisson(B):
    E e' = (1 − ηλ) E e,  E e'² = [(1 − ηλ)² + η²λ² Var(N)/B²] E e² + η²(s² E N + ν²)/B².
    """
    mean, second = e0, e0 * e0
    out = []
    for t, (eta, nu) in enumerate(zip(lr_t, nu_t)):
        if t == disp_step:
            second += 2 * disp * mean + disp * disp
            mean += disp
        a = 1 - eta * lam
        var_n = batch if poisson else 0
        second = (a * a + eta * eta * lam * lam * var_n / batch**2) * second + eta**2 * (
            s * s * batch + nu * nu
        ) / batch**2
        mean = a * mean
        out.append(second)
    return np.array(out)


CASES = [
    # engine, mode, sampling, schedule, spread, flat_curvature, displacement
    ("reduced", "sgd", "fixed", "constant", "ambient", 0.0, False),
    ("full", "noise", "poisson", "cosine", "ambient", 0.2, True),
    ("reduced", "noise", "poisson", "multistep", "basin", 0.2, True),
    ("full", "sgd", "fixed", "multistep", "basin", 0.0, False),
    ("numpy", "noise", "fixed", "constant", "ambient", 0.1, True),
]


@pytest.mark.parametrize("engine,mode,sampling,schedule,spread,lam_f,disp", CASES)
def test_unclipped_moments_match_linear_recursion(engine, mode, sampling, schedule, spread, lam_f, disp):
    lam = np.array([1.0, 0.3])
    d = 20
    s = 0.8
    basin = Basin(dim=d, curvatures=tuple(lam), sample_std=s, spread=spread, flat_curvature=lam_f)
    opt = Optimizer(lr=0.3, batch_size=4, clip_norm=1.0, noise_multiplier=1.5, mode=mode)
    replicas = 400 if engine != "numpy" else 150
    run = RunSpec(
        steps=40,
        replicas=replicas,
        record_every=20,
        seed=7,
        init_error=2.0,
        init_flat_sq=3.0,
        sampling=sampling,
        lr_schedule=schedule,
        displacement_step=25 if disp else None,
        displacement=1.5 if disp else 0.0,
    )
    tr = simulate(basin=basin, optimizer=opt, run=run, engine=engine)
    from simulations.basin.engine import step_schedule_arrays

    lr_t, _, nu_t = step_schedule_arrays(opt, run)
    idx = tr.steps - 1
    r = lam.size
    c0 = run.init_error / math.sqrt(r)
    dc = run.displacement / math.sqrt(r)
    curved = sum(
        _exact_second_moment(
            lam=l,
            lr_t=lr_t,
            nu_t=nu_t,
            s=s,
            batch=4,
            e0=c0,
            poisson=sampling == "poisson",
            disp_step=run.displacement_step or -1,
            disp=dc,
        )[idx]
        for l in lam
    )
    s_flat = s if spread == "ambient" else 0.0
    m = d - r
    # the flat error is isotropic: E‖f‖² = m E f_1² with E f_1(0)² = ρ0²/m
    f1 = _exact_second_moment(lam=lam_f, lr_t=lr_t, nu_t=nu_t, s=s_flat, batch=4, e0=0.0, poisson=sampling == "poisson")
    f1_init = _exact_second_moment(
        lam=lam_f, lr_t=lr_t, nu_t=0 * nu_t, s=0.0, batch=4, e0=1.0, poisson=sampling == "poisson"
    )
    flat = m * f1[idx] + run.init_flat_sq * f1_init[idx]
    for name, theory in (("curved_err_sq", curved), ("flat_err_sq", flat)):
        x = getattr(tr, name)
        se = x.std(axis=0, ddof=1) / math.sqrt(replicas)
        assert np.all(np.abs(x.mean(axis=0) - theory) <= K_SE * se), (name, x.mean(axis=0), theory, se)


def test_run_spec_validation_names_the_argument():
    with pytest.raises(ValueError, match="sampling"):
        RunSpec(steps=3, sampling="bernoulli")
    with pytest.raises(ValueError, match="switch_step"):
        RunSpec(steps=3, switch_step=1)
    with pytest.raises(ValueError, match="displacement_step"):
        RunSpec(steps=3, displacement_step=3)
    with pytest.raises(ValueError, match="lr_schedule"):
        RunSpec(steps=3, lr_schedule="linear")
    basin = Basin(dim=5, curvatures=(1.0,), sample_std=1.0)
    opt = Optimizer(lr=0.1, batch_size=2)
    with pytest.raises(ValueError, match="engine"):
        simulate(basin=basin, optimizer=opt, run=RunSpec(steps=2), engine="gpu")
    with pytest.raises(ValueError, match="reduced"):
        simulate(basin=basin, optimizer=opt, run=RunSpec(steps=2), engine="reduced", mask=np.ones(5, bool))


def test_lr_schedules_closed_forms():
    from simulations.basin.engine import lr_values

    t = 1000
    cos = lr_values(lr=0.4, steps=t, schedule="cosine")
    assert cos[0] == 0.4 and cos[t // 2] == pytest.approx(0.2, rel=1e-12)
    assert cos[t // 4] == pytest.approx(0.2 * (1 + math.cos(math.pi / 4)), rel=1e-12)
    assert np.all(np.diff(cos) < 0)
    step = lr_values(lr=0.4, steps=t, schedule="multistep")
    assert set(step[: t // 2]) == {0.4}
    np.testing.assert_allclose(step[t // 2 : 3 * t // 4], 0.04, rtol=1e-15)
    np.testing.assert_allclose(step[3 * t // 4 :], 0.004, rtol=1e-15)
    assert set(lr_values(lr=0.4, steps=7).tolist()) == {0.4}


@pytest.mark.parametrize("engine", ["full", "reduced"])
def test_switch_takes_effect_exactly_at_switch_step(engine):
    """Steps t < t₀ run the first mode, t ≥ t₀ the second: record k holds step k's clip statistics."""
    basin = Basin(dim=50, curvatures=(1.0,), sample_std=1.0)
    opt = Optimizer(lr=0.1, batch_size=4, clip_norm=0.5, noise_multiplier=1.0, mode="sgd")
    t0 = 6
    tr = simulate(
        basin=basin,
        optimizer=opt,
        run=RunSpec(steps=10, replicas=2, switch_step=t0, switch_mode="dpsgd"),
        engine=engine,
    )
    np.testing.assert_array_equal(tr.steps, np.arange(1, 11))
    assert np.all(tr.clip_fraction[:, :t0] == 0) and np.all(tr.clip_fraction[:, t0:] == 1)


@pytest.mark.parametrize("engine,mode,spread", [("reduced", "noise", "ambient"), ("full", "sgd", "basin")])
def test_losses_match_dptheory_quadratic_expected_loss(engine, mode, spread):
    """Cross-check with the exact theory (dptheory.quadratic.expected_loss) for unclipped
    fixed-batch steps: E L(t) and E L_test(t) within K_SE standard errors of the replica means."""
    from dptheory import quadratic

    basin = Basin(
        dim=40,
        curvatures=(1.5, 0.6, 0.2),
        sample_std=0.7,
        spread=spread,
        flat_curvature=0.05,
        heldout_flat_curvature=0.5,
    )
    opt = Optimizer(lr=0.25, batch_size=5, clip_norm=1.0, noise_multiplier=2.0, mode=mode)
    run = RunSpec(steps=60, replicas=400, record_every=15, seed=21, init_error=3.0, init_flat_sq=2.0)
    tr = simulate(basin=basin, optimizer=opt, run=run, engine=engine)
    curve = quadratic.expected_loss(
        dynamics=quadratic.noise_only_dynamics(basin=basin, optimizer=opt),
        curvatures=basin.curvatures,
        init_error=run.init_error / math.sqrt(basin.rank),
        steps=tr.steps,
        init_flat_sq=run.init_flat_sq,
        flat_curvature=basin.flat_curvature,
        heldout_flat_curvature=basin.heldout_flat_curvature,
    )
    for sim, theory in ((tr.train_loss, curve.train), (tr.heldout_loss, curve.test)):
        se = sim.std(axis=0, ddof=1) / math.sqrt(run.replicas)
        assert np.all(np.abs(sim.mean(axis=0) - theory) <= K_SE * se), (sim.mean(axis=0), theory, se)
