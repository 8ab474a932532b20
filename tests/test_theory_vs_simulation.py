"""Theory beside simulation, statistically: dptheory's predictions vs the Monte Carlo engines.

Every comparison is |simulated − predicted| ≤ K·SE + margin·|predicted| with

* K = 4 standard errors. About 140 comparisons are made in this file; with a correct SE a
  Bonferroni family-wise error of 1 % needs z_{1 − 0.01/(2·140)} = 3.97 ≈ 4.
* SE from batch means (``simulations.common.stats.batch_means``): R independent replicas, each window cut
  into batches of 5 predicted relaxation times, so consecutive batch means are nearly independent
  (lag-1 correlation ≲ e^{−5}; the AR(1) test below checks the estimator's calibration).
* margin = 0 for the unclipped modes (sgd, noise): there the theory (dptheory.quadratic via
  clipped_dynamics) is exact — no model margin at all.
* margin = 5 % for clipped modes: the mean-field clipped model (dptheory.clipped_dynamics) is an
  approximation whose documented accuracy is ≤ 5 % (its module docstring: it neglects fluctuations of
  ‖He‖ about its RMS value and the anisotropy and non-Gaussianity of the clipped noise).

The grid covers unclipped (C ≫ s√n), partly clipped (C ≈ s√n, clip fraction ≈ ½) and fully clipped
(C ≪ s√n) regimes, for per-sample spread in all d dimensions ("ambient") and in the r-dimensional
basin only ("basin"). Seeds are fixed, so the tests are deterministic.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dptheory.curves import first_crossing, first_crossings
from dptheory.records import Mode
from simulations import basin_dim
from simulations.common.stats import Estimate, agrees, batch_means, replica_mean
from simulations.common.sweep import log_grid

K = 4.0
MODEL_MARGIN = 0.05  # clipped modes only (mean-field approximation, documented accuracy ≤ 5 %)

RANK = 5
# (spread, d, C): the per-sample noise norm is s√n with s = 0.1 and n = d (ambient) or r (basin).
GRID = {
    "ambient-unclipped": ("ambient", 10_000, 30.0),  # s√d = 10 ≪ C
    "ambient-partial": ("ambient", 10_000, 10.0),  # C = s√d: about half the samples clipped
    "ambient-full": ("ambient", 10_000, 2.0),  # C ≪ s√d: every sample clipped
    "ambient-small-d-partial": ("ambient", 100, 1.0),
    "basin-unclipped": ("basin", 10_000, 1.0),  # s√r = 0.22 ≪ C
    "basin-partial": ("basin", 10_000, 0.22),
    "basin-full": ("basin", 10_000, 0.05),
}


def _config(spread: str, d: int, clip: float, tmp_path) -> basin_dim.BasinDimConfig:
    return basin_dim.BasinDimConfig(
        d=d,
        rank=RANK,
        points=1,
        sample_std=0.1,
        spread=spread,
        clip_norm=clip,
        noise_multiplier=1.0,
        batch_size=16,
        lr=0.5,
        heldout_flat_curvature=1e-3,
        burn_in=3,
        window=200,
        replicas=16,
        displacement=3 * clip,
        out=str(tmp_path / "unused"),
    )


def _margin(mode: Mode) -> float:
    return MODEL_MARGIN if mode.clipped else 0.0


def _check(name: str, predicted: float, est: Estimate, margin: float) -> None:
    assert agrees(predicted=predicted, estimate=est, k=K, rel_margin=margin), (
        f"{name}: predicted {predicted:.6g}, simulated {est.mean:.6g} ± {est.se:.2g} "
        f"(z = {est.z(predicted):+.2f}, margin {margin:.0%})"
    )


@pytest.mark.parametrize("mode", [Mode.DPSGD, Mode.CLIP, Mode.NOISE], ids=lambda m: m.value)
@pytest.mark.parametrize("case", list(GRID))
def test_stationary_state_matches_theory(case, mode, tmp_path):
    spread, d, clip = GRID[case]
    cfg = _config(spread, d, clip, tmp_path)
    opt = cfg.optimizer(mode)
    row = basin_dim.measure(basin=cfg.basin(d), optimizer=opt, config=cfg, seed=3)
    m = _margin(mode)
    _check("stationary excess loss", row["pred_loss"], row["sim_loss"], m)
    # Clip fraction: a probability. When no sample (or every sample) is clipped the batch-means SE is
    # 0; floor it by the binomial SE of the predicted p over all N = R·window·B samples (the smallest
    # SE any N draws can have), so p ≈ 1e-18 vs 0 observed is consistent and p = 0.01 is not.
    frac_est = row["sim_clip_fraction"]
    p = row["pred_clip_fraction"]
    n_samples = cfg.replicas * row["window_steps"] * cfg.batch_size
    frac_est = Estimate(mean=frac_est.mean, se=max(frac_est.se, math.sqrt(p * (1 - p) / n_samples)), n=frac_est.n)
    _check("clip fraction", p, frac_est, m)
    _check("flat error", row["pred_flat_err_sq"], row["sim_flat_err_sq"], m)
    _check("held-out excess loss", row["pred_heldout"], row["sim_heldout"], m)
    rec = Estimate(mean=row["sim_recovery_time"], se=row["sim_recovery_time_se"], n=cfg.replicas)
    _check("recovery time", row["pred_recovery_time"], rec, m)
    # The regime is the one the case name says (guards against a silently mislabelled grid).
    frac = row["sim_clip_fraction"].mean
    if not opt.mode.clipped or case.endswith("unclipped"):
        assert frac < 0.01
    elif case.endswith("full"):
        assert frac > 0.99
    else:
        assert 0.2 < frac < 0.8


def test_sgd_is_exact_in_both_spreads(tmp_path):
    """SGD (no clip, no noise) has an exact closed form; its clip fraction is 0 by definition."""
    for spread in ("ambient", "basin"):
        cfg = _config(spread, 10_000, 1.0, tmp_path)
        row = basin_dim.measure(basin=cfg.basin(10_000), optimizer=cfg.optimizer(Mode.SGD), config=cfg, seed=5)
        _check(f"{spread} sgd loss", row["pred_loss"], row["sim_loss"], 0.0)
        _check(f"{spread} sgd flat error", row["pred_flat_err_sq"], row["sim_flat_err_sq"], 0.0)
        assert row["sim_clip_fraction"].mean == 0.0
        if spread == "basin":  # no per-sample noise and no DP noise outside the basin: flat error stays 0
            assert row["sim_flat_err_sq"].mean == 0.0 == row["pred_flat_err_sq"]


def test_dpsgd_loss_grows_like_sqrt_d_when_fully_clipped(tmp_path):
    """Claim 3 in its closed form: fully clipped, DP-dominated ⇒ loss ∝ √d.

    Simulated ratio L(d=4e4)/L(d=1e4) vs √4 = 2, within K combined SE plus the 5 % model margin;
    noise-only at the same two d is flat (exact, no margin).
    """
    est = {}
    for d in (10_000, 40_000):
        cfg = _config("ambient", d, 2.0, tmp_path)
        for mode in (Mode.DPSGD, Mode.NOISE):
            est[d, mode] = basin_dim.measure(basin=cfg.basin(d), optimizer=cfg.optimizer(mode), config=cfg, seed=7)[
                "sim_loss"
            ]
    a, b = est[10_000, Mode.DPSGD], est[40_000, Mode.DPSGD]
    ratio = b.mean / a.mean
    se_ratio = ratio * math.hypot(a.se / a.mean, b.se / b.mean)
    assert abs(ratio - 2.0) <= K * se_ratio + 2.0 * MODEL_MARGIN, (ratio, se_ratio)
    n1, n2 = est[10_000, Mode.NOISE], est[40_000, Mode.NOISE]
    assert abs(n2.mean - n1.mean) <= K * math.hypot(n1.se, n2.se)


def test_switch_sweep_exact_for_unclipped_phases(tmp_path):
    """SGD → noise-only switching: dptheory.switching is exact, so no margin (K·SE only), both ways."""
    from dptheory.switching import phase_dynamics, switch_sweep
    from simulations.basin.engine import RunSpec, simulate
    from simulations.switch import SwitchConfig

    cfg = SwitchConfig(
        d=1000,
        rank=RANK,
        clip_norm=1.0,
        batch_size=8,
        lr=0.5,
        steps=60,
        points=4,
        init_error=2.0,
        replicas=400,
        first="sgd",
        second="noise",
        out=str(tmp_path / "unused"),
    )
    basin = cfg.basin()
    a, b = cfg.optimizer("sgd"), cfg.optimizer("noise")
    grid = cfg.switch_steps()
    lin = switch_sweep(
        before=phase_dynamics(basin=basin, optimizer=a),
        after=phase_dynamics(basin=basin, optimizer=b),
        switch_steps=grid,
        total_steps=cfg.steps,
        curvatures=basin.curvatures,
        init_error=np.full(RANK, cfg.init_error / math.sqrt(RANK)),
        heldout_flat_curvature=basin.heldout_flat_curvature,
    )
    for direction, (first, second) in enumerate(((a, b), (b, a))):
        for i, s in enumerate(grid):
            spec = RunSpec(
                steps=cfg.steps,
                replicas=cfg.replicas,
                record_every=cfg.steps,
                seed=100 * direction + i,
                init_error=cfg.init_error,
                switch_step=int(s),
                switch_mode=second.mode,
            )
            tr = simulate(basin=basin, optimizer=first, run=spec)
            pred = (lin.forward_train, lin.reverse_train)[direction][i]
            pred_test = (lin.forward_test, lin.reverse_test)[direction][i]
            _check(f"switch dir {direction} s={s} train", pred, replica_mean(tr.train_loss[:, -1]), 0.0)
            _check(f"switch dir {direction} s={s} held-out", pred_test, replica_mean(tr.heldout_loss[:, -1]), 0.0)


def test_pruned_stationary_loss_matches_bias_plus_restricted_dp_term(tmp_path):
    """Claim 4's model (dptheory.pruning) vs the full d-dimensional kernel with masks.

    The pruning bias (Schur complement) is exact, the DP term is the mean-field clipped model of the
    restricted problem: tolerance K·SE + 5 % of the DP term only. Points whose restricted problem is
    not stationary within T (flagged by the CLI) are not compared — and the aligned ones must be
    stationary, so the test cannot pass vacuously.
    """
    from simulations import prune

    cfg = prune.PruneConfig(
        d=200, rank=RANK, support=RANK, points=3, steps=300, replicas=8, out=str(tmp_path / "unused")
    )
    w_star, w0 = prune.problem(cfg)
    compared = 0
    seen = {}
    for b, basis in enumerate(("aligned", "rotated")):
        for m, source in enumerate(("oracle", "init")):
            for i, keep in enumerate(cfg.keeps()):
                if basis == "rotated" and keep < cfg.d:
                    continue  # rotated partial masks relax over ~1e2–1e5 steps: not stationary at T = 300
                row = prune.measure(
                    config=cfg,
                    basis_name=basis,
                    source=source,
                    keep=keep,
                    w_star=w_star,
                    w0=w0,
                    seed=1000 + 100 * b + 10 * m + i,
                )
                seen[basis, source, keep] = row
                if basis == "aligned":
                    assert row["stationary"], row
                if not row["stationary"]:
                    continue
                est = row["sim_loss"]
                tol = K * est.se + MODEL_MARGIN * row["pred_dp"]
                assert abs(est.mean - row["pred_loss"]) <= tol, (basis, source, keep, row["pred_loss"], est)
                compared += 1
    assert compared == 8
    # The mechanism of claim 4, in simulation: the aligned oracle mask at k = r removes no curvature
    # (zero bias) and shrinks per-sample norms from s√d to s√k, so heavy pruning lowers the loss by
    # more than K combined SE; a data-independent (init) mask at k = r cuts curved weights instead.
    pruned, full = seen["aligned", "oracle", RANK]["sim_loss"], seen["aligned", "oracle", cfg.d]["sim_loss"]
    assert seen["aligned", "oracle", RANK]["pred_bias"] == 0.0
    assert full.mean - pruned.mean > K * math.hypot(full.se, pruned.se)
    assert seen["aligned", "init", RANK]["sim_loss"].mean > 10 * full.mean


def test_recovery_prediction_agrees_with_clipped_dynamics_recovery_time():
    """The CLI's interpolated crossing and dptheory's integer first-crossing step differ by < 1 step."""
    from dptheory.clipped_dynamics import recovery_time
    from dptheory.clipped_recovery import displacement_recovery

    cfg = basin_dim.BasinDimConfig(d=10_000, rank=RANK, sample_std=0.1, clip_norm=2.0, batch_size=16, lr=0.5)
    for mode in Mode:
        basin, opt = cfg.basin(10_000), cfg.optimizer(mode)
        mine = displacement_recovery(basin=basin, optimizer=opt, displacement=6.0, steps=400, threshold=0.1).time
        theirs = recovery_time(basin=basin, optimizer=opt, displacement=6.0, threshold=0.1).steps
        assert theirs - 1.0 < mine <= theirs, (mode, mine, theirs)


# --- the statistics helpers themselves -------------------------------------------------------


def test_batch_means_se_is_calibrated_on_ar1():
    """AR(1) x_t = ρx_{t−1} + √(1−ρ²)ε (stationary variance 1): exact Var of the mean is known.

    Var(mean of n consecutive) = [(1+ρ)/(1−ρ) − 2ρ(1−ρⁿ)/(n(1−ρ)²)]/n, divided by R for R replicas.
    Over 300 independent experiments the batch-means SE must match the exact SE on average (within
    K·SE of that average) and the ±2 SE interval must cover the truth 95.4 % of the time (within K
    binomial SE).
    """
    rho, n, reps, experiments = 0.9, 2000, 8, 300
    rng = np.random.default_rng(11)
    x = np.empty((experiments, reps, n))
    x[..., 0] = rng.standard_normal((experiments, reps))
    noise = rng.standard_normal((experiments, reps, n)) * math.sqrt(1 - rho**2)
    for t in range(1, n):
        x[..., t] = rho * x[..., t - 1] + noise[..., t]
    exact = math.sqrt(((1 + rho) / (1 - rho) - 2 * rho * (1 - rho**n) / (n * (1 - rho) ** 2)) / n / reps)
    # batches of 200 = 20 correlation times 1/(1−ρ): lag-1 correlation of batch means ≈ 0.05
    ests = [batch_means(x[e], n_batches=10) for e in range(experiments)]
    ses = np.array([e.se for e in ests])
    assert abs(ses.mean() - exact) <= K * ses.std(ddof=1) / math.sqrt(experiments) + 0.05 * exact
    covered = np.mean([abs(e.mean) <= 2 * e.se for e in ests])
    p = 0.9545
    assert abs(covered - p) <= K * math.sqrt(p * (1 - p) / experiments)
    # Batches far shorter than the correlation time underestimate the SE (the documented direction).
    short = np.mean([batch_means(x[e], n_batches=400).se for e in range(20)])
    assert short < 0.6 * exact


def test_batch_means_reduces_to_replica_se_and_validates():
    x = np.array([[1.0, 3.0], [2.0, 6.0], [0.0, 0.0]])
    one = batch_means(x, n_batches=1)
    ref = replica_mean(x.mean(axis=1))
    assert one.mean == pytest.approx(ref.mean) and one.se == pytest.approx(ref.se) and one.n == 3
    with pytest.raises(ValueError, match="n_batches"):
        batch_means(x, n_batches=3)
    with pytest.raises(ValueError, match="n_batches"):
        batch_means(x, n_batches=0)


def test_first_crossing_and_log_grid():
    t = np.arange(50.0)
    curve = 0.8 ** (2 * t)  # exact crossing of 0.1 at t* = ln 0.1 / (2 ln 0.8)
    exact = math.log(0.1) / (2 * math.log(0.8))
    got = first_crossing(curve, threshold=0.1)
    assert math.floor(exact) < got < math.ceil(exact) + 1e-12  # interpolation stays within the bracketing steps
    assert first_crossing([0.05, 0.01], threshold=0.1) == 0.0
    assert first_crossing([1.0, 0.5], threshold=0.1) == math.inf
    # The vectorised version is the same definition, row by row (random noisy curves, ties included).
    rng = np.random.default_rng(4)
    curves = np.exp(-0.1 * np.arange(60))[None, :] + 0.05 * rng.standard_normal((200, 60))
    curves[:5] = 1.0  # never below: inf
    curves[5:10, 0] = 0.0  # below at once: t[0]
    steps = np.arange(60) * 2.5
    vec = first_crossings(curves, threshold=0.2, steps=steps)
    ref = [first_crossing(c, threshold=0.2, steps=steps) for c in curves]
    np.testing.assert_array_equal(vec, ref)
    grid = log_grid(low=100, high=1e6, points=9)
    assert grid[0] == 100 and grid[-1] == 1_000_000 and grid == sorted(set(grid))
    # equal log steps up to rounding to integers: |Δ log| ≤ 0.5/100 at each end of a step
    assert np.allclose(np.diff(np.log(grid)), math.log(10) / 2, atol=2 * 0.5 / 100)
