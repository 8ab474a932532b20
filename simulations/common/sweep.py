"""Sweep grids and per-run seeds: which runs a sweep holds and the seed each one gets."""

from __future__ import annotations

import math

import numpy as np

from dptheory.validate import check_int, check_positive

__all__ = ["log_grid", "run_seed"]


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
        return [round(hi)]
    vals = np.rint(np.exp(np.linspace(math.log(lo), math.log(hi), p))).astype(np.int64)
    vals[0], vals[-1] = round(lo), round(hi)
    return sorted({int(v) for v in vals})


def run_seed(base: int, *key: int) -> int:
    """An independent integer seed for one run, derived from the base seed and the run's key.

    ``SeedSequence(base, spawn_key=key)``: distinct keys give independent streams, the same
    (base, key) the same seed, so every (dimension, mode, …) cell of a sweep is reproducible alone.

    >>> run_seed(0, 1, 2) == run_seed(0, 1, 2) != run_seed(0, 2, 1)
    True
    """
    return int(np.random.SeedSequence(base, spawn_key=tuple(key)).generate_state(1)[0])
