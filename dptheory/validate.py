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
    except (TypeError, ValueError, OverflowError):
        return False


def _check_maximum(name: str, v: float, value: Any, maximum: float | None) -> float:
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be <= {maximum:g}, got {value!r}")
    return v


def check_finite(name: str, value: Any) -> float:
    """Return ``float(value)``; raise ``ValueError`` if it is not a finite real number."""
    if isinstance(value, bool) or not _is_finite_number(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_positive(name: str, value: Any, *, maximum: float | None = None) -> float:
    """Return ``float(value)`` if finite, > 0 and (if given) <= ``maximum``, else raise ``ValueError``."""
    v = check_finite(name, value)
    if not v > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return _check_maximum(name, v, value, maximum)


def check_nonnegative(name: str, value: Any, *, maximum: float | None = None) -> float:
    """Return ``float(value)`` if finite, >= 0 and (if given) <= ``maximum``, else raise ``ValueError``."""
    v = check_finite(name, value)
    if not v >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return _check_maximum(name, v, value, maximum)


def check_positive_or_inf(name: str, value: Any, *, maximum: float | None = None) -> float:
    """Return ``float(value)`` if > 0 (``inf`` allowed, meaning 'no limit'; finite values <= ``maximum``)."""
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} must be > 0 (inf allowed), got {value!r}") from None
    if isinstance(value, bool) or math.isnan(v) or not v > 0:
        raise ValueError(f"{name} must be > 0 (inf allowed), got {value!r}")
    if math.isfinite(v) and maximum is not None and v > maximum:
        raise ValueError(f"{name} must be <= {maximum:g} or inf, got {value!r}")
    return v


def check_scale(name: str, value: Any, *, low: float = 1e-30, high: float = 1e30, zero: bool = False) -> float:
    """Return ``float(value)`` if ``low <= value <= high`` (or ``value == 0`` when ``zero``), else raise.

    For physical scales (a spread, a clip norm, a learning rate, a curvature) whose squares and
    products enter the model: outside ``[low, high]`` (default 10⁻³⁰ … 10³⁰) they overflow or
    underflow float64 (or float32 in a network) long before they mean anything, so they are refused
    with the argument named instead of surfacing as an ``OverflowError`` or a silent NaN.

    >>> check_scale("lr", 0.5)
    0.5
    >>> check_scale("sample_std", 1e300)
    Traceback (most recent call last):
    ...
    ValueError: sample_std must be between 1e-30 and 1e+30 (larger or smaller values overflow the model), got 1e+300
    """
    v = check_finite(name, value)
    if zero and v == 0:
        return 0.0
    if v <= 0:
        raise ValueError(f"{name} must be {'>= 0' if zero else '> 0'}, got {value!r}")
    if not low <= v <= high:
        where = f"0 or between {low:g} and {high:g}" if zero else f"between {low:g} and {high:g}"
        raise ValueError(f"{name} must be {where} (larger or smaller values overflow the model), got {value!r}")
    return v


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``int(value)`` if ``value`` is an integer (``1e6`` as a float is accepted) in [minimum, maximum]."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        f = float(value)
    except OverflowError:  # an integer beyond float range
        raise ValueError(f"{name} must be a moderate integer, got {_shown(value)}") from None
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if not math.isfinite(f) or f != int(f):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    v = int(f) if not isinstance(value, (int, np.integer)) else int(value)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {_shown(value)}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {_shown(value)}")
    return v


def _shown(value: Any) -> str:
    """``repr(value)``, but a huge integer as ``1e+300`` (its 301 digits would not fit one line)."""
    if isinstance(value, (int, np.integer)) and abs(int(value)) >= 10**16:
        return (
            f"{float(value):.3g}" if abs(int(value)) < 10**308 else f"an integer of {len(str(abs(int(value))))} digits"
        )
    return repr(value)


def check_choice(name: str, value: Any, allowed: Any) -> Any:
    """Return ``value`` if it is one of ``allowed`` (compared exactly: case matters), else raise.

    >>> check_choice("engine", "full", ("auto", "full"))
    'full'
    """
    options = tuple(allowed)
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(str, options))}, got {value!r}")
    return value


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
