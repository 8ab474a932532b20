"""Prediction against measurement over many rows: agreement shares, a log–log fit, null predictors.

Pure functions of arrays (no simulation, no I/O). One *row* is one measured quantity with its
prediction: the measured value is a mean over seeds (or batch means) with its standard error, so
rows are the units of every fit here — seeds are never treated as independent points.

* :func:`within_share` — the share of rows with |p − m| ≤ ``tolerance`` · |m| (relative agreement).
* :func:`within_se_share` — the share with |p − m| ≤ k · SE(m) (agreement to the statistics).
* :func:`loglog_fit` — ordinary least squares of log₁₀ m on log₁₀ p over rows where both are > 0,
  with two-sided (1 − α) confidence intervals for slope and intercept from Student's t with
  n − 2 degrees of freedom (rows as independent units); identity is slope 1, intercept 0.
* :func:`scaled_null` — the null predictor p₀ = c · s (s = d or √d, say) with the one constant c
  fitted to the rows in log space, log c = mean(log m − log s) over rows with m > 0 (the best
  constant for the log error, an advantage the model does not get).
* :func:`rms_log_error` — √mean (log₁₀ m − log₁₀ p)² over rows where both are > 0.

Example:
    >>> p = np.array([1.0, 2.0, 4.0, 8.0])
    >>> m = 1.1 * p
    >>> round(within_share(p, m, tolerance=0.25), 3), round(loglog_fit(p, m)["slope"], 6)
    (1.0, 1.0)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dptheory.validate import check_positive

__all__ = ["agreement", "loglog_fit", "rms_log_error", "scaled_null", "within_se_share", "within_share"]


def _pair(predicted: Any, measured: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(predicted, dtype=float).ravel()
    m = np.asarray(measured, dtype=float).ravel()
    if p.shape != m.shape:
        raise ValueError(f"predicted and measured must have the same length, got {p.size} and {m.size}")
    return p, m


def within_share(predicted: Any, measured: Any, *, tolerance: float = 0.25) -> float:
    """Share of rows (finite pairs) with |p − m| ≤ ``tolerance`` · |m|; nan if there is none."""
    check_positive("tolerance", tolerance)
    p, m = _pair(predicted, measured)
    ok = np.isfinite(p) & np.isfinite(m)
    if not ok.any():
        return math.nan
    return float(np.mean(np.abs(p[ok] - m[ok]) <= tolerance * np.abs(m[ok])))


def within_se_share(predicted: Any, measured: Any, se: Any, *, k: float = 2.0) -> float:
    """Share of rows (finite triples) with |p − m| ≤ k · SE; nan if there is none."""
    check_positive("k", k)
    p, m = _pair(predicted, measured)
    s = np.asarray(se, dtype=float).ravel()
    ok = np.isfinite(p) & np.isfinite(m) & np.isfinite(s)
    if not ok.any():
        return math.nan
    return float(np.mean(np.abs(p[ok] - m[ok]) <= k * s[ok]))


def loglog_fit(predicted: Any, measured: Any, *, level: float = 0.95) -> dict[str, Any]:
    """OLS of log₁₀ m = a + b log₁₀ p over rows with p, m > 0 (module docstring).

    Returns ``slope`` b, ``intercept`` a, their ``slope_ci`` / ``intercept_ci`` (level ``level``),
    ``n`` rows used and ``excluded`` (finite rows dropped because p ≤ 0 or m ≤ 0). Fewer than 3 rows,
    or no spread in log p, give nan estimates.

    Example:
        >>> fit = loglog_fit([1.0, 10.0, 100.0], [2.0, 20.0, 200.0])
        >>> round(fit["slope"], 9), round(fit["intercept"], 5), fit["n"]
        (1.0, 0.30103, 3)
    """
    from scipy.special import stdtrit

    p, m = _pair(predicted, measured)
    finite = np.isfinite(p) & np.isfinite(m)
    ok = finite & (p > 0) & (m > 0)
    n = int(ok.sum())
    out: dict[str, Any] = {"n": n, "excluded": int(finite.sum() - n), "level": level}
    x, y = np.log10(p[ok]), np.log10(m[ok])
    if n < 3 or np.ptp(x) == 0:
        nan = math.nan
        out.update(slope=nan, intercept=nan, slope_ci=[nan, nan], intercept_ci=[nan, nan], residual_sd=nan)
        return out
    xm = x.mean()
    sxx = float(np.sum((x - xm) ** 2))
    b = float(np.sum((x - xm) * (y - y.mean())) / sxx)
    a = float(y.mean() - b * xm)
    resid = y - a - b * x
    s2 = float(np.sum(resid**2) / (n - 2))
    se_b = math.sqrt(s2 / sxx)
    se_a = math.sqrt(s2 * (1.0 / n + xm**2 / sxx))
    t = float(stdtrit(n - 2, 0.5 + level / 2))
    out.update(
        slope=b,
        intercept=a,
        slope_ci=[b - t * se_b, b + t * se_b],
        intercept_ci=[a - t * se_a, a + t * se_a],
        residual_sd=math.sqrt(s2),
    )
    return out


def scaled_null(scale: Any, measured: Any) -> np.ndarray:
    """c · s with log c = mean over rows with m > 0 and s > 0 of (log m − log s) (module docstring)."""
    s, m = _pair(scale, measured)
    ok = np.isfinite(s) & np.isfinite(m) & (s > 0) & (m > 0)
    if not ok.any():
        return np.full(s.shape, math.nan)
    c = 10.0 ** float(np.mean(np.log10(m[ok]) - np.log10(s[ok])))
    return c * s


def rms_log_error(predicted: Any, measured: Any) -> float:
    """√mean (log₁₀ m − log₁₀ p)² over rows with p, m > 0; nan if there is none."""
    p, m = _pair(predicted, measured)
    ok = np.isfinite(p) & np.isfinite(m) & (p > 0) & (m > 0)
    if not ok.any():
        return math.nan
    return float(np.sqrt(np.mean((np.log10(m[ok]) - np.log10(p[ok])) ** 2)))


def agreement(predicted: Any, measured: Any, se: Any, *, tolerance: float = 0.25, k: float = 2.0) -> dict[str, Any]:
    """The summary of one predictor: shares within ``tolerance`` and within k SE, log–log fit, RMS log error.

    Example:
        >>> s = agreement([1.0, 2.0, 4.0], [1.0, 2.2, 3.0], [0.1, 0.1, 0.1])
        >>> s["within_tolerance"], round(s["within_k_se"], 3), s["rows"]
        (0.6666666666666666, 0.333, 3)
    """
    p, m = _pair(predicted, measured)
    return {
        "rows": int(p.size),
        "within_tolerance": within_share(p, m, tolerance=tolerance),
        "tolerance": tolerance,
        "within_k_se": within_se_share(p, m, se, k=k),
        "k_se": k,
        "loglog": loglog_fit(p, m),
        "rms_log10_error": rms_log_error(p, m),
    }
