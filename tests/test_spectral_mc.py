"""Monte Carlo check of the spectral model on finite-sum problems with anisotropic per-example gradients.

The reference is an exact simulation of the DP-SGD step of dptheory/records.py on a finite training
set of n examples with per-example gradients g_i(w* + e) = ζ_i + H e (Σ_i ζ_i = 0, so the training
loss is exactly ½ eᵀHe): Poisson sampling (each example independently with probability q = B/n,
drawn as N ~ Binomial(n, q) distinct uniform examples — the same law) or fixed batches of B distinct
examples, per-example clipping min(1, C/‖g_i‖), Gaussian noise ν on the sum, division by B. H is
diagonal (the clip operator is rotation invariant, so an eigenbasis loses no generality). From
these exact ζ_i the test builds the SpectralBasin a network measurement would give: top-k exact
eigenvalues and projections, the rest as a few SLQ-like bulk nodes (mean eigenvalue, weight = count).

Statistics: every comparison is |simulated − predicted| ≤ K·SE with K = 4, SE the across-replica
standard error of per-replica time averages (independent replicas, no autocorrelation assumption).
About 20 comparisons: a Bonferroni family-wise 1 % needs z = 3.5, so K = 4 is conservative. The
points (seeds, C, σ, B) differ from the ones used while building the model. Points where the model's
neglected terms exceed the statistics (least squares with per-example Hessians, a large clipping-bias
shift) are reported in the project report, not asserted here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numba import njit

from dptheory.curves import first_crossing
from dptheory.records import Optimizer
from dptheory.spectral import (
    GradientStatistics,
    SpectralBasin,
    spectral_clip_fraction,
    spectral_recovery_time,
    spectral_window_excess,
)

K = 4.0
D = 12
LAM = np.geomspace(1.0, 0.01, D)


@njit(cache=True)
def _simulate(z, lam, lr, batch_size, clip, nu, poisson, steps, start, disp_step, disp_dir, seed, curve):
    """Replicas of e ← e − (η/B)[Σ_{i∈S} clip_C(Λe + ζ_i) + νξ] from e = 0; window averages and clip counts."""
    reps = curve.shape[0] if curve.shape[1] > 0 else seed.shape[0]
    n, d = z.shape
    q = batch_size / n
    avg = np.zeros(reps)
    clipped = np.zeros(reps)
    drawn = np.zeros(reps)
    perm = np.arange(n)
    acc = np.zeros(d)
    gi = np.zeros(d)
    for rep in range(reps):
        np.random.seed(seed[rep])
        e = np.zeros(d)
        for t in range(steps):
            if t == disp_step:
                for j in range(d):
                    e[j] += disp_dir[j]
            loss = 0.0
            for j in range(d):
                loss += 0.5 * lam[j] * e[j] * e[j]
                acc[j] = 0.0
            if t >= start:
                avg[rep] += loss
            if curve.shape[1] > 0:
                curve[rep, t] = loss
            bn = np.random.binomial(n, q) if poisson else batch_size
            for jj in range(bn):  # partial Fisher–Yates: a uniform bn-subset in perm[:bn]
                m = jj + np.random.randint(0, n - jj)
                tmp = perm[jj]
                perm[jj] = perm[m]
                perm[m] = tmp
            for jj in range(bn):
                i = perm[jj]
                nrm = 0.0
                for j in range(d):
                    gi[j] = lam[j] * e[j] + z[i, j]
                    nrm += gi[j] * gi[j]
                nrm = math.sqrt(nrm)
                f = 1.0
                if nrm > clip:
                    f = clip / nrm
                    if t >= start:
                        clipped[rep] += 1
                for j in range(d):
                    acc[j] += f * gi[j]
            if t >= start:
                drawn[rep] += bn
            for j in range(d):
                xi = np.random.standard_normal() if nu > 0 else 0.0
                e[j] -= lr / batch_size * (acc[j] + nu * xi)
        avg[rep] /= steps - start
    return avg, clipped, drawn


def _step_twin(z, lam, e, batch, xi, lr, batch_size, clip, nu):
    """One step in plain numpy (the kernel's twin, batch and noise given)."""
    g = lam * e + z[batch]
    norms = np.linalg.norm(g, axis=1)
    f = np.minimum(1.0, clip / np.maximum(norms, 1e-300))
    return e - lr / batch_size * ((f[:, None] * g).sum(axis=0) + nu * xi)


def _law(kind: str, n: int, seed: int) -> np.ndarray:
    """ζ_i (n, D), Σ_i ζ_i = 0: 'elliptic' (heavy-tailed radius, covariance ∝ Λ, symmetric pairs ±ζ)
    or 'skewed' (centred Gamma(4) coordinates, skewness 1, covariance ∝ Λ: a clipping bias that does not vanish)."""
    rng = np.random.default_rng(seed)
    if kind == "elliptic":
        th = rng.standard_normal((n // 2, D))
        th /= np.linalg.norm(th, axis=1, keepdims=True)
        half = np.exp(0.6 * rng.standard_normal(n // 2))[:, None] * math.sqrt(D) * th * np.sqrt(LAM)
        return np.concatenate([half, -half])
    t = (rng.gamma(4.0, 1.0, (n, D)) - 4.0) / 2.0 * (0.5 + rng.standard_exponential(n))[:, None]
    z = 0.5 * t * np.sqrt(LAM)
    return z - z.mean(axis=0)


def _basin(z: np.ndarray, k: int, groups: int | None = None) -> SpectralBasin:
    stats = GradientStatistics(norms=np.linalg.norm(z, axis=1), top_projections=z[:, :k])
    parts = np.array_split(LAM[k:], groups) if groups else [np.array([x]) for x in LAM[k:]]
    return SpectralBasin(
        dim=D,
        top_eigenvalues=LAM[:k],
        bulk_eigenvalues=np.array([p.mean() for p in parts]),
        bulk_weights=np.array([float(p.size) for p in parts]),
        gradients=stats,
        n_train=z.shape[0],
    )


def _run(z, opt, *, steps, start, reps, seed, sampling="poisson", disp=None, curve=False):
    seeds = np.random.SeedSequence(seed).generate_state(reps).astype(np.int64)
    disp_dir = np.zeros(D) if disp is None else disp
    buf = np.zeros((reps, steps)) if curve else np.zeros((reps, 0))
    avg, clipped, drawn = _simulate(
        z, LAM, opt.lr, opt.batch_size, opt.effective_clip_norm, opt.noise_std, sampling == "poisson",
        steps, start, -1 if disp is None else start, disp_dir, seeds, buf,
    )  # fmt: skip
    return avg, clipped / drawn, buf


def _agree(sim: np.ndarray, predicted: float) -> float:
    mean, se = float(sim.mean()), float(sim.std(ddof=1) / math.sqrt(sim.size))
    z = (mean - predicted) / se
    assert abs(z) <= K, f"simulated {mean:.6g} ± {se:.2g} vs predicted {predicted:.6g}: z = {z:+.2f}"
    return z


def test_kernel_equals_numpy_twin():
    """One step with the batch and the noise given: kernel (seeded, one replica, one step) = twin."""
    z = _law("skewed", 50, seed=1)
    opt = Optimizer(lr=0.4, batch_size=7, clip_norm=0.3, noise_multiplier=1.1)
    for poisson in (True, False):
        seeds = np.array([123], dtype=np.int64)
        buf = np.zeros((1, 2))
        _simulate(z, LAM, opt.lr, 7, 0.3, opt.noise_std, poisson, 2, 0, -1, np.zeros(D), seeds, buf)
        # replay the kernel's random stream for step 0 with numba's own generator state
        batch, xi = _replay_first_step(50, 7, poisson, 123)
        e1 = _step_twin(z, LAM, np.zeros(D), batch, xi, opt.lr, 7, 0.3, opt.noise_std)
        assert buf[0, 1] == pytest.approx(0.5 * float(np.sum(LAM * e1 * e1)), rel=1e-12)


@njit(cache=True)
def _replay_first_step(n, batch_size, poisson, seed):
    np.random.seed(seed)
    perm = np.arange(n)
    bn = np.random.binomial(n, batch_size / n) if poisson else batch_size
    for jj in range(bn):
        m = jj + np.random.randint(0, n - jj)
        tmp = perm[jj]
        perm[jj] = perm[m]
        perm[m] = tmp
    xi = np.empty(12)
    for j in range(12):
        xi[j] = np.random.standard_normal()
    return perm[:bn].copy(), xi


STEPS, START, REPS = 2400, 1600, 100


@pytest.mark.parametrize("mode", ["sgd", "clip", "noise", "dpsgd"])
def test_window_excess_symmetric_law_with_bulk(mode):
    """Elliptic law, C = 0.6 × median norm (clip fraction ≈ 0.8), top-4 exact + 3 bulk nodes for 8 directions."""
    z = _law("elliptic", 400, seed=2024)
    c = 0.6 * float(np.median(np.linalg.norm(z, axis=1)))
    opt = Optimizer(lr=0.5, batch_size=40, clip_norm=c, noise_multiplier=1.5, mode=mode, ref_clip_norm=c)
    basin = _basin(z, k=4, groups=3)
    avg, frac, _ = _run(z, opt, steps=STEPS, start=START, reps=REPS, seed=11)
    pred = spectral_window_excess(basin=basin, optimizer=opt, start=START, stop=STEPS)
    _agree(avg, pred.excess)
    if opt.mode.clipped:  # clip fraction of the drawn examples over the window
        _agree(frac, spectral_clip_fraction(basin=basin, optimizer=opt, closure="mean-field"))


@pytest.mark.parametrize("mode", ["sgd", "clip", "noise", "dpsgd"])
def test_window_excess_skewed_law_with_clipping_bias(mode):
    """Skewed law (clipping bias: a fixed-point shift b), all 12 directions exact, C = 0.7 × median norm.

    The linear closure is first order in ‖Hb‖/C (≈ 0.13 here, where its bias term is 0.7 % above the exact
    nonlinear fixed point, below 1 SE of the window average)."""
    z = _law("skewed", 400, seed=77)
    c = 0.7 * float(np.median(np.linalg.norm(z, axis=1)))
    opt = Optimizer(lr=0.5, batch_size=40, clip_norm=c, noise_multiplier=1.0, mode=mode, ref_clip_norm=c)
    basin = _basin(z, k=D)
    avg, _, _ = _run(z, opt, steps=STEPS, start=START, reps=REPS, seed=12)
    pred = spectral_window_excess(basin=basin, optimizer=opt, start=START, stop=STEPS)
    if opt.mode.clipped:
        assert pred.bias > 0.3 * pred.excess  # the point does test the bias term
    _agree(avg, pred.excess)


@pytest.mark.parametrize("sampling", ["poisson", "fixed"])
@pytest.mark.parametrize("mode", ["sgd", "dpsgd"])
def test_finite_population_sampling_factors(sampling, mode):
    """q = B/n = 0.25: the finite-population factors (1 − q)/B · mean c² (Poisson) and (n − B)/((n − 1)B) · Var c
    (fixed) are ~25 % below the streaming law's 1/B, which the simulation must resolve."""
    z = _law("elliptic", 160, seed=5)
    c = 0.7 * float(np.median(np.linalg.norm(z, axis=1)))
    opt = Optimizer(lr=0.5, batch_size=40, clip_norm=c, noise_multiplier=1.0, mode=mode)
    basin = _basin(z, k=D)
    avg, _, _ = _run(z, opt, steps=STEPS, start=START, reps=REPS, seed=13, sampling=sampling)
    pred = spectral_window_excess(basin=basin, optimizer=opt, start=START, stop=STEPS, sampling=sampling)
    stream = SpectralBasin(dim=D, top_eigenvalues=LAM, bulk_eigenvalues=np.zeros(0), bulk_weights=np.zeros(0),
                           gradients=basin.gradients, n_train=math.inf)  # fmt: skip
    wrong = spectral_window_excess(basin=stream, optimizer=opt, start=START, stop=STEPS, sampling=sampling)
    assert wrong.excess / pred.excess - 1 > 0.2  # finite n and a streaming law are distinguishable here
    _agree(avg, pred.excess)


@pytest.mark.parametrize("mode", ["sgd", "clip"])
def test_recovery_time_of_a_displacement_along_u4(mode):
    """δ along u_4 (λ ≈ 0.28, a top direction) added at step 400, when that direction is stationary; the
    excess is measured against a paired run with the same random stream (common random numbers),
    threshold 0.1 of ½λδ²; the SE of the crossing from 10 groups of 20 replicas."""
    z = _law("elliptic", 400, seed=31)
    c = 0.6 * float(np.median(np.linalg.norm(z, axis=1)))
    opt = Optimizer(lr=0.5, batch_size=40, clip_norm=c, mode=mode)
    basin = _basin(z, k=4, groups=3)
    j = 3
    delta = 0.1 * c / LAM[j]  # λδ = 0.1 C: the linear regime
    direction = np.zeros(D)
    direction[j] = delta
    steps, start, reps = 400 + 200, 400, 200
    _, _, moved = _run(z, opt, steps=steps, start=start, reps=reps, seed=14, disp=direction, curve=True)
    _, _, ref = _run(z, opt, steps=steps, start=start, reps=reps, seed=14, curve=True)
    target = 0.1 * 0.5 * LAM[j] * delta**2
    diffs = (moved - ref)[:, start:]
    groups = [first_crossing(g.mean(axis=0), threshold=target) for g in np.array_split(diffs, 10)]
    predicted = spectral_recovery_time(basin=basin, optimizer=opt, displacement=delta, direction=j, threshold=0.1)
    assert predicted > 5  # several steps: the interpolation between integer steps is not what is tested
    _agree(np.asarray(groups), predicted)
