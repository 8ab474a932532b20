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


# ---------------------------------------------------------------------------------------------
# tests of the network claims: paired t with CIs, Holm, bootstrap, per-seed slopes, verdict records

ALTERNATIVES = ("two-sided", "greater", "less")


def paired_t(
    a: Sequence[float], b: Sequence[float] | None = None, *, alternative: str = "two-sided", confidence: float = 0.95
) -> dict[str, Any]:
    """Paired (one-sample) t-test of the per-seed differences d_i = a_i − b_i (b omitted: d_i = a_i).

    t = d̄ / (s_d/√n) with s_d the sample sd (n − 1 degrees of freedom), df = n − 1; the p-value is
    that of ``alternative`` (H₁: E d > 0 for "greater", < 0 for "less", ≠ 0 for "two-sided") under
    Student's t (Student 1908; e.g. Casella & Berger 2002 §8.3); the CI is always the two-sided
    ``confidence`` interval d̄ ± t_{(1+c)/2, n−1} s_d/√n. Pairs with a non-finite entry are dropped.
    With n < 2 every statistic is nan; with s_d = 0 the p-value is 0 (d̄ ≠ 0 in H₁'s direction),
    1 otherwise, and the CI is the point d̄.

    Returns ``{"estimate", "se", "ci95": [lo, hi], "t", "df", "p_value", "n", "alternative"}``.

    Example:
        >>> r = paired_t([1.0, 2.0, 3.0, 4.0], [0.0, 0.5, 1.0, 2.0], alternative="greater")
        >>> round(r["estimate"], 4), r["df"], round(r["p_value"], 4)
        (1.625, 3, 0.0033)
    """
    from scipy import stats as st

    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {', '.join(ALTERNATIVES)}, got {alternative!r}")
    if not 0 < float(confidence) < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    x = np.asarray(a, dtype=float)
    if b is not None:
        y = np.asarray(b, dtype=float)
        if x.shape != y.shape:
            raise ValueError(f"a and b must pair up (same length), got {x.shape} and {y.shape}")
        x = x - y
    x = x[np.isfinite(x)]
    n = int(x.size)
    out: dict[str, Any] = {"n": n, "alternative": alternative, "df": max(n - 1, 0)}
    if n < 2:
        return out | {
            "estimate": float(x.mean()) if n else math.nan,
            "se": math.nan,
            "ci95": [math.nan, math.nan],
            "t": math.nan,
            "p_value": math.nan,
        }
    mean = float(x.mean())
    se = float(x.std(ddof=1) / math.sqrt(n))
    q = float(st.t.ppf(0.5 + float(confidence) / 2, n - 1))
    if se == 0:
        towards = {"two-sided": mean != 0, "greater": mean > 0, "less": mean < 0}[alternative]
        t = math.copysign(math.inf, mean) if mean != 0 else math.nan
        return out | {"estimate": mean, "se": 0.0, "ci95": [mean, mean], "t": t, "p_value": 0.0 if towards else 1.0}
    t = mean / se
    if alternative == "two-sided":
        p = 2 * float(st.t.sf(abs(t), n - 1))
    elif alternative == "greater":
        p = float(st.t.sf(t, n - 1))
    else:
        p = float(st.t.cdf(t, n - 1))
    return out | {"estimate": mean, "se": se, "ci95": [mean - q * se, mean + q * se], "t": t, "p_value": min(p, 1.0)}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979, Scand. J. Statist. 6): family-wise error control.

    With the m finite p-values sorted p_(1) ≤ … ≤ p_(m): p̃_(k) = max_{j≤k} min(1, (m − j + 1) p_(j)).
    A hypothesis is rejected at level α iff its adjusted p-value is ≤ α. Non-finite entries stay nan
    and do not count in m.

    Example:
        >>> holm([0.01, 0.04, 0.03])
        [0.03, 0.06, 0.06]
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    running = 0.0
    for rank, idx in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        out[idx] = running
    return [float(round(v, 15)) for v in out]


