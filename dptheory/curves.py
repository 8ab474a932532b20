"""Crossing times of loss curves: the one definition of a recovery time shared by theory and simulation.

A recovery time is the first step at which an excess-loss curve falls to a threshold, linearly
interpolated between recorded steps (so a curve sampled every step and its continuous-time limit give
the same answer to within one step). Theory (``dptheory.clipped_recovery.displacement_recovery``)
and Monte Carlo (``simulations``) both call these functions, so the two numbers they compare are
defined identically.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["first_crossing", "first_crossings"]


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
