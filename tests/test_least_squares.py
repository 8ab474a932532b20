"""Least-squares basin: kernel = twin, GD → lstsq, clipping bias at the optimum; spectra and masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from dptheory.pruning import curvature_basis, magnitude_mask, noisy_mask, random_mask
from dptheory.records import Basin, Optimizer
from simulations.basin import make_basin
from simulations.basin.engine import RunSpec
from simulations.basin.least_squares import (
    LeastSquaresProblem,
    least_squares_step,
    make_data,
    simulate_least_squares,
)
from simulations.basin.streaming import curvature_spectrum

ALPHA = 1e-3


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(1, 12),
    d=st.integers(1, 8),
    seed=st.integers(0, 2**32 - 1),
    clip=st.sampled_from([math.inf, 1e-3, 0.5, 3.0]),
    nu=st.sampled_from([0.0, 1.3]),
    use_mask=st.booleans(),
    lr=st.floats(0.01, 2.0),
    batch_size=st.integers(1, 6),
)
def test_least_squares_kernel_equals_twin(n, d, seed, clip, nu, use_mask, lr, batch_size):
    rng = np.random.default_rng(seed)
    case = dict(
        weights=rng.standard_normal(d),
        features=rng.standard_normal((n, d)),
        targets=rng.standard_normal(n),
        batch=rng.choice(n, size=rng.integers(0, n + 1), replace=False),
        xi=rng.standard_normal(d),
        mask=(rng.random(d) < 0.6) if use_mask else None,
        clip_norm=clip,
        noise_std=nu,
        lr=lr,
        batch_size=batch_size,
    )
    w1, n1, f1, b1 = least_squares_step(**case)
    w2, n2, f2, b2 = least_squares_step(**case, twin=True)
    np.testing.assert_allclose(w1, w2, rtol=1e-12, atol=1e-12 * (1 + np.abs(w2).max()))
    assert n1 == n2 and f1 == pytest.approx(f2, rel=1e-12) and b1 == pytest.approx(b2, rel=1e-10, abs=1e-13)


@pytest.mark.parametrize("use_mask", [False, True])
def test_full_batch_gd_converges_to_lstsq(use_mask):
    """C = ∞, σ = 0, B = n: w_t → argmin L (on the kept coordinates) at rate max|1 − η μ_j|."""
    data = make_data(LeastSquaresProblem(dim=8, n_train=60, rank=2, iso_std=0.4, label_std=0.5, seed=4))
    mask = np.arange(8) != 3 if use_mask else None
    w_hat = data.lstsq_solution(mask)
    tr = simulate_least_squares(
        data=data,
        optimizer=Optimizer(lr=0.5, batch_size=60, mode="sgd"),
        run=RunSpec(steps=1500, replicas=1, record_every=1500),
        mask=mask,
    )
    err = w_hat - data.optimum
    pr = data.basis.T @ err
    assert tr.train_loss[0, -1] == pytest.approx(data.loss(w_hat), rel=1e-10)
    assert tr.curved_err_sq[0, -1] == pytest.approx(pr @ pr, rel=1e-8)
    assert tr.flat_err_sq[0, -1] == pytest.approx(np.sum((err - data.basis @ pr) ** 2), rel=1e-8)
    assert np.all(tr.clip_bias_norm == 0)


def test_deterministic_full_batch_clipped_run_equals_twin():
    data = make_data(LeastSquaresProblem(dim=6, n_train=30, rank=2, label_noise="outliers", seed=2))
    run = RunSpec(
        steps=60,
        replicas=2,
        record_every=20,
        switch_step=30,
        switch_mode="sgd",
        lr_schedule="multistep",
        displacement_step=45,
        displacement=1.0,
    )
    opt = Optimizer(lr=0.3, batch_size=30, clip_norm=0.5, mode="clip")
    a = simulate_least_squares(data=data, optimizer=opt, run=run, engine="full")
    b = simulate_least_squares(data=data, optimizer=opt, run=run, engine="numpy")
    for key, v in a.arrays().items():
        np.testing.assert_allclose(v, b.arrays()[key], rtol=1e-9, atol=1e-13, err_msg=key)
    assert a.clip_fraction[0, 0] > 0


@pytest.mark.parametrize("sampling", ["fixed", "poisson"])
def test_minibatch_sampling_matches_twin_in_distribution(sampling):
    """The numba loop's batch sampler (partial Fisher–Yates; Binomial(n, q) size for Poisson) and the
    twin's (Generator.choice) give the same law of the final losses: KS at ALPHA, means within 4 SE."""
    data = make_data(LeastSquaresProblem(dim=6, n_train=40, rank=2, label_noise="skewed", seed=3))
    opt = Optimizer(lr=0.2, batch_size=5, clip_norm=1.0, noise_multiplier=0.5)
    run = RunSpec(steps=30, replicas=300, record_every=30, sampling=sampling)
    a = simulate_least_squares(data=data, optimizer=opt, run=run, engine="full", n_test=50)
    b = simulate_least_squares(
        data=data, optimizer=opt, run=RunSpec(**{**run.__dict__, "seed": 9}), engine="numpy", n_test=50
    )
    for name in ("train_loss", "flat_err_sq"):
        x, y = getattr(a, name)[:, -1], getattr(b, name)[:, -1]
        assert stats.ks_2samp(x, y).pvalue > ALPHA, name
        se = math.sqrt(x.var(ddof=1) / x.size + y.var(ddof=1) / y.size)
        assert abs(x.mean() - y.mean()) <= 4 * se


