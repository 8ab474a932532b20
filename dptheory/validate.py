"""Argument checks shared by every public function: one clear ``ValueError`` naming the value.

Validate at the boundary and show the value. A CLI turns these errors into one
line on stderr and exit status 2.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _is_finite_number(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def check_finite(name: str, value: Any) -> float:
    """Return ``float(value)``; raise ``ValueError`` if it is not a finite real number."""
    if isinstance(value, bool) or not _is_finite_number(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_positive(name: str, value: Any) -> float:
    """Return ``float(value)`` if finite and > 0, else raise ``ValueError``."""
    v = check_finite(name, value)
    if not v > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return v


def check_nonnegative(name: str, value: Any) -> float:
    """Return ``float(value)`` if finite and >= 0, else raise ``ValueError``."""
    v = check_finite(name, value)
    if not v >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return v


def check_positive_or_inf(name: str, value: Any) -> float:
    """Return ``float(value)`` if > 0 (``inf`` allowed, meaning 'no limit'), else raise."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be > 0 (inf allowed), got {value!r}") from None
    if isinstance(value, bool) or math.isnan(v) or not v > 0:
        raise ValueError(f"{name} must be > 0 (inf allowed), got {value!r}")
    return v


def check_int(name: str, value: Any, *, minimum: int | None = None) -> int:
    """Return ``int(value)`` if ``value`` is an integer (``1e6`` as a float is accepted) >= minimum."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if not math.isfinite(f) or f != int(f):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    v = int(f) if not isinstance(value, (int, np.integer)) else int(value)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return v


def check_probability(name: str, value: Any, *, open_left: bool = False) -> float:
    """Return ``float(value)`` if in [0, 1] (or (0, 1] with ``open_left``)."""
    v = check_finite(name, value)
    if v > 1 or v < 0 or (open_left and v == 0):
        interval = "(0, 1]" if open_left else "[0, 1]"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return v


def check_array_positive(name: str, values: Any) -> np.ndarray:
    """Return a 1-D float array of finite, strictly positive values (non-empty)."""
    arr = np.atleast_1d(np.asarray(values, dtype=float))
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        bad = arr[~(np.isfinite(arr) & (arr > 0))][:3]
        raise ValueError(f"{name} must be finite and > 0, got e.g. {bad.tolist()}")
    return arr