def bootstrap_ci(
    data: Any, statistic: Any, *, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict[str, Any]:
    """Percentile bootstrap over the rows of ``data`` (seeds): ``statistic(rows)`` on resampled rows.

    Rows are resampled with replacement ``n_boot`` times from a seeded generator; the interval is the
    (1 ± c)/2 quantiles of the finite replicate values (Efron & Tibshirani 1993, ch. 13). Returns
    ``{"estimate": statistic(data), "ci95": [lo, hi], "n_boot", "n_finite", "n"}``; a replicate
    that fails to give a finite value counts in ``n_boot`` but not in ``n_finite``.

    Example:
        >>> r = bootstrap_ci(np.arange(10.0), np.mean, n_boot=500, seed=1)
        >>> r["estimate"], r["ci95"][0] < 4.5 < r["ci95"][1]
        (4.5, True)
    """
    arr = np.asarray(data, dtype=float)
    if arr.ndim == 0 or arr.shape[0] < 1:
        raise ValueError(f"data must have at least one row, got shape {arr.shape}")
    n_boot = check_int("n_boot", n_boot, minimum=1)
    rng = np.random.default_rng(seed)
    est = float(statistic(arr))
    reps = []
    for _ in range(n_boot):
        idx = rng.integers(0, arr.shape[0], size=arr.shape[0])
        with np.errstate(all="ignore"):
            try:
                reps.append(float(statistic(arr[idx])))
            except (ValueError, FloatingPointError, RuntimeError):
                reps.append(math.nan)
    vals = np.asarray(reps)
    vals = vals[np.isfinite(vals)]
    lo, hi = np.quantile(vals, [0.5 - confidence / 2, 0.5 + confidence / 2]) if vals.size else (math.nan, math.nan)
    return {
        "estimate": est,
        "ci95": [float(lo), float(hi)],
        "n_boot": n_boot,
        "n_finite": int(vals.size),
        "n": int(arr.shape[0]),
    }


def per_seed_slopes(x: Sequence[float], y: Any) -> np.ndarray:
    """Least-squares slope of y[seed, :] on x for each seed (a trend tested on per-seed slopes).

    Points with a non-finite y are dropped per seed; a seed with fewer than two points gives nan.

    Example:
        >>> per_seed_slopes([0.0, 1.0, 2.0], [[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]]).tolist()
        [1.0, 0.0]
    """
    xv = np.asarray(x, dtype=float)
    ys = np.atleast_2d(np.asarray(y, dtype=float))
    if ys.shape[1] != xv.size:
        raise ValueError(f"y must have one column per x value ({xv.size}), got shape {ys.shape}")
    out = []
    for row in ys:
        ok = np.isfinite(row) & np.isfinite(xv)
        if ok.sum() < 2 or np.ptp(xv[ok]) == 0:
            out.append(math.nan)
            continue
        xc = xv[ok] - xv[ok].mean()
        out.append(float((xc * (row[ok] - row[ok].mean())).sum() / (xc * xc).sum()))
    return np.asarray(out)


def verdict(
    *,
    claim: str,
    statement: str,
    test: dict[str, Any],
    held_if: str,
    alpha: float = 0.05,
    p_adjusted: float | None = None,
    unit: str = "",
    scale: float = 1.0,
    task: str = "",
    key: str = "",
) -> dict[str, Any]:
    """A verdict record computed from a test result (never typed): the claim, what was tested, the
    estimate with its 95 % CI, the p-value (Holm-adjusted within the claim when ``p_adjusted`` is
    given) and ``held``.

    ``test`` is a :func:`paired_t` result; ``held_if`` is the tested direction: "greater" (held iff
    the adjusted p ≤ α and the estimate > 0), "less" (p ≤ α and estimate < 0). ``unit``/``scale``
    tell a renderer how to print the estimate (e.g. "points", 100 for accuracy fractions).

    Example:
        >>> v = verdict(claim="2", statement="noise-only beats clip-only",
        ...             test=paired_t([0.1, 0.2, 0.15], alternative="greater"), held_if="greater")
        >>> v["held"], v["n_seeds"], v["test"]
        (True, 3, 'paired t (one-sided, greater), df = 2')
    """
    if held_if not in ("greater", "less"):
        raise ValueError(f"held_if must be 'greater' or 'less', got {held_if!r}")
    p_raw = test.get("p_value", math.nan)
    p = p_raw if p_adjusted is None else p_adjusted
    est = test.get("estimate", math.nan)
    direction_ok = (est > 0) if held_if == "greater" else (est < 0)
    held = bool(math.isfinite(p) and p <= alpha and direction_ok)
    side = "two-sided" if test.get("alternative") == "two-sided" else f"one-sided, {test.get('alternative')}"
    return {
        "claim": claim,
        "statement": statement,
        "task": task,
        "key": key,
        "test": f"paired t ({side}), df = {test.get('df')}",
        "estimate": est,
        "ci95": list(test.get("ci95", [math.nan, math.nan])),
        "p_value": p,
        "p_unadjusted": p_raw,
        "adjustment": "holm" if p_adjusted is not None else "none",
        "alpha": alpha,
        "n_seeds": int(test.get("n", 0)),
        "held": held,
        "direction": held_if,
        "unit": unit,
        "scale": scale,
    }


def claim_family(specs: list[dict[str, Any]], *, alpha: float = 0.05) -> list[dict[str, Any]]:
    """Verdicts of one claim's family of tests, Holm-adjusted within the family.

    Each spec holds the keyword arguments of :func:`verdict` except ``p_adjusted`` and ``alpha``;
    the adjusted p-values are :func:`holm` of the specs' raw p-values, in order.
    """
    adjusted = holm([s["test"].get("p_value", math.nan) for s in specs])
    return [verdict(**s, alpha=alpha, p_adjusted=p) for s, p in zip(specs, adjusted)]


def interval_verdict(
    *,
    claim: str,
    statement: str,
    estimate: float,
    ci95: Sequence[float],
    n_seeds: int,
    threshold: float,
    test: str,
    unit: str = "",
    scale: float = 1.0,
    task: str = "",
    key: str = "",
) -> dict[str, Any]:
    """A verdict decided by a confidence interval: ``held`` iff the whole 95 % CI lies below ``threshold``.

    For claims of the form "x ≪ y" stated as "x/y < threshold" (e.g. a bootstrap CI of a fitted time
    scale over the run length). Same keys as :func:`verdict`; ``p_value`` is nan (no test statistic).

    Example:
        >>> interval_verdict(claim="1", statement="tau << E", estimate=0.1, ci95=[0.05, 0.2], n_seeds=5,
        ...                  threshold=0.25, test="bootstrap")["held"]
        True
    """
    lo, hi = (float(ci95[0]), float(ci95[1]))
    held = bool(math.isfinite(hi) and hi < threshold)
    return {
        "claim": claim,
        "statement": statement,
        "task": task,
        "key": key,
        "test": test,
        "estimate": float(estimate),
        "ci95": [lo, hi],
        "p_value": math.nan,
        "p_unadjusted": math.nan,
        "adjustment": "none (decided by the interval)",
        "alpha": 0.05,
        "n_seeds": int(n_seeds),
        "held": held,
        "direction": f"ci95 below {threshold:g}",
        "unit": unit,
        "scale": scale,
    }