def test_clipping_bias_does_not_vanish_with_outliers():
    """Full-batch clipped GD converges to a point where Σ clip_C(g_i) = 0 but Σ g_i ≠ 0, i.e. not
    to the least-squares solution (Chen, Wu & Hong 2020, arXiv 2006.15429): its loss is higher."""
    data = make_data(
        LeastSquaresProblem(
            dim=5,
            n_train=50,
            rank=2,
            iso_std=0.5,
            label_noise="outliers",
            outlier_fraction=0.1,
            outlier_shift=20.0,
            seed=5,
        )
    )
    opt = Optimizer(lr=1.0, batch_size=50, clip_norm=1.0, mode="clip")
    tr = simulate_least_squares(data=data, optimizer=opt, run=RunSpec(steps=20000, replicas=1, record_every=1000))
    assert abs(tr.train_loss[0, -1] / tr.train_loss[0, -2] - 1) < 1e-9  # converged
    assert tr.train_loss[0, -1] > data.loss(data.lstsq_solution()) * (1 + 1e-3)
    assert tr.clip_bias_norm[0, -1] > 1e-3  # (1/B)Σ g_i = −bias ≠ 0


# ------------------------------------------------------------------ streaming spectra and masks


def test_spectra_limits():
    np.testing.assert_array_equal(curvature_spectrum(rank=3, spectrum="flat", max_curvature=2.0), [2.0] * 3)
    np.testing.assert_array_equal(curvature_spectrum(rank=3, spectrum="power", power=0.0), [1.0] * 3)
    lam = curvature_spectrum(rank=100, spectrum="power", max_curvature=1.0, power=1.5)
    assert lam[9] == pytest.approx(10**-1.5, rel=1e-14)
    two = curvature_spectrum(rank=10, spectrum="two-level", split=0.3, low_curvature=0.01)
    assert np.sum(two == 1.0) == 3 and np.sum(two == 0.01) == 7
    assert curvature_spectrum(rank=5, spectrum="two-level", split=1.0).tolist() == [1.0] * 5
    with pytest.raises(ValueError, match="spectrum"):
        curvature_spectrum(rank=3, spectrum="cubic")
    with pytest.raises(ValueError, match="split"):
        curvature_spectrum(rank=3, spectrum="two-level", split=0.0)
    basin = make_basin("streaming", dim=50, rank=4, sample_std=1.0, spectrum="two-level", split=0.5)
    assert isinstance(basin, Basin) and basin.curvatures == (1.0, 1.0, 0.1, 0.1)
    with pytest.raises(ValueError, match="basin"):
        make_basin("cifar", dim=3)


def test_random_basis_is_haar_orthonormal():
    v = curvature_basis(dim=30, rank=5, basis="rotated", seed=1)
    np.testing.assert_allclose(v.T @ v, np.eye(5), atol=1e-13)
    # Haar: E (V_11)² = 1/d; over 400 draws the mean is within 4 SE
    x = np.array([curvature_basis(dim=30, rank=1, basis="rotated", seed=s)[0, 0] ** 2 for s in range(400)])
    assert abs(x.mean() - 1 / 30) <= 4 * x.std(ddof=1) / math.sqrt(x.size)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), d=st.integers(1, 40), frac=st.floats(0.0, 1.0))
def test_magnitude_mask_keeps_the_largest(seed, d, frac):
    p = np.random.default_rng(seed).standard_normal(d)
    p[: d // 3] = np.round(p[: d // 3])  # some ties
    k = int(frac * d)
    m = magnitude_mask(reference=p, keep=k)
    assert m.sum() == k
    if 0 < k < d:
        assert np.abs(p[m]).min() >= np.abs(p[~m]).max()


def test_masks_privacy_free_variants_and_validation():
    assert random_mask(dim=20, keep=7, seed=0).keep.sum() == 7
    w = np.array([3.0, -0.1, 0.2, -5.0])
    assert noisy_mask(optimum=w, noise_std=0.0, keep=2, seed=0).keep.tolist() == [True, False, False, True]
    with pytest.raises(ValueError, match="keep"):
        magnitude_mask(reference=w, keep=5)
    with pytest.raises(ValueError, match="noise_std"):
        noisy_mask(optimum=w, noise_std=-1.0, keep=1, seed=0)
