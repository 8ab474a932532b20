"""Theory beside simulation: standard errors from batch means, agreement scores and plain tables.

Shared by the command lines ``simulations.basin_dim``, ``recovery``, ``switch`` and ``prune``.
Nothing here simulates or plots; every function is a pure function of arrays.

Standard errors (the statistics every printed ``± k SE`` rests on)
------------------------------------------------------------------
A stationary Monte Carlo trace ``x[r, t]`` (replica r, recorded step t) is autocorrelated in t but
the R replicas are independent. :func:`batch_means` cuts every replica's window into ``n_batches``
contiguous batches, takes each batch's mean and treats the R·b batch means as independent:

    x̄ = mean of all batch means,   SE = sd(batch means) / √(R b).

This is the classical non-overlapping batch-means estimator (Flegal & Jones 2010, Ann. Statist. 38,
"Batch means and spectral variance estimators in MCMC"); it is consistent when each batch is much
longer than the integrated autocorrelation time τ_int. If batches are too short the SE is
**underestimated** (consecutive batch means are positively correlated), so callers choose the batch
length from the predicted relaxation time (a batch ≥ 5 relaxation times of the second moment keeps
the lag-1 correlation of batch means below ≈ 0.1). With ``n_batches=1`` the estimator is the exact
across-replica SE of the per-replica time averages (no autocorrelation assumption at all).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dptheory.validate import check_int, check_positive


@dataclass(frozen=True)
class Estimate:
    """A Monte Carlo estimate: mean, standard error and the number of (assumed independent) samples."""

    mean: float
    se: float
    n: int

    def z(self, predicted: float) -> float:
        """(mean − predicted) / SE; ±inf when SE = 0 and they differ, 0 when equal."""
        return z_score(predicted=predicted, mean=self.mean, se=self.se)

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "se": self.se, "n": self.n}


def batch_means(values: Any, *, n_batches: int = 1) -> Estimate:
    """Mean and batch-means standard error of a stationary trace ``values[replica, record]``.

    SE = sd(batch means, ddof=1) / √(R·b) with b = ``n_batches`` contiguous batches per replica
    (a trailing remainder shorter than a batch is dropped). See the module docstring for when it is
    valid and which way it errs (too-short batches underestimate the SE).

    Example:
        >>> x = np.array([[1.0, 1.0, 3.0, 3.0], [2.0, 2.0, 2.0, 2.0]])
        >>> e = batch_means(x, n_batches=2)
        >>> round(e.mean, 6), round(e.se, 6), e.n
        (2.0, 0.408248, 4)
    """
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"values must be a non-empty (replicas, records) array, got shape {arr.shape}")
    b = check_int("n_batches", n_batches, minimum=1)
    reps, length = arr.shape
    if length < b:
        raise ValueError(f"n_batches must be <= the number of records ({length}), got {n_batches}")
    size = length // b
    means = arr[:, : size * b].reshape(reps, b, size).mean(axis=2).ravel()
    n = means.size
    se = float(np.std(means, ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return Estimate(mean=float(means.mean()), se=se, n=n)


def replica_mean(values: Any) -> Estimate:
    """Mean over independent replicas of one scalar each (``values`` of shape (R,)), SE = sd/√R."""
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size == 0:
        raise ValueError("values must be non-empty")
    se = float(np.std(arr, ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else math.nan
    return Estimate(mean=float(arr.mean()), se=se, n=int(arr.size))


def curve_mean(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise mean and SE over replicas of curves ``values[replica, record]``."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 2 or arr.shape[0] < 1:
        raise ValueError(f"values must be a (replicas, records) array, got shape {arr.shape}")
    mean = arr.mean(axis=0)
    se = arr.std(axis=0, ddof=1) / math.sqrt(arr.shape[0]) if arr.shape[0] > 1 else np.full_like(mean, np.nan)
    return mean, se


def z_score(*, predicted: float, mean: float, se: float) -> float:
    """(mean − predicted)/SE with the conventions SE = 0 → 0 if equal else ±inf; NaN propagates."""
    diff = float(mean) - float(predicted)
    if math.isnan(diff) or math.isnan(se):
        return math.nan
    if se == 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / float(se)


def agrees(*, predicted: float, estimate: Estimate, k: float, rel_margin: float = 0.0) -> bool:
    """True if |mean − predicted| ≤ k·SE + rel_margin·|predicted| (a stated model-accuracy margin)."""
    check_positive("k", k)
    if not (math.isfinite(predicted) and math.isfinite(estimate.mean)):
        return False
    return abs(estimate.mean - predicted) <= k * estimate.se + rel_margin * abs(predicted)


# ---------------------------------------------------------------------------------------------
# seed-level statistics of the network experiments (one value per seed; runs with the same seed paired)


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """(mean, standard error) of the finite entries of ``values``; SE = sample sd / √n, nan for n < 2.

    Example:
        >>> mean_se([1.0, 2.0, 3.0])
        (2.0, 0.5773502691896258)
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan
    se = float(np.std(x, ddof=1) / math.sqrt(x.size)) if x.size > 1 else math.nan
    return float(np.mean(x)), se


def summary(values: Sequence[float]) -> dict[str, float]:
    """{"mean", "se", "n"} of ``values`` (finite entries only)."""
    m, se = mean_se(values)
    return {"mean": m, "se": se, "n": int(np.sum(np.isfinite(np.asarray(values, dtype=float))))}


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Summary of the per-seed differences a − b (paired by seed)."""
    return summary(np.asarray(a, dtype=float) - np.asarray(b, dtype=float))


def spearman(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Spearman rank correlation ρ and its two-sided p-value (scipy), on the finite pairs."""
    from scipy.stats import spearmanr

    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(xs) & np.isfinite(ys)
    if ok.sum() < 3 or np.ptp(xs[ok]) == 0 or np.ptp(ys[ok]) == 0:
        return {"rho": math.nan, "p_value": math.nan, "n": int(ok.sum())}
    res = spearmanr(xs[ok], ys[ok])
    return {"rho": float(res.statistic), "p_value": float(res.pvalue), "n": int(ok.sum())}


def simulated_recovery(
    *, loss: np.ndarray, stationary: float, initial: float, threshold: float, n_boot: int = 200, seed: int = 0
) -> dict[str, Any]:
    """Recovery time of replica curves ``loss[replica, t]`` (t = 1, 2, … steps after the displacement).

    The mean excess curve is ``mean_r loss[r, t] − stationary`` with the value ``initial`` at t = 0;
    the SE of the crossing time is a bootstrap over replicas (``n_boot`` resamples, ``seed``).
    """
    loss = np.asarray(loss, dtype=float)
    t = np.arange(loss.shape[1] + 1, dtype=float)
    reps = loss.shape[0]
    rng = np.random.default_rng(seed)
    # Row 0: the replicas themselves; rows 1…n_boot: bootstrap resamples of the replicas (counts).
    counts = np.vstack([np.ones(reps), rng.multinomial(reps, np.full(reps, 1.0 / reps), size=n_boot)])
    means = counts @ loss / reps
    excess = np.hstack([np.full((means.shape[0], 1), initial), means - stationary])
    from dptheory.curves import first_crossings

    times = first_crossings(excess, threshold=threshold * initial, steps=t)
    time, boots = float(times[0]), times[1:]
    se = float(np.std(boots, ddof=1)) if np.all(np.isfinite(boots)) else math.inf
    mean_excess = loss.mean(axis=0) - stationary
    se_excess = loss.std(axis=0, ddof=1) / math.sqrt(reps)
    return {"time": time, "time_se": se, "excess": mean_excess, "excess_se": se_excess}
