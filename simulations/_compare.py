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

from dptheory._validate import check_int, check_positive


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


def log_grid(*, low: float, high: float, points: int) -> list[int]:
    """``points`` integers log-spaced from ``low`` to ``high`` inclusive (duplicates removed).

    Example:
        >>> log_grid(low=100, high=1e6, points=5)
        [100, 1000, 10000, 100000, 1000000]
    """
    lo = check_positive("low", low)
    hi = check_positive("high", high)
    p = check_int("points", points, minimum=1)
    if hi < lo:
        raise ValueError(f"high must be >= low, got low={low}, high={high}")
    if p == 1 or hi == lo:
        return [int(round(hi))]
    vals = np.rint(np.exp(np.linspace(math.log(lo), math.log(hi), p))).astype(np.int64)
    vals[0], vals[-1] = int(round(lo)), int(round(hi))
    return sorted({int(v) for v in vals})


def first_crossing(curve: Any, *, threshold: float, steps: Any | None = None) -> float:
    """First step at which ``curve`` is ≤ ``threshold`` (linear interpolation between records).

    Returns ``steps[0]`` if the curve starts below the threshold and ``inf`` if it never gets there.
    Used for recovery times measured on a mean curve (the same definition as the theory's).

    Example:
        >>> first_crossing([8.0, 4.0, 2.0, 1.0], threshold=3.0)
        1.5
    """
    y = np.asarray(curve, dtype=float)
    t = np.arange(y.size, dtype=float) if steps is None else np.asarray(steps, dtype=float)
    if y.shape != t.shape or y.ndim != 1 or y.size == 0:
        raise ValueError(f"curve and steps must be equal-length 1-D arrays, got {y.shape} and {t.shape}")
    below = np.nonzero(y <= threshold)[0]
    if below.size == 0:
        return math.inf
    j = int(below[0])
    if j == 0:
        return float(t[0])
    y0, y1 = y[j - 1], y[j]
    frac = (y0 - threshold) / (y0 - y1) if y0 != y1 else 1.0
    return float(t[j - 1] + frac * (t[j] - t[j - 1]))


def first_crossings(curves: Any, *, threshold: float, steps: Any | None = None) -> np.ndarray:
    """:func:`first_crossing` of every row of ``curves`` (n, T) at once (vectorised, same definition).

    Example:
        >>> first_crossings([[8.0, 4.0, 2.0], [1.0, 0.5, 0.2]], threshold=3.0).tolist()
        [1.5, 0.0]
    """
    y = np.atleast_2d(np.asarray(curves, dtype=float))
    t = np.arange(y.shape[1], dtype=float) if steps is None else np.asarray(steps, dtype=float)
    if y.ndim != 2 or t.shape != (y.shape[1],) or y.shape[1] == 0:
        raise ValueError(f"curves must be (n, T) with steps of length T, got {y.shape} and {t.shape}")
    below = y <= threshold
    hit = below.any(axis=1)
    j = np.argmax(below, axis=1)
    out = np.full(y.shape[0], math.inf)
    first = hit & (j == 0)
    out[first] = t[0]
    mid = hit & (j > 0)
    rows = np.nonzero(mid)[0]
    jj = j[mid]
    y0, y1 = y[rows, jj - 1], y[rows, jj]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(y0 != y1, (y0 - threshold) / (y0 - y1), 1.0)
    out[mid] = t[jj - 1] + frac * (t[jj] - t[jj - 1])
    return out


def fmt(value: float, digits: int = 4) -> str:
    """Compact number formatting for tables (``inf``/``nan`` spelled out)."""
    v = float(value)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}"


def fmt_ci(est: Estimate, *, k: float) -> str:
    """``mean ± k·SE`` as text."""
    return f"{fmt(est.mean)} ± {fmt(k * est.se, 2)}"


def table(rows: Sequence[Sequence[Any]], *, header: Sequence[str]) -> str:
    """A plain fixed-width text table (strings are left as they are, numbers via :func:`fmt`)."""
    cells = [[str(h) for h in header]]
    for row in rows:
        cells.append([c if isinstance(c, str) else fmt(c) for c in row])
    widths = [max(len(r[j]) for r in cells) for j in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_seed(base: int, *key: int) -> int:
    """An independent integer seed for one run, derived from the base seed and the run's key.

    ``SeedSequence(base, spawn_key=key)``: distinct keys give independent streams, the same
    (base, key) the same seed, so every (dimension, mode, …) cell of a sweep is reproducible alone.

    >>> run_seed(0, 1, 2) == run_seed(0, 1, 2) != run_seed(0, 2, 1)
    True
    """
    return int(np.random.SeedSequence(base, spawn_key=tuple(key)).generate_state(1)[0])
