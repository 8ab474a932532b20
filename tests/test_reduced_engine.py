"""The exact reduced engine agrees in distribution with the d-dimensional kernel.

Two-sample Kolmogorov–Smirnov tests at significance ALPHA per test (7 configurations × 4 metrics ×
2 record times = 56 tests: family-wise false alarm ≤ 5.6 % under the null; the seeds are fixed, so the outcome is deterministic), plus mean
comparisons within K_SE Welch standard errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from dptheory.records import Basin, Optimizer
from simulations.basin.engine import RunSpec, simulate
from simulations.basin.reduced import sample_chi2_excess

ALPHA = 1e-3
K_SE = 4.0
REPLICAS = 300

# d, rank, clip_norm, noise_multiplier, spread, flat_curvature, sampling — chosen to include heavy
# clipping, partial clipping, both spreads, flat curvature, and the degenerate flat sizes
# m = d − r = 1, 2, 3 where the frame construction of the reduced engine has missing axes.
CONFIGS = [
    (60, 3, 0.5, 1.0, "ambient", 0.0, "fixed"),
    (5, 2, 1.5, 0.5, "ambient", 0.3, "fixed"),
    (3, 2, 1.0, 1.0, "ambient", 0.0, "fixed"),
    (4, 2, 1.2, 0.0, "ambient", 0.5, "fixed"),
    (50, 5, 0.8, 1.0, "basin", 0.2, "fixed"),
    (200, 2, 14.0, 0.7, "ambient", 0.0, "poisson"),
    (30, 3, 1.0, 1.0, "ambient", 0.1, "switch"),  # dpsgd → noise at step 15, displacement at 22, cosine lr
]
METRICS = ("train_loss", "flat_err_sq", "mean_clip_factor", "clip_bias_norm")


def _finite(x):
    return x[np.isfinite(x)]


@pytest.mark.parametrize("config", CONFIGS, ids=[f"d{c[0]}-r{c[1]}-C{c[2]}-{c[4]}" for c in CONFIGS])
def test_reduced_matches_full_kernel_in_distribution(config):
    d, r, clip, sigma, spread, lam_f, sampling = config
    basin = Basin(
        dim=d, curvatures=tuple(np.linspace(1.0, 0.3, r)), sample_std=1.0, spread=spread, flat_curvature=lam_f
    )
    opt = Optimizer(lr=0.3, batch_size=8, clip_norm=clip, noise_multiplier=sigma)
    # records at steps 10, 20, 30: the reduced engine switches between its 1-frame (unrecorded)
    # and 2-frame (recorded, clip bias) constructions, both of which must be exact
    extra = {}
    if sampling == "switch":
        sampling = "fixed"
        extra = dict(switch_step=15, switch_mode="noise", displacement_step=22, displacement=3.0, lr_schedule="cosine")
    run = RunSpec(
        steps=30, replicas=REPLICAS, record_every=10, init_error=2.0, init_flat_sq=1.0, sampling=sampling, **extra
    )
    full = simulate(basin=basin, optimizer=opt, run=run, engine="full")
    red = simulate(basin=basin, optimizer=opt, run=RunSpec(**{**run.__dict__, "seed": 1}), engine="reduced")
    assert np.nanmean(full.clip_fraction[:, 0]) > 0.0 and np.nanmean(red.clip_fraction[:, 0]) > 0.0  # clipping
    for name in METRICS:
        for col in (1, 2):
            a = _finite(getattr(full, name)[:, col])  # an empty Poisson batch has NaN clip statistics
            b = _finite(getattr(red, name)[:, col])
            p = stats.ks_2samp(a, b).pvalue
            assert p > ALPHA, (name, col, p)
            se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
            assert abs(a.mean() - b.mean()) <= K_SE * se + 1e-15, (name, col, a.mean(), b.mean(), se)
    a, b = _finite(full.clip_fraction[:, 1]), _finite(red.clip_fraction[:, 1])
    se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    assert abs(a.mean() - b.mean()) <= K_SE * se + 1e-15


@pytest.mark.parametrize("df", [1, 2, 3, 7, 50, 10_000])
def test_chi2_sampler_against_scipy(df):
    x = df + sample_chi2_excess(df=df, size=20_000, seed=df)
    assert stats.kstest(x, stats.chi2(df).cdf).pvalue > ALPHA


@pytest.mark.parametrize("df", [1e8, 1e12, 1e15])
def test_chi2_sampler_huge_df_has_no_cancellation(df):
    """(χ²_q − q)/√(2q) → N(0, 1) (skewness √(8/q) ≤ 3e-4, invisible at n = 20 000); a sampler that
    formed χ² first and subtracted q would be quantised in steps of ulp(q)/√(2q) (0.09 at q = 1e15)."""
    z = sample_chi2_excess(df=df, size=20_000, seed=3) / math.sqrt(2 * df)
    assert stats.kstest(z, stats.norm.cdf).pvalue > ALPHA
    assert abs(z.mean()) < K_SE / math.sqrt(z.size)
    assert np.unique(z).size == z.size
    assert sample_chi2_excess(df=0, size=3, seed=0).tolist() == [0.0, 0.0, 0.0]


def test_reduced_at_d_1e12_matches_exact_flat_noise_growth():
    """Clipped DP-SGD at d = 1e12, λ_f = 0, ρ0 = 0: E ρ_t² = t (η/B)² (ν² m + E Σ_i c_i² s² ‖ζ_i^f‖²),
    where the per-sample term is ≤ B C² (clipped norms), i.e. ~1e-12 of the noise term here."""
    d, r = 10**12, 4
    basin = Basin(dim=d, curvatures=(1.0,) * r, sample_std=1.0)
    opt = Optimizer(lr=0.5, batch_size=16, clip_norm=1.0, noise_multiplier=1.0)
    run = RunSpec(steps=40, replicas=64, record_every=10, init_error=1.0)
    tr = simulate(basin=basin, optimizer=opt, run=run)
    assert tr.engine == "reduced"
    k2 = (opt.lr / opt.batch_size) ** 2
    m = d - r
    noise_part = tr.steps * k2 * opt.noise_std**2 * m
    sample_bound = tr.steps * k2 * opt.batch_size * opt.clip_norm**2
    mean = tr.flat_err_sq.mean(axis=0)
    se = tr.flat_err_sq.std(axis=0, ddof=1) / math.sqrt(run.replicas)
    assert np.all(mean >= noise_part - K_SE * se) and np.all(mean <= noise_part + sample_bound + K_SE * se)
    # every sample is clipped, with factor C/‖g‖, ‖g‖² = s² d (1 + O(d^-1/2))
    assert np.all(tr.clip_fraction == 1.0)
    np.testing.assert_allclose(tr.mean_clip_factor * math.sqrt(d), 1.0, rtol=1e-5)
